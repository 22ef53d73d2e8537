"""The staged run (recipes.run_stages) with fake train/evaluate callables: on two real processes
(torch.distributed over gloo) all ranks agree training is done and evaluate together; invalid
scores are never saved; train time sums every segment; the deadline counts from the job's start."""

from __future__ import annotations

import json
import math
import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest

from recipes.run_spec import RunSpec
from recipes.run_stages import (JOB_START_ENV, Deadline, EvalScoreInvalid, StageFiles, TrainSegment, World,
                                default_margin, run_stages)
from synthscale.errors import SynthscaleError
from tests.recipes.helpers import invoke, sweep_args


# --- running functions on real ranks ------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def join_rank(rank: int, size: int, port: int) -> None:
    """This process as rank `rank` of a gloo world, with torchrun's environment."""
    import torch

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=size, timeout=timedelta(seconds=30))


def spawn_ranks(worker, args: tuple, size: int = 2, limit_s: float = 180.0) -> None:
    """Run worker(rank, *args) on `size` fresh processes; fail on a rank's error or on a hang."""
    import torch.multiprocessing as mp

    context = mp.start_processes(worker, args=args, nprocs=size, join=False, start_method="spawn")
    give_up = time.monotonic() + limit_s  # a safety net for a hung collective, not a speed check
    while not context.join(timeout=2):
        if time.monotonic() > give_up:
            for process in context.processes:
                process.kill()
            pytest.fail(f"ranks still running after {limit_s:.0f} s: a rank is stuck in a collective")


# --- a fake backend: each stage makes a collective, as megatron's do ---------------------------------
class FakeStages:
    """Training makes a collective per step and saves 'checkpoints/done' on rank 0 (as megatron's
    checkpoint writer does), the last rank returning later (it logs the losses); evaluation makes a
    collective and returns the score on every rank (NaN where `nan_domains` say)."""

    min_minutes = 0.0

    def __init__(self, run_dir: Path, steps: int, nan_domains=(), stop_after: int | None = None):
        self.run_dir, self.steps, self.nan_domains, self.stop_after = run_dir, steps, set(nan_domains), stop_after
        self.evaluated: list[str] = []
        self.usable: list = []

    def _all_reduce(self) -> float:
        import torch

        value = torch.ones(1)
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(value)
        return float(value)

    def _rank(self) -> tuple[int, int]:
        world = World.current()
        return world.rank, world.size

    def train(self, usable_minutes):
        self.usable.append(usable_minutes)
        marker = self.run_dir / "checkpoints" / "step"
        start = int(marker.read_text()) if marker.is_file() else 0
        end = self.steps if self.stop_after is None else min(self.steps, start + self.stop_after)
        for _ in range(start, end):
            self._all_reduce()
        rank, size = self._rank()
        if rank == 0:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(end))
        if size > 1 and rank == size - 1:
            time.sleep(0.5)  # the last rank leaves training later than the others
        return TrainSegment(train_time_s=10.0 * (end - start), loss_curve=[[s, 5.0 - s / 10] for s in range(1, end + 1)],
                            steps_done=end)

    def training_finished(self) -> bool:
        marker = self.run_dir / "checkpoints" / "step"
        return marker.is_file() and int(marker.read_text()) == self.steps

    def check_final_checkpoint(self) -> None:
        assert self.training_finished()

    def evaluate(self, domain: str) -> dict:
        from recipes.evaluation import eval_samples

        self._all_reduce()
        self.evaluated.append(domain)
        spec = RunSpec.load(self.run_dir)
        samples = eval_samples(spec.eval_domains[domain], spec.recipe.seq_length, spec.eval_max_tokens)
        return {"loss": math.nan if domain in self.nan_domains else 3.0, "tokens": samples * spec.recipe.seq_length,
                "samples": samples}


@pytest.fixture()
def cpu_run(workspace, tmp_path):
    """A run folder written by `recipes sweep` (its spec, blend and domains are what matter here)."""
    result = invoke(sweep_args(workspace, tmp_path / "runs", "tiny-xs", "12800", "--dry-run"))
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir() and not p.name.startswith("_")]
    return run_dir


def _stages(run_dir: Path, backend, deadline=None, stage="all"):
    spec = RunSpec.load(run_dir)
    return run_stages(run_dir, spec, backend, StageFiles(run_dir / "stages"), deadline or Deadline(None), World.current(),
                      stage, extra={"device": "cpu"})


def _two_rank_worker(rank: int, run_dir: str, port: int, report: str) -> None:
    join_rank(rank, 2, port)
    run_dir = Path(run_dir)
    steps = RunSpec.load(run_dir).plan.train_iters
    outcomes = {}
    try:
        _stages(run_dir, FakeStages(run_dir, steps, nan_domains={"news"}))
    except EvalScoreInvalid as exc:
        outcomes["nan"] = str(exc)
    else:
        outcomes["nan"] = None
    backend = FakeStages(run_dir, steps)
    record = _stages(run_dir, backend)
    outcomes.update(record=record is not None, evaluated=backend.evaluated)
    Path(report, f"rank{rank}.json").write_text(json.dumps(outcomes))
    import torch

    torch.distributed.destroy_process_group()


def test_two_ranks_agree_training_is_done_evaluate_together_and_report_a_nan_once(cpu_run, tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    spawn_ranks(_two_rank_worker, (str(cpu_run), free_port(), str(report)))
    first, last = (json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1))
    # the NaN of 'news' is reported by the writer (last) rank alone, with its domain; wiki was kept
    assert first["nan"] is None and "domain 'news'" in last["nan"] and "loss=nan" in last["nan"]
    # the next attempt evaluates only news again, on both ranks, and completes
    assert first["evaluated"] == last["evaluated"] == ["news"]
    assert last["record"] and not first["record"]
    record = json.loads((cpu_run / "results.json").read_text())
    assert record["world_size"] == 2 and set(record["eval"]) == {"wiki", "news"}
    assert [s for s, _ in record["train_loss_curve"]] == list(range(1, RunSpec.load(cpu_run).plan.train_iters + 1))


def test_an_invalid_score_is_not_saved_and_the_next_attempt_scores_it_again(cpu_run):
    steps = RunSpec.load(cpu_run).plan.train_iters
    files = StageFiles(cpu_run / "stages")
    with pytest.raises(EvalScoreInvalid, match=r"domain 'news' \(loss=nan over \d+ tokens\)"):
        _stages(cpu_run, FakeStages(cpu_run, steps, nan_domains={"news"}))
    assert set(files.scores()) == {"wiki"}
    saved = (cpu_run / "stages" / "eval_scores.json").read_bytes()
    with pytest.raises(EvalScoreInvalid, match="news"):
        _stages(cpu_run, FakeStages(cpu_run, steps, nan_domains={"news"}))
    assert (cpu_run / "stages" / "eval_scores.json").read_bytes() == saved  # no progress for the requeue trap
    backend = FakeStages(cpu_run, steps)
    assert _stages(cpu_run, backend)["eval"]["news"]["loss"] == 3.0 and backend.evaluated == ["news"]


def test_a_nan_saved_by_an_older_version_is_evaluated_again(cpu_run):
    steps = RunSpec.load(cpu_run).plan.train_iters
    _stages(cpu_run, FakeStages(cpu_run, steps), stage="train")
    (cpu_run / "stages" / "eval_scores.json").write_text(
        json.dumps({"wiki": FakeStages(cpu_run, steps).evaluate("wiki"), "news": {"loss": math.nan, "tokens": 4096}}))
    backend = FakeStages(cpu_run, steps)
    assert _stages(cpu_run, backend) is not None and backend.evaluated == ["news"]


def test_train_time_sums_every_segment(cpu_run):
    steps = RunSpec.load(cpu_run).plan.train_iters
    first = steps // 3
    assert _stages(cpu_run, FakeStages(cpu_run, steps, stop_after=first)) is None  # stopped: the job ended
    assert _stages(cpu_run, FakeStages(cpu_run, steps, stop_after=first)) is None
    record = _stages(cpu_run, FakeStages(cpu_run, steps))
    segments = json.loads((cpu_run / "stages" / "train_segments.json").read_text())["segments"]
    assert [s["steps_done"] for s in segments] == [first, 2 * first, steps]
    assert record["train_time_s"] == 10.0 * steps  # 10 s a step, whichever job ran it
    assert record["tokens_per_s"] == record["D"] / (10.0 * steps) and record["train_segments"] == 3


def test_the_deadline_counts_from_the_job_start(monkeypatch):
    now = 1_700_000_000.0
    monkeypatch.setenv(JOB_START_ENV, str(now - 30 * 60))  # srun, container, torchrun, imports: 30 minutes
    deadline = Deadline.for_job(240, clock=lambda: now)
    assert deadline.margin == 24.0  # 10% of four hours
    assert deadline.usable() == 240 - 30 - 24
    monkeypatch.delenv(JOB_START_ENV)
    assert Deadline.for_job(240, clock=lambda: now).usable() == 240 - 24  # no start given: from now
    assert default_margin(4) == 2.0  # a short test job keeps half of its time
    for bad in ("yesterday", str(now + 3600), "nan"):
        monkeypatch.setenv(JOB_START_ENV, bad)
        with pytest.raises(SynthscaleError, match=JOB_START_ENV):
            Deadline.for_job(240, clock=lambda: now)


def test_no_stage_starts_inside_the_margin_and_training_gets_what_is_left(cpu_run):
    steps = RunSpec.load(cpu_run).plan.train_iters
    clock = [0.0]
    deadline = Deadline(60, 10, clock=lambda: clock[0])
    clock[0] = 20 * 60
    backend = FakeStages(cpu_run, steps, stop_after=1)
    assert _stages(cpu_run, backend, deadline) is None
    assert backend.usable == [60 - 20 - 10]  # limit - elapsed - margin
    clock[0] = 55 * 60  # 5 minutes left, inside the margin
    backend = FakeStages(cpu_run, steps)
    assert _stages(cpu_run, backend, deadline) is None and backend.usable == []
    _stages(cpu_run, FakeStages(cpu_run, steps), stage="train")
    backend = FakeStages(cpu_run, steps)
    assert _stages(cpu_run, backend, deadline) is None and backend.evaluated == []
