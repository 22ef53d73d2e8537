"""`recipes sweep --executor slurm` on the local Slurm cluster, through NeMo-Run, with no container:
the tasks run in this Python environment (tests/conftest.py `slurm_cluster`).

  - a two-run sweep of megatron's tiny CPU shapes (one rank each) is one job array; it completes
    and `recipes results` tabulates it;
  - a task signalled with SIGTERM (what Slurm sends before the time limit and on preemption)
    saves at the step it is in, requeues itself, resumes, and ends with the losses of the same
    run trained in one go by `--executor local`;
  - a task that crashes at start-up is not requeued, and the rerun of the sweep says why.
"""

from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path

import pytest

from tests.recipes.helpers import invoke, sweep_args

SLURM = ("--executor", "slurm", "--slurm-account", "test", "--slurm-time", "30", "--checkpoint-interval", "10")


def _sweep(workspace, runs: Path, tokens: str, *extra: str, exit_code: int = 0) -> str:
    result = invoke(sweep_args(workspace, runs, "tiny-xs", tokens, *extra, evals=("wiki",)))
    assert result.exit_code == exit_code, result.output
    return result.output


def _array(runs: Path) -> tuple[str, list[Path]]:
    """(the submitted array's job name, its run folders in task order)."""
    (folder,) = (runs / "_arrays").iterdir()
    return (json.loads((folder / "submitted.json").read_text())["job_name"],
            [Path(line) for line in (folder / "runs.txt").read_text().split()])


def _wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(0.5)


@pytest.mark.timeout(1200)
def test_a_sweep_runs_as_an_array_and_a_signalled_task_resumes_to_the_same_losses(workspace, slurm_cluster,
                                                                                   tmp_path):
    runs = tmp_path / "runs"
    _sweep(workspace, runs, "12800,20480", *SLURM)
    name, (short, long) = _array(runs)
    array_id = next(iter(slurm_cluster.job_ids(name))).split("_")[0]
    task = f"{array_id}_1"  # the 80-step run: task i runs line i + 1 of runs.txt

    tracker = long / "checkpoints" / "latest_checkpointed_iteration.txt"  # megatron's
    _wait_until(tracker.is_file, 600, f"{long.name}'s first checkpoint")  # training is under way
    slurm_cluster.run("scancel", "--signal=TERM", task)  # to the task's steps, as Slurm's --signal=TERM@N
    _wait_until(lambda: slurm_cluster.restarts(task) >= 1, 120, f"task {task} requeued")

    states = slurm_cluster.wait_for_name(name, timeout=900)
    assert states == {f"{array_id}_0": "COMPLETED", task: "COMPLETED"}
    assert slurm_cluster.restarts(task) == 1 and slurm_cluster.restarts(f"{array_id}_0") == 0
    logs = "".join(p.read_text() for p in (runs / "_arrays").rglob("log-*_*_0.out"))
    stopped = re.findall(r"stopped by a stop signal at step (\d+) of 80; checkpoint saved", logs)
    assert len(stopped) == 1 and 0 < int(stopped[0]) < 80  # stopped cleanly once, no step lost

    record = json.loads((long / "results.json").read_text())
    segments = json.loads((long / "megatron" / "train_segments.json").read_text())["segments"]
    assert [s["steps_done"] for s in segments] == [int(stopped[0]), 80]  # the step each segment reached
    assert record["train_segments"] == 2  # both segments counted in the train time
    assert record["train_time_s"] == pytest.approx(sum(s["train_time_s"] for s in segments))
    assert record["train_time_s"] > segments[0]["train_time_s"] > 0
    local = tmp_path / "local"
    _sweep(workspace, local, "20480", "--checkpoint-interval", "10")  # the same run, in one go, here
    (alone,) = (p for p in local.iterdir() if p.name == long.name)
    uninterrupted = json.loads((alone / "results.json").read_text())
    assert record["train_loss_curve"] == uninterrupted["train_loss_curve"]
    assert record["eval"]["wiki"]["loss"] == uninterrupted["eval"]["wiki"]["loss"]

    table = tmp_path / "results.csv"
    assert invoke(["results", str(runs), "--output", str(table)]).exit_code == 0
    rows = list(csv.DictReader(table.open()))
    assert sorted(int(r["D"]) for r in rows) == [12800, 20480]
    assert {r["run_id"] for r in rows} == {short.name, long.name}


@pytest.mark.timeout(600)
def test_a_task_that_crashes_at_start_up_is_not_requeued_and_the_rerun_says_why(workspace, slurm_cluster,
                                                                                tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    with monkeypatch.context() as env:
        env.setenv("SYNTHSCALE_TORCH_THREADS", "zero")  # the job inherits it: the trainer fails before training
        _sweep(workspace, runs, "12800", *SLURM)
    name, (run_dir,) = _array(runs)
    (task,) = slurm_cluster.job_ids(name)
    assert slurm_cluster.wait_for_name(name, timeout=300) == {task: "FAILED"}
    assert slurm_cluster.restarts(task) == 0  # no progress: not requeued
    report = (run_dir / "slurm-stopped.txt").read_text()
    assert "incomplete and made no progress in this attempt (exit 1): not requeued" in report
    assert "invalid literal for int() with base 10: 'zero'" in report  # the end of the task's log

    output = _sweep(workspace, runs, "12800", *SLURM, "--dry-run")
    assert "made no progress" in output and str(run_dir / "slurm-stopped.txt") in output
    assert "would submit array" in output  # and it is launched again
