"""`python -m recipes.megatron.entry` under torchrun, on real megatron-core over gloo (2 ranks, PP=2):
all ranks agree training is done, evaluate and exit 0 with results.json; a run stopped by its
training budget and then by SIGTERM (what Slurm's --signal sends) continues, job after job, to the
losses of an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from recipes.megatron.checkpoint import latest_step
from tests.recipes.megatron_launch import ROOT, STEPS, _env, make_run

pytestmark = pytest.mark.timeout(900)

RANKS = 2


def _command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={RANKS}",
            "-m", "recipes.megatron.entry", "--run-dir", str(run_dir), *extra]


def entry(run_dir: Path, *extra: str) -> str:
    """Run the entry under torchrun to its end; fail with the ranks' errors unless every rank exits 0.
    Returns its stderr (the job's log)."""
    done = subprocess.run(_command(run_dir, *extra), env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    errors = [line for line in done.stderr.splitlines() if "warn" not in line.lower()]  # megatron's TE/Apex notices
    assert done.returncode == 0, "\n".join(errors[-150:])
    return done.stderr


def entry_signalled(run_dir: Path, after_step: int, log: Path) -> int:
    """Start the entry; once a checkpoint at `after_step` or later exists, send SIGTERM to torchrun,
    every rank and their helper processes (Slurm signals every process of a job step); return
    torchrun's exit status."""
    with open(log, "w") as output:
        proc = subprocess.Popen(_command(run_dir), env=_env(), cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
        give_up = time.monotonic() + 600  # a safety net, not a speed check
        while proc.poll() is None and time.monotonic() < give_up:
            try:
                step = latest_step(run_dir)
            except (OSError, ValueError):  # the tracker being replaced this instant
                step = None
            if step is not None and step >= after_step:
                for member in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
                    member.send_signal(signal.SIGTERM)
                break
            time.sleep(0.02)
        return proc.wait(timeout=120)


def _segments(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "megatron" / "train_segments.json").read_text())["segments"]


@pytest.fixture(scope="module")
def uninterrupted(workspace, tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("megatron_entry") / "run"
    make_run(run_dir, workspace, pipeline_parallel=2)
    entry(run_dir)
    return json.loads((run_dir / "results.json").read_text())


def test_two_ranks_train_agree_evaluate_and_exit_0_with_results(uninterrupted):
    record = uninterrupted  # torchrun exited 0: every rank did
    assert record["backend"] == "megatron" and record["world_size"] == RANKS and record["device"] == "cpu"
    assert record["layout"]["pipeline_parallel"] == 2
    assert [step for step, _ in record["train_loss_curve"]] == list(range(1, STEPS + 1))
    assert set(record["eval"]) == {"wiki", "news"} and record["train_segments"] == 1
    assert record["train_time_s"] > 0 and record["tokens_per_s"] == record["D"] / record["train_time_s"]


def test_a_run_stopped_by_its_budget_then_by_sigterm_continues_to_the_same_losses(workspace, tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    make_run(run_dir, workspace, pipeline_parallel=2)
    # job 1: a training budget of zero minutes: one step, a checkpoint, exit 0 (the trap would requeue)
    log = entry(run_dir, "--train-minutes", "0")
    assert latest_step(run_dir) == 1 and not (run_dir / "results.json").exists()
    assert f"stopped by its 0-minute budget at step 1 of {STEPS}; checkpoint saved" in log  # the job's log says so
    # job 2: SIGTERM once a checkpoint at step 10 exists: the ranks save after the current step and
    # go through the stages (the segment is recorded); torchrun itself exits non-zero on a signal
    entry_signalled(run_dir, after_step=10, log=tmp_path / "job2.log")
    stopped_at = latest_step(run_dir)
    log = (tmp_path / "job2.log").read_text()
    assert 10 <= stopped_at < STEPS, log[-4000:]
    assert f"resuming at step 1 of {STEPS}" in log and f"at step {stopped_at} of {STEPS}; checkpoint saved" in log
    assert [(s["steps_done"], s["finished"]) for s in _segments(run_dir)] == [(1, False), (stopped_at, False)], \
        log[-4000:]
    assert not (run_dir / "results.json").exists()
    # job 3: continues to the end, evaluates, results.json
    log = entry(run_dir)
    assert f"resuming at step {stopped_at} of {STEPS}" in log and f"step {STEPS} of {STEPS}, loss" in log
    record = json.loads((run_dir / "results.json").read_text())
    reference = dict(uninterrupted["train_loss_curve"])
    assert [step for step, _ in record["train_loss_curve"]] == list(range(1, STEPS + 1))
    assert max(abs(loss - reference[step]) for step, loss in record["train_loss_curve"]) < 1e-6
    for domain, score in uninterrupted["eval"].items():
        assert abs(record["eval"][domain]["loss"] - score["loss"]) < 1e-6
    segments = _segments(run_dir)
    assert record["train_segments"] == 3 and record["train_time_s"] == pytest.approx(sum(s["train_time_s"] for s in segments))
