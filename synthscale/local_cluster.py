"""A one-node Slurm cluster with accounting on this machine, for the tests and for users.

    python -m synthscale.local_cluster up       # or: make slurm-up
    source .slurm/env                           # sets SLURM_CONF for sbatch, squeue, sacct, NeMo-Run
    python -m synthscale.local_cluster status
    python -m synthscale.local_cluster down     # or: make slurm-down

Debian's packages (slurm-wlm, munge, slurmdbd, mariadb-server) provide the daemons; this module
writes their configuration under one folder (default `.slurm/` in the checkout, or
$SYNTHSCALE_SLURM_DIR), starts them in the foreground of their own sessions and records each
pid with its kernel start time in `daemons.json`, so `down` stops exactly the processes `up`
started (never a reused pid). Accounting (slurmdbd on a private MariaDB data folder and port) is
there because NeMo-Run follows jobs with `sacct`. Settings that make a one-node cluster quick:
`cred_expire=10` and `bf_interval=1` (a requeued job restarts ~15 s later instead of ~150 s),
`KillWait=5`, `MinJobAge=300` (finished jobs stay in `squeue --states=all` and `scontrol show
job` for five minutes). `JobRequeue=0`, as on many sites: a job is requeueable only with
`sbatch --requeue`, so a script that forgets it fails here as it would there.

Other processes share a running cluster through leases (`leases/<pid>`): the test fixture
(tests/conftest.py) takes one, and a cluster the fixture started is stopped by the last
fixture to leave; one started by `up` from the command line stays until `down`.

Only the standard library is used: `make slurm-up` works before the virtualenv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import getpass
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from synthscale.errors import SynthscaleError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT / ".slurm"
# program -> the Debian package that ships it
PROGRAMS = {"slurmctld": "slurmctld", "slurmd": "slurmd", "sbatch": "slurm-client", "sacct": "slurm-client",
            "munged": "munge", "slurmdbd": "slurmdbd", "mariadbd": "mariadb-server",
            "mariadb-install-db": "mariadb-server", "mariadb": "mariadb-client"}
PACKAGES = ("slurm-wlm", "munge", "slurmdbd", "mariadb-server")
SLURM_PORTS = {"slurmctld": 6817, "slurmd": 6818, "slurmdbd": 6819}  # Slurm's defaults: one cluster per machine
ORDER = ("munged", "mysqld", "slurmdbd", "slurmctld", "slurmd")  # start order; stop is the reverse
LIVE_STATES = ("idle", "mixed", "allocated", "completing")


@dataclass(frozen=True)
class ClusterPaths:
    """Every file of one local cluster, under `root`."""

    root: Path

    def __post_init__(self) -> None:
        if len(str(self.root / "run" / "munge.socket")) > 100:  # AF_UNIX paths are at most 107 bytes
            raise SynthscaleError(f"cluster folder {self.root}: path too long for a munge socket; use a shorter one")

    conf = property(lambda self: self.root / "slurm.conf")
    dbd_conf = property(lambda self: self.root / "slurmdbd.conf")  # beside slurm.conf: slurmdbd looks there
    env_file = property(lambda self: self.root / "env")
    daemons = property(lambda self: self.root / "daemons.json")
    settings = property(lambda self: self.root / "settings.json")
    leases = property(lambda self: self.root / "leases")
    log = property(lambda self: self.root / "log")
    munge_key = property(lambda self: self.root / "munge" / "munge.key")
    munge_socket = property(lambda self: self.root / "run" / "munge.socket")
    mysql_data = property(lambda self: self.root / "mysql")
    mysql_socket = property(lambda self: self.root / "run" / "mysqld.sock")


def environment(paths: ClusterPaths) -> dict[str, str]:
    """What a client of this cluster needs in its environment (jobs inherit it)."""
    return {"SLURM_CONF": str(paths.conf)}


# --- processes -------------------------------------------------------------------------------------
def _start_ticks(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _alive(record: dict) -> bool:
    return _start_ticks(record["pid"]) == record["ticks"]


def _spawn(paths: ClusterPaths, name: str, argv: list[str]) -> dict:
    """Start a daemon in the foreground of its own session, its output in log/NAME.out."""
    env = {**os.environ, **environment(paths)}
    with open(paths.log / f"{name}.out", "ab") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, env=env, cwd=paths.root)
    _CHILDREN[process.pid] = process
    ticks = _start_ticks(process.pid)
    if ticks is None:
        raise SynthscaleError(f"{name} exited at once: see {paths.log / (name + '.out')}")
    return {"pid": process.pid, "ticks": ticks, "argv": argv}


_CHILDREN: dict[int, subprocess.Popen] = {}  # daemons this process started (reaped when stopped)


def _stop(name: str, record: dict, timeout: float = 20.0) -> None:
    """SIGTERM the recorded process (if it is still the one we started), SIGKILL after `timeout`."""
    if not _alive(record):
        return
    os.kill(record["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child = _CHILDREN.get(record["pid"])
        if child is not None and child.poll() is not None or not _alive(record):
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


def _client(paths: ClusterPaths, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **environment(paths)})


# --- packages and configuration --------------------------------------------------------------------
def ensure_packages() -> None:
    """Install the Debian packages when a program is missing (as root), else say what to install."""
    missing = sorted({package for program, package in PROGRAMS.items() if shutil.which(program) is None})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SynthscaleError(f"Slurm is not installed (missing {', '.join(missing)}); as root run: "
                              f"apt-get install -y {' '.join(PACKAGES)}")
    print(f"installing {' '.join(PACKAGES)} (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *PACKAGES]):
        if subprocess.run(argv, env=env).returncode != 0:
            raise SynthscaleError(f"{' '.join(argv)} failed")


def _settings(paths: ClusterPaths, cpus: int | None) -> dict:
    """The cluster's choices, made once and kept: node name, CPUs, memory, MariaDB port and password."""
    try:
        settings = json.loads(paths.settings.read_text())
    except (OSError, ValueError):
        settings = {"db_password": secrets.token_hex(16), "db_port": _free_port()}
    if cpus is not None:
        settings["cpus"] = cpus
    settings.setdefault("cpus", os.cpu_count() or 1)
    settings.setdefault("node", socket.gethostname().split(".")[0])
    with open("/proc/meminfo") as meminfo:
        total_mib = int(meminfo.readline().split()[1]) // 1024
    settings["memory_mib"] = max(256, int(total_mib * 0.9))
    _save_settings(paths, settings)
    return settings


def _save_settings(paths: ClusterPaths, settings: dict) -> None:
    paths.settings.write_text(json.dumps(settings, indent=1) + "\n")
    paths.settings.chmod(0o600)


def _port_free(port: int | None) -> bool:
    if not port:
        return False
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(paths: ClusterPaths, settings: dict) -> None:
    user, root, node = getpass.getuser(), paths.root, settings["node"]
    overcommit = settings["cpus"] > (os.cpu_count() or 1)
    paths.conf.write_text(f"""\
# A one-node cluster for synthscale's tests and users (synthscale/local_cluster.py writes this file).
ClusterName=synthscale
SlurmctldHost={node}(127.0.0.1)
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={paths.munge_socket},cred_expire=10
SlurmctldPort={SLURM_PORTS['slurmctld']}
SlurmdPort={SLURM_PORTS['slurmd']}
StateSaveLocation={root}/state/slurmctld
SlurmdSpoolDir={root}/state/slurmd
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={paths.log}/slurmctld.log
SlurmdLogFile={paths.log}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={SLURM_PORTS['slurmdbd']}
# the munge socket for slurmdbd's authentication (without it slurmctld looks in /run/munge)
AccountingStoragePass={paths.munge_socket}
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
# CPUs only: with memory tracking a job without --mem would take the whole node
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
ReturnToService=2
JobRequeue=0
MinJobAge=300
KillWait=5
InactiveLimit=0
Waittime=0
{"SlurmdParameters=config_overrides" if overcommit else "# SlurmdParameters: CPUs as the machine has them"}
NodeName={node} NodeAddr=127.0.0.1 CPUs={settings['cpus']} RealMemory={settings['memory_mib']} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
    paths.dbd_conf.write_text(f"""\
AuthType=auth/munge
AuthInfo=socket={paths.munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={SLURM_PORTS['slurmdbd']}
SlurmUser={user}
PidFile={root}/run/slurmdbd.pid
LogFile={paths.log}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={settings['db_port']}
StorageUser=slurm
StoragePass={settings['db_password']}
StorageLoc=slurm_acct_db
""")
    paths.dbd_conf.chmod(0o600)
    paths.env_file.write_text(f"# source this file: the clients (sbatch, squeue, sacct, NeMo-Run) then use the "
                              f"local cluster\nexport SLURM_CONF={paths.conf}\n")


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


def _node_state(paths: ClusterPaths) -> str:
    listed = _client(paths, "sinfo", "--noheader", "--format=%T")
    return listed.stdout.strip().rstrip("*~#") if listed.returncode == 0 else ""


def _start(paths: ClusterPaths, name: str, settings: dict) -> dict:
    """Start one daemon and wait until it serves."""
    run, log = paths.root / "run", paths.log
    if name in SLURM_PORTS and _listening(SLURM_PORTS[name]):
        raise SynthscaleError(f"port {SLURM_PORTS[name]} ({name}) is taken by {_port_owner(SLURM_PORTS[name])}: "
                              "another Slurm cluster runs on this machine; stop it or use it (its SLURM_CONF)")
    if name == "munged":
        paths.munge_key.parent.mkdir(mode=0o700, exist_ok=True)
        if not paths.munge_key.is_file():
            paths.munge_key.write_bytes(secrets.token_bytes(1024))
        paths.munge_key.chmod(0o600)
        paths.munge_socket.unlink(missing_ok=True)
        record = _spawn(paths, name, ["munged", "--foreground", f"--key-file={paths.munge_key}",
                                      f"--socket={paths.munge_socket}", f"--pid-file={run}/munged.pid",
                                      f"--log-file={log}/munged.log", f"--seed-file={paths.munge_key.parent}/seed"])
        _wait("munged", paths.munge_socket.exists, 20, log / "munged.log")
    elif name == "mysqld":
        _init_mariadb(paths)
        if not _port_free(settings["db_port"]):
            settings["db_port"] = _free_port()
            _save_settings(paths, settings)
            write_config(paths, settings)
        argv = ["mariadbd", "--no-defaults", f"--datadir={paths.mysql_data}", f"--socket={paths.mysql_socket}",
                f"--port={settings['db_port']}", "--bind-address=127.0.0.1", "--skip-name-resolve",
                f"--pid-file={run}/mysqld.pid", f"--log-error={log}/mysqld.log", "--innodb-buffer-pool-size=32M"]
        record = _spawn(paths, name, argv + (["--user=root"] if os.geteuid() == 0 else []))
        _wait("MariaDB", lambda: _listening(settings["db_port"]), 60, log / "mysqld.log")
        _grant_slurmdbd(paths, settings)
    elif name == "slurmdbd":
        record = _spawn(paths, name, ["slurmdbd", "-D"])  # reads slurmdbd.conf beside $SLURM_CONF
        _wait("slurmdbd", lambda: _listening(SLURM_PORTS[name]), 60, log / "slurmdbd.log")
    elif name == "slurmctld":
        record = _spawn(paths, name, ["slurmctld", "-D", "-i", "-f", str(paths.conf)])
        _wait("slurmctld", lambda: _client(paths, "scontrol", "ping").returncode == 0, 60, log / "slurmctld.log")
    else:
        record = _spawn(paths, name, ["slurmd", "-D", "-f", str(paths.conf), "-N", settings["node"]])
        _wait("the node", lambda: _node_state(paths) in LIVE_STATES, 60, log / "slurmd.log")
    return record


@contextlib.contextmanager
def _locked(paths: ClusterPaths):
    """One `up`, `down` or lease change at a time, across processes."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.root / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _state(paths: ClusterPaths) -> dict:
    """daemons.json: {"owner": "user" | "lease", "daemons": {name: {"pid", "ticks", "argv"}}}."""
    try:
        return json.loads(paths.daemons.read_text())
    except (OSError, ValueError):
        return {"owner": None, "daemons": {}}


def _save_state(paths: ClusterPaths, state: dict) -> None:
    temp = paths.daemons.with_suffix(".tmp")
    temp.write_text(json.dumps(state, indent=1) + "\n")
    temp.replace(paths.daemons)


def running(paths: ClusterPaths) -> dict[str, dict]:
    """{name: record} of the daemons this folder's cluster started that still run."""
    return {name: record for name, record in _state(paths)["daemons"].items() if _alive(record)}


def _up(paths: ClusterPaths, cpus: int | None, owner: str) -> list[str]:
    ensure_packages()
    for folder in ("run", "log", "state", "leases"):
        (paths.root / folder).mkdir(parents=True, exist_ok=True)
    (paths.root / "run").chmod(0o755)  # munged refuses a socket folder others can write to
    alive = running(paths)
    state = _state(paths) if alive else {"owner": owner, "daemons": {}}
    if "slurmctld" in alive and cpus is not None and cpus != _settings(paths, None)["cpus"]:
        raise SynthscaleError("the cluster runs with other CPUs: `down` first to change them")
    settings = _settings(paths, cpus)
    if not alive:
        write_config(paths, settings)
    started = []
    for name in ORDER:
        if name not in alive:
            state["daemons"][name] = _start(paths, name, settings)
            started.append(name)
            _save_state(paths, state)
    if owner == "user":
        state["owner"] = "user"  # a cluster a test's lease started is now kept until `down`
    _save_state(paths, state)
    return started


def _cancel_jobs(paths: ClusterPaths, timeout: float = 60) -> int:
    """Cancel every job of the cluster and wait until none is left running (slurmstepd outlives slurmd)."""
    listed = _client(paths, "squeue", "--noheader", "--format=%A")
    jobs = sorted(set(listed.stdout.split())) if listed.returncode == 0 else []
    if jobs:
        _client(paths, "scancel", *jobs)
    deadline = time.monotonic() + timeout
    while jobs and time.monotonic() < deadline:
        left = _client(paths, "squeue", "--noheader", "--format=%A")
        if left.returncode != 0 or not left.stdout.strip():
            break
        time.sleep(0.5)
    return len(jobs)


def _down(paths: ClusterPaths) -> list[str]:
    alive = running(paths)
    if "slurmctld" in alive:
        cancelled = _cancel_jobs(paths)
        if cancelled:
            print(f"cancelled {cancelled} jobs", flush=True)
    stopped = []
    for name in reversed(ORDER):
        if name in alive:
            _stop(name, alive[name])
            stopped.append(f"{name} (pid {alive[name]['pid']})")
    _save_state(paths, {"owner": None, "daemons": {}})
    for lease in paths.leases.glob("*") if paths.leases.is_dir() else []:
        lease.unlink(missing_ok=True)
    return stopped


def up(root: str | Path | None = None, cpus: int | None = None) -> tuple[ClusterPaths, list[str]]:
    """Start the cluster (what of it is not running); it stays until `down`. (paths, daemons started)."""
    paths = cluster_paths(root)
    with _locked(paths):
        return paths, _up(paths, cpus, owner="user")


def down(root: str | Path | None = None) -> list[str]:
    """Cancel the cluster's jobs, then stop the daemons `up` started, by pid; returns what stopped."""
    paths = cluster_paths(root)
    with _locked(paths):
        return _down(paths)


def _live_leases(paths: ClusterPaths) -> list[Path]:
    live = []
    for lease in paths.leases.glob("*"):
        pid, _, ticks = lease.name.partition("-")
        if _start_ticks(int(pid)) == int(ticks or -1):
            live.append(lease)
        else:
            lease.unlink(missing_ok=True)  # its process died without giving it back
    return live


@contextlib.contextmanager
def shared(root: str | Path | None = None):
    """Use this folder's cluster, starting it when it is not running, for the duration of the block.
    A cluster started here stops when its last user leaves; one started by `up` is left running.
    Yields (paths, daemons this call started)."""
    paths = cluster_paths(root)
    with _locked(paths):
        started = _up(paths, None, owner="lease")
        lease = paths.leases / f"{os.getpid()}-{_start_ticks(os.getpid())}"
        lease.touch()
    try:
        yield paths, started
    finally:
        with _locked(paths):
            lease.unlink(missing_ok=True)
            if _state(paths).get("owner") == "lease" and not _live_leases(paths):
                _down(paths)


def cluster_paths(root: str | Path | None = None) -> ClusterPaths:
    root = root or os.environ.get("SYNTHSCALE_SLURM_DIR") or DEFAULT_DIR
    return ClusterPaths(Path(root).resolve())


def status(root: str | Path | None = None) -> dict:
    paths = cluster_paths(root)
    alive = running(paths)
    return {"folder": str(paths.root), "owner": _state(paths).get("owner") if alive else None,
            "daemons": {name: record["pid"] for name, record in alive.items()},
            "node": _node_state(paths) if "slurmctld" in alive else "", "env": str(paths.env_file)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synthscale.local_cluster", description=__doc__.split("\n\n")[0],
                                     epilog="Example: python -m synthscale.local_cluster up && source .slurm/env && sinfo")
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--dir", default=None, help="cluster folder [default: $SYNTHSCALE_SLURM_DIR or .slurm/ in the checkout]")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of the node (up) [default: the machine's]")
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            started = time.monotonic()
            paths, names = up(args.dir, args.cpus)
            what = f"started {', '.join(names)}" if names else "already running"
            print(f"Slurm cluster in {paths.root}: {what} ({time.monotonic() - started:.1f} s). Use it with:\n"
                  f"  source {paths.env_file}\n  sinfo   # then sbatch, squeue, sacct; recipes sweep --executor slurm")
        elif args.action == "down":
            stopped = down(args.dir)
            print(f"stopped {', '.join(stopped)}" if stopped else "no cluster daemons were running")
        else:
            print(json.dumps(status(args.dir), indent=1))
    except SynthscaleError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
