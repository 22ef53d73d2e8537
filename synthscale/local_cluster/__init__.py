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
`cred_expire=10`, `bf_interval=1` and `sched_interval=2` (a requeued job restarts ~12 s later
instead of ~150 s), `KillWait=5`, `MinJobAge=300` (finished jobs stay in `squeue --states=all`
and `scontrol show job` for five minutes). `JobRequeue=0`, as on many sites: a job is requeueable only with
`sbatch --requeue`, so a script that forgets it fails here as it would there.

Other processes share a running cluster through leases (`leases/<pid>`): the test fixture
(tests/conftest.py) takes one, and a cluster the fixture started is stopped by the last
fixture to leave; one started by `up` from the command line stays until `down`.

Only the standard library is used: `make slurm-up` works before the virtualenv exists.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

from synthscale.errors import SynthscaleError
from synthscale.local_cluster.config import ClusterPaths, ensure_packages, environment, settings_of, write_config
from synthscale.local_cluster.daemons import ORDER, alive, client, node_state, start, start_ticks, stop

DEFAULT_DIR = Path(__file__).resolve().parents[2] / ".slurm"
__all__ = ["ClusterPaths", "environment", "up", "down", "shared", "status", "running", "cluster_paths"]


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
    return {name: record for name, record in _state(paths)["daemons"].items() if alive(record)}


def _up(paths: ClusterPaths, cpus: int | None, owner: str, install: bool = False) -> list[str]:
    ensure_packages(install)
    for folder in ("run", "log", "state", "leases"):
        (paths.root / folder).mkdir(parents=True, exist_ok=True)
    (paths.root / "run").chmod(0o755)  # munged refuses a socket folder others can write to
    alive = running(paths)
    state = _state(paths) if alive else {"owner": owner, "daemons": {}}
    if "slurmctld" in alive and cpus is not None and cpus != settings_of(paths)["cpus"]:
        raise SynthscaleError("the cluster runs with other CPUs: `down` first to change them")
    settings = settings_of(paths, cpus, choose_ports=not alive)
    if not alive:
        write_config(paths, settings)
    started = []
    for name in ORDER:
        if name not in alive:
            state["daemons"][name] = start(paths, name, settings)
            started.append(name)
            _save_state(paths, state)
    if owner == "user":
        state["owner"] = "user"  # a cluster a test's lease started is now kept until `down`
    _save_state(paths, state)
    return started


def _cancel_jobs(paths: ClusterPaths, timeout: float = 60) -> int:
    """Cancel every job of the cluster and wait until none is left running (slurmstepd outlives slurmd)."""
    listed = client(paths, "squeue", "--noheader", "--format=%A")
    jobs = sorted(set(listed.stdout.split())) if listed.returncode == 0 else []
    if jobs:
        client(paths, "scancel", *jobs)
    deadline = time.monotonic() + timeout
    while jobs and time.monotonic() < deadline:
        left = client(paths, "squeue", "--noheader", "--format=%A")
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
            stop(name, alive[name])
            stopped.append(f"{name} (pid {alive[name]['pid']})")
    _save_state(paths, {"owner": None, "daemons": {}})
    for lease in paths.leases.glob("*") if paths.leases.is_dir() else []:
        lease.unlink(missing_ok=True)
    return stopped


def up(root: str | Path | None = None, cpus: int | None = None,
       install: bool = True) -> tuple[ClusterPaths, list[str]]:
    """Start the cluster (what of it is not running); it stays until `down`. (paths, daemons started).
    With `install`, as root, missing Debian packages are installed first."""
    paths = cluster_paths(root)
    with _locked(paths):
        return paths, _up(paths, cpus, owner="user", install=install)


def down(root: str | Path | None = None) -> list[str]:
    """Cancel the cluster's jobs, then stop the daemons `up` started, by pid; returns what stopped."""
    paths = cluster_paths(root)
    with _locked(paths):
        return _down(paths)


def _live_leases(paths: ClusterPaths) -> list[Path]:
    live = []
    for lease in paths.leases.glob("*"):
        pid, _, ticks = lease.name.partition("-")
        if start_ticks(int(pid)) == int(ticks or -1):
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
        lease = paths.leases / f"{os.getpid()}-{start_ticks(os.getpid())}"
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
            "node": node_state(paths) if "slurmctld" in alive else "", "env": str(paths.env_file)}
