"""The daemons of the local cluster: start each one and wait until it serves, stop it by pid.

Each daemon runs in the foreground of its own session (so its pid is the one recorded) with its
output in log/NAME.out. A record is {"pid", "ticks", "argv"}: `ticks` is the kernel's start time
of the process, so a pid the kernel gave to another process since is never signalled.
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from synthscale.errors import SynthscaleError
from synthscale.local_cluster.config import ClusterPaths, environment

ORDER = ("munged", "mysqld", "slurmdbd", "slurmctld", "slurmd")  # start order; stop is the reverse
LIVE_STATES = ("idle", "mixed", "allocated", "completing")


# --- processes -------------------------------------------------------------------------------------
def start_ticks(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def alive(record: dict) -> bool:
    return start_ticks(record["pid"]) == record["ticks"]


def _spawn(paths: ClusterPaths, name: str, argv: list[str]) -> dict:
    """Start a daemon in the foreground of its own session, its output in log/NAME.out."""
    env = {**os.environ, **environment(paths)}
    with open(paths.log / f"{name}.out", "ab") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, env=env, cwd=paths.root)
    _CHILDREN[process.pid] = process
    ticks = start_ticks(process.pid)
    if ticks is None:
        raise SynthscaleError(f"{name} exited at once: see {paths.log / (name + '.out')}")
    return {"pid": process.pid, "ticks": ticks, "argv": argv}


_CHILDREN: dict[int, subprocess.Popen] = {}  # daemons this process started (reaped when stopped)


def stop(name: str, record: dict, timeout: float = 20.0) -> None:
    """SIGTERM the recorded process (if it is still the one we started), SIGKILL after `timeout`."""
    if not alive(record):
        return
    os.kill(record["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child = _CHILDREN.get(record["pid"])
        if child is not None and child.poll() is not None or not alive(record):
            return
        time.sleep(0.1)
    print(f"{name} (pid {record['pid']}) still running {timeout:.0f} s after SIGTERM: SIGKILL", file=sys.stderr)
    os.kill(record["pid"], signal.SIGKILL)


def _wait(what: str, ready, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.is_file() else ""
            raise SynthscaleError(f"{what} not ready after {timeout:.0f} s; the end of {log}:\n{tail}")
        time.sleep(0.2)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def client(paths: ClusterPaths, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **environment(paths)})


# --- the daemons -----------------------------------------------------------------------------------
def _port_owner(port: int) -> str:
    """Who listens on `port` (ss's process column), for an error message."""
    listed = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True) \
        if shutil.which("ss") else None
    return listed.stdout.strip() if listed and listed.stdout.strip() else "another process"


def _init_mariadb(paths: ClusterPaths) -> None:
    if (paths.mysql_data / "mysql").is_dir():
        return
    argv = ["mariadb-install-db", "--no-defaults", f"--datadir={paths.mysql_data}", "--skip-test-db",
            "--auth-root-authentication-method=socket"]
    argv += ["--user=root"] if os.geteuid() == 0 else []
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SynthscaleError(f"mariadb-install-db failed: {done.stderr.strip()[-500:]}")


def _grant_slurmdbd(paths: ClusterPaths, settings: dict) -> None:
    """The database account slurmdbd logs in with (from 127.0.0.1 only)."""
    user, password = "'slurm'@'127.0.0.1'", settings["db_password"]
    sql = (f"CREATE USER IF NOT EXISTS {user} IDENTIFIED BY '{password}'; ALTER USER {user} IDENTIFIED BY "
           f"'{password}'; GRANT ALL ON slurm_acct_db.* TO {user};")
    done = subprocess.run(["mariadb", "--no-defaults", f"--socket={paths.mysql_socket}", "-u",
                           "root" if os.geteuid() == 0 else getpass.getuser(), "-e", sql], capture_output=True, text=True)
    if done.returncode != 0:
        raise SynthscaleError(f"could not create the slurmdbd database account: {done.stderr.strip()}")


def node_state(paths: ClusterPaths) -> str:
    listed = client(paths, "sinfo", "--noheader", "--format=%T")
    return listed.stdout.strip().rstrip("*~#") if listed.returncode == 0 else ""


def start(paths: ClusterPaths, name: str, settings: dict) -> dict:
    """Start one daemon and wait until it serves."""
    run, log = paths.root / "run", paths.log
    port = settings["ports"].get(name)
    if port and _listening(port):
        raise SynthscaleError(f"port {port} ({name}) is taken by {_port_owner(port)}; `down` this cluster and "
                              "`up` it again to choose free ports")
    if name == "munged":
        paths.munge_key.parent.mkdir(mode=0o700, exist_ok=True)
        if not paths.munge_key.is_file():
            paths.munge_key.write_bytes(secrets.token_bytes(1024))
        paths.munge_key.chmod(0o600)
        paths.munge_socket.unlink(missing_ok=True)
        # --force: also when a parent folder is closed to others (a 700 home, pytest's temporary folders)
        record = _spawn(paths, name, ["munged", "--foreground", "--force", f"--key-file={paths.munge_key}",
                                      f"--socket={paths.munge_socket}", f"--pid-file={run}/munged.pid",
                                      f"--log-file={log}/munged.log", f"--seed-file={paths.munge_key.parent}/seed"])
        _wait("munged", paths.munge_socket.exists, 20, log / "munged.log")
    elif name == "mysqld":
        _init_mariadb(paths)
        argv = ["mariadbd", "--no-defaults", f"--datadir={paths.mysql_data}", f"--socket={paths.mysql_socket}",
                f"--port={port}", "--bind-address=127.0.0.1", "--skip-name-resolve",
                f"--pid-file={run}/mysqld.pid", f"--log-error={log}/mysqld.log", "--innodb-buffer-pool-size=32M"]
        record = _spawn(paths, name, argv + (["--user=root"] if os.geteuid() == 0 else []))
        _wait("MariaDB", lambda: _listening(port), 60, log / "mysqld.log")
        _grant_slurmdbd(paths, settings)
    elif name == "slurmdbd":
        record = _spawn(paths, name, ["slurmdbd", "-D"])  # reads slurmdbd.conf beside $SLURM_CONF
        _wait("slurmdbd", lambda: _listening(port), 60, log / "slurmdbd.log")
    elif name == "slurmctld":
        record = _spawn(paths, name, ["slurmctld", "-D", "-i", "-f", str(paths.conf)])
        _wait("slurmctld", lambda: client(paths, "scontrol", "ping").returncode == 0, 60, log / "slurmctld.log")
    else:
        record = _spawn(paths, name, ["slurmd", "-D", "-f", str(paths.conf), "-N", settings["node"]])
        _wait("the node", lambda: node_state(paths) in LIVE_STATES, 60, log / "slurmd.log")
    return record
