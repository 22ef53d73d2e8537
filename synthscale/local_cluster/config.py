"""The local cluster's files and settings: where everything lives, and the two configuration files.

`.slurm/` (or the folder given) holds slurm.conf, slurmdbd.conf (mode 600, beside slurm.conf where
slurmdbd looks for it), `env` (source it), settings.json (the choices made once: node name, CPUs,
memory, MariaDB port and password), the munge key, MariaDB's data, the daemons' state and logs.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from synthscale.errors import SynthscaleError

# program -> the Debian package that ships it
PROGRAMS = {"slurmctld": "slurmctld", "slurmd": "slurmd", "sbatch": "slurm-client", "sacct": "slurm-client",
            "munged": "munge", "slurmdbd": "slurmdbd", "mariadbd": "mariadb-server",
            "mariadb-install-db": "mariadb-server", "mariadb": "mariadb-client"}
PACKAGES = ("slurm-wlm", "munge", "slurmdbd", "mariadb-server")
# Preferred ports (Slurm's defaults); a cluster takes others when these are in use (another cluster)
DEFAULT_PORTS = {"slurmctld": 6817, "slurmd": 6818, "slurmdbd": 6819, "mysqld": 0}


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


# --- packages and configuration --------------------------------------------------------------------
def ensure_packages(install: bool = True) -> None:
    """Install the Debian packages when a program is missing (as root, with `install`), else say
    what to install. The tests never install: they skip, or CI installs first (`install`)."""
    missing = sorted({package for program, package in PROGRAMS.items() if shutil.which(program) is None})
    if not missing:
        return
    if not install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SynthscaleError(f"Slurm is not installed (missing {', '.join(missing)}); as root run: "
                              f"apt-get install -y {' '.join(PACKAGES)} (or make slurm-up, which does)")
    print(f"installing {' '.join(PACKAGES)} (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *PACKAGES]):
        if subprocess.run(argv, env=env).returncode != 0:
            raise SynthscaleError(f"{' '.join(argv)} failed")


def settings_of(paths: ClusterPaths, cpus: int | None = None, choose_ports: bool = False) -> dict:
    """The cluster's choices, kept in settings.json: node name, CPUs, memory, the daemons' ports and
    the database password. With `choose_ports` (the cluster is down) a port another process took
    since is replaced by a free one, so several clusters can run on one machine."""
    try:
        settings = json.loads(paths.settings.read_text())
    except (OSError, ValueError):
        settings = {"db_password": secrets.token_hex(16)}
    if cpus is not None:
        settings["cpus"] = cpus
    ports = settings.setdefault("ports", {})
    for name, preferred in DEFAULT_PORTS.items():
        if choose_ports and not port_free(ports.get(name)):
            taken = set(ports.values())
            ports[name] = preferred if preferred not in taken and port_free(preferred) else free_port()
    settings.setdefault("cpus", os.cpu_count() or 1)
    settings.setdefault("node", socket.gethostname().split(".")[0])
    with open("/proc/meminfo") as meminfo:
        total_mib = int(meminfo.readline().split()[1]) // 1024
    settings["memory_mib"] = max(256, int(total_mib * 0.9))
    save_settings(paths, settings)
    return settings


def save_settings(paths: ClusterPaths, settings: dict) -> None:
    paths.settings.write_text(json.dumps(settings, indent=1) + "\n")
    paths.settings.chmod(0o600)


def port_free(port: int | None) -> bool:
    if not port:
        return False
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the daemons bind: TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
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
SlurmctldPort={settings['ports']['slurmctld']}
SlurmdPort={settings['ports']['slurmd']}
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
AccountingStoragePort={settings['ports']['slurmdbd']}
# the munge socket for slurmdbd's authentication (without it slurmctld looks in /run/munge)
AccountingStoragePass={paths.munge_socket}
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
# CPUs only: with memory tracking a job without --mem would take the whole node
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# a requeued job may start once its credential expired (cred_expire=10): the main scheduler every 2 s
# starts it ~12 s after the requeue (~30 s with the default 60 s interval)
SchedulerParameters=bf_interval=1,sched_interval=2
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
DbdPort={settings['ports']['slurmdbd']}
SlurmUser={user}
PidFile={root}/run/slurmdbd.pid
LogFile={paths.log}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={settings['ports']['mysqld']}
StorageUser=slurm
StoragePass={settings['db_password']}
StorageLoc=slurm_acct_db
""")
    paths.dbd_conf.chmod(0o600)
    paths.env_file.write_text(f"# source this file: the clients (sbatch, squeue, sacct, NeMo-Run) then use the "
                              f"local cluster\nexport SLURM_CONF={paths.conf}\n")
