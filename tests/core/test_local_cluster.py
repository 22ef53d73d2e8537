"""`make slurm-up` / `make slurm-down` (synthscale.local_cluster) on a second, private cluster in a
temporary folder, beside the checkout's own one (each cluster takes free ports): `up` twice starts
its daemons once, `down` cancels its jobs and stops exactly the processes `up` started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synthscale import local_cluster
from synthscale.errors import SynthscaleError
from synthscale.local_cluster.daemons import ORDER, start_ticks

ROOT = Path(__file__).resolve().parents[2]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _processes_with_env(needle: str) -> list[int]:
    """Live processes whose environment holds `needle` (the job's processes carry SLURM_CONF)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and start_ticks(int(entry.name)) is not None:
            try:
                if needle.encode() in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def private_cluster(tmp_path):
    folder = tmp_path / "cluster"
    try:
        yield local_cluster.up(folder, install=False)  # tests never install packages
    except SynthscaleError as exc:
        if os.environ.get("SYNTHSCALE_REQUIRE_SLURM") == "1":
            raise
        pytest.skip(f"no local Slurm cluster: {exc}")
    finally:
        local_cluster.down(folder)


@pytest.mark.timeout(300)
def test_up_is_idempotent_and_down_stops_exactly_what_up_started(private_cluster):
    paths, started = private_cluster
    assert started == list(ORDER)
    daemons = local_cluster.running(paths)
    assert sorted(daemons) == sorted(ORDER)
    for record in daemons.values():  # each recorded pid runs the command `up` started
        assert _cmdline(record["pid"]).split() == record["argv"]
    assert (paths.env_file.read_text().splitlines()[-1] == f"export SLURM_CONF={paths.conf}")

    again, started_again = local_cluster.up(paths.root, install=False)
    assert started_again == [] and local_cluster.running(again) == daemons  # reused, nothing restarted
    others = {n: r for n, r in local_cluster.running(local_cluster.cluster_paths()).items()}  # the checkout's own

    env = {**os.environ, "SLURM_CONF": str(paths.conf)}
    job = subprocess.run(["sbatch", "--parsable", "-A", "test", "-o", "/dev/null", "--wrap", "sleep 600"],
                         capture_output=True, text=True, env=env, check=True).stdout.strip()
    deadline = time.monotonic() + 60
    while not _processes_with_env(f"SLURM_CONF={paths.conf}") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_with_env(f"SLURM_CONF={paths.conf}"), f"job {job} never started"

    stopped = local_cluster.down(paths.root)
    assert [s.split()[0] for s in stopped] == list(reversed(ORDER))
    assert all(start_ticks(r["pid"]) is None for r in daemons.values())  # every daemon it started is gone
    assert not _processes_with_env(f"SLURM_CONF={paths.conf}")  # and its job was cancelled, not orphaned
    assert all(start_ticks(r["pid"]) == r["ticks"] for r in others.values())  # another cluster untouched
    assert local_cluster.down(paths.root) == []  # nothing left to stop


@pytest.mark.timeout(60)
def test_down_never_signals_a_process_that_reuses_a_recorded_pid(tmp_path):
    """A pid in daemons.json whose process is not the one `up` started (its start time differs) is
    left alone: the kernel may have given the pid to anything since."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        paths = local_cluster.cluster_paths(tmp_path / "cluster")
        paths.root.mkdir()
        record = {"pid": sleeper.pid, "ticks": start_ticks(sleeper.pid) - 1, "argv": ["slurmctld"]}
        paths.daemons.write_text(json.dumps({"owner": "user", "daemons": {"slurmctld": record}}))
        assert local_cluster.down(paths.root) == []
        assert sleeper.poll() is None  # still running
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()


def test_the_make_targets_call_the_module():
    makefile = (ROOT / "Makefile").read_text()
    assert "slurm-up:\n\t$(PYTHON) -m synthscale.local_cluster up" in makefile
    assert "slurm-down:\n\t$(PYTHON) -m synthscale.local_cluster down" in makefile
    done = subprocess.run([sys.executable, "-m", "synthscale.local_cluster", "--help"], capture_output=True,
                          text=True, cwd=ROOT, check=True)
    assert "up" in done.stdout and "Example" in done.stdout
