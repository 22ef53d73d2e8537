"""The staged run (recipes.run_stages) with fake train/evaluate callables: invalid scores are never
saved and are evaluated again; train time sums every segment; the deadline counts from the job's
start. (Two real ranks: tests/recipes/test_bridge_entry.py and test_megatron_entry.py.)"""

from __future__ import annotations

import json
import math
from dataclasses import replace
import time
from pathlib import Path

import pytest

from recipes.run_spec import RunSpec
from recipes.job import JOB_START_ENV, Deadline, default_margin
from recipes.run_stages import EvalScoreInvalid, StageFiles, TrainSegment, World, domain_identities, run_stages
from synthscale.errors import SynthscaleError
from tests.recipes.helpers import invoke, sweep_args


class FakeStages:
    """Training saves 'checkpoints/step' on rank 0 (as megatron's checkpoint writer does); evaluation
    returns the score (NaN where `nan_domains` say). Each makes a collective when torch.distributed
    is initialised, as megatron's do."""

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


def test_an_invalid_score_is_not_saved_and_the_next_attempt_scores_it_again(cpu_run):
    steps = RunSpec.load(cpu_run).plan.train_iters
    files = StageFiles(cpu_run / "stages")
    with pytest.raises(EvalScoreInvalid, match=r"domain 'news' \(loss=nan over \d+ tokens\)"):
        _stages(cpu_run, FakeStages(cpu_run, steps, nan_domains={"news"}))
    assert set(files.scores(domain_identities(RunSpec.load(cpu_run)))) == {"wiki"}
    saved = (cpu_run / "stages" / "eval_scores.json").read_bytes()
    with pytest.raises(EvalScoreInvalid, match="news"):
        _stages(cpu_run, FakeStages(cpu_run, steps, nan_domains={"news"}))
    assert (cpu_run / "stages" / "eval_scores.json").read_bytes() == saved  # no progress for the requeue trap
    backend = FakeStages(cpu_run, steps)
    assert _stages(cpu_run, backend)["eval"]["news"]["loss"] == 3.0 and backend.evaluated == ["news"]


def test_a_nan_saved_by_an_older_version_is_evaluated_again(cpu_run):
    steps = RunSpec.load(cpu_run).plan.train_iters
    _stages(cpu_run, FakeStages(cpu_run, steps), stage="train")
    identities = domain_identities(RunSpec.load(cpu_run))
    saved = {d: {**FakeStages(cpu_run, steps).evaluate(d), "eval_identity": identities[d]} for d in ("wiki", "news")}
    saved["news"]["loss"] = math.nan
    (cpu_run / "stages" / "eval_scores.json").write_text(json.dumps(saved))
    backend = FakeStages(cpu_run, steps)
    assert _stages(cpu_run, backend) is not None and backend.evaluated == ["news"]


def test_scores_of_another_evaluation_definition_are_made_again_and_results_rescored(cpu_run):
    spec = RunSpec.load(cpu_run)
    steps = spec.plan.train_iters
    _stages(cpu_run, FakeStages(cpu_run, steps, nan_domains={"news"}), stage="train")
    with pytest.raises(EvalScoreInvalid):
        _stages(cpu_run, FakeStages(cpu_run, steps, nan_domains={"news"}))  # wiki saved, news not
    replace(spec, eval_max_tokens=1024).save(cpu_run)  # a rerun asks for fewer eval tokens
    backend = FakeStages(cpu_run, steps)
    record = _stages(cpu_run, backend)
    assert backend.evaluated == ["wiki", "news"]  # wiki's saved score was made on other windows
    fewer = record["eval"]["wiki"]["tokens"]
    assert fewer == record["eval_identity"]["definition"]["wiki"]["tokens"] <= 1024
    # a complete run asked for another definition again: scored again from its checkpoint, no training
    spec.save(cpu_run)
    backend = FakeStages(cpu_run, steps)
    record = _stages(cpu_run, backend)
    assert sorted(backend.evaluated) == ["news", "wiki"] and backend.usable == []
    assert record["eval"]["wiki"]["tokens"] == record["eval_identity"]["definition"]["wiki"]["tokens"] > fewer
    assert json.loads((cpu_run / "results.json").read_text())["eval_identity"] == record["eval_identity"]
    backend = FakeStages(cpu_run, steps)
    assert _stages(cpu_run, backend) is None and backend.evaluated == []  # complete: nothing to do


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
