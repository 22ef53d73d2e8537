"""The local Slurm cluster as the tests (and benchmarks) use it: `open_cluster()` and `SlurmCluster`.

The session fixture `slurm_cluster` (tests/conftest.py) yields a `SlurmCluster`: the cluster in
`.slurm/` that `make slurm-up` started, or one this session starts and stops at its end
(synthscale.local_cluster.shared: the last session using it stops it). Other sessions may run
jobs on it at the same time: select your jobs by name, never by "all jobs".

    def test_x(slurm_cluster, tmp_path):
        ... recipes sweep --executor slurm ...        # SLURM_CONF is set for the session
        states = slurm_cluster.wait_for_name(job_name, timeout=600)
        assert set(states.values()) == {"COMPLETED"}
        assert slurm_cluster.restarts(job_id) >= 1
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED"}


@dataclass
class SlurmCluster:
    conf: Path  # SLURM_CONF
    folder: Path  # the cluster's folder (.slurm/): logs in log/
    started: list[str]  # daemons this session started (empty: a running cluster was reused)

    @property
    def env(self) -> dict[str, str]:
        """The environment for a client command or a subprocess that submits jobs."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        done = subprocess.run(list(argv), capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def queued(self, name: str) -> list[tuple[str, str]]:
        """[(job id, state)] of the jobs (one line per array task) named `name` that are not finished."""
        listed = self.run("squeue", "--noheader", "--array", f"--name={name}", "--format=%i %T")
        return [tuple(line.split()) for line in listed.stdout.splitlines() if line.strip()]

    def accounting(self, name: str) -> dict[str, str]:
        """{job id (ARRAY_TASK): state} from sacct, the last record of each (a requeued job has several)."""
        listed = self.run("sacct", "--noheader", "--parsable2", "--allocations", f"--name={name}",
                          "--starttime=now-1days", "--format=JobID,State")
        states: dict[str, str] = {}
        for line in listed.stdout.splitlines():
            job, _, state = line.partition("|")
            states[job] = state.split()[0] if state else ""  # "CANCELLED by 0" -> CANCELLED
        return states

    def wait_for_name(self, name: str, timeout: float, poll: float = 1.0) -> dict[str, str]:
        """Wait until no job named `name` is queued or running (requeued ones count as queued), then
        return its tasks' final states (accounting). Fails after `timeout` seconds with the queue."""
        deadline = time.monotonic() + timeout
        while True:
            queued = self.queued(name)
            if not queued:
                states = self.accounting(name)
                if states and all(state in FINAL for state in states.values()):
                    return states
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs named {name} still {queued or self.accounting(name)} after {timeout:.0f} s")
            time.sleep(poll)

    def job_ids(self, name: str) -> list[str]:
        """Job ids (ARRAY_TASK for array tasks) of the jobs named `name`, queued or finished."""
        return sorted(set(self.accounting(name)) | {job for job, _ in self.queued(name)})

    def restarts(self, job: str) -> int:
        """How often `job` (an id or ARRAY_TASK) was requeued: `scontrol show job`'s Restarts while
        slurmctld remembers the job (MinJobAge), else the REQUEUED records in accounting."""
        shown = self.run("scontrol", "show", "job", "--oneliner", job, check=False)
        for word in shown.stdout.split():
            if word.startswith("Restarts="):
                return int(word.split("=", 1)[1])
        listed = self.run("sacct", "--noheader", "--parsable2", "--duplicates", "--allocations", "-j", job,
                          "--format=State")
        return sum(line.startswith("REQUEUED") for line in listed.stdout.splitlines())


@contextlib.contextmanager
def open_cluster(skip):
    """The running local cluster, or one started for the block; SLURM_CONF set in os.environ
    meanwhile. `skip(reason)` is called (pytest.skip) when Slurm cannot be had here, unless
    SYNTHSCALE_REQUIRE_SLURM=1 (CI), where that is an error."""
    from synthscale import local_cluster
    from synthscale.errors import SynthscaleError

    try:
        context = local_cluster.shared()
        paths, started = context.__enter__()
    except SynthscaleError as exc:
        if os.environ.get("SYNTHSCALE_REQUIRE_SLURM") == "1":
            raise
        skip(f"no local Slurm cluster: {exc}")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(paths.conf)
    try:
        yield SlurmCluster(conf=paths.conf, folder=paths.root, started=started)
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        context.__exit__(None, None, None)
