"""The staged run every multi-rank backend shares: train, all ranks agree that training is done,
evaluate each domain, write results.json (Bridge: recipes.bridge_entry; megatron-core:
recipes.megatron.entry).

A run goes through its stages over as many jobs as it needs (a Slurm task stops before its time
limit with a checkpoint, the sbatch trap requeues it, the next job continues). The run's stage
folder (`RUN/bridge/`, `RUN/megatron/`) keeps what earlier jobs finished (docs/formats.md):
`train_segments.json` (one entry per job that trained: results.json's `train_time_s` is their
sum, so tokens/s counts every segment; `wall_time_s` adds the evaluation calls), `train_done.json`
(training reached train_iters: train time and loss curve) and `eval_scores.json` (domains scored
so far). Each score is checked *before* it is saved: an invalid one (NaN) is reported once, with
its domain (`EvalScoreInvalid`), and never saved, so the next attempt evaluates that domain again
and the requeue trap (which compares this file) does not count it as progress; an invalid score
saved by an older version is dropped when read.

All ranks take every decision together (`World`), so no rank leaves while another waits in a
collective: whether training finished is read by every rank after a barrier and agreed; the stage
files, the time left and the evaluation scores are the writer rank's, broadcast. The writer is the
last rank, on the last pipeline stage, where megatron reduces the losses. An error all ranks share
(an invalid score, a checkpoint that is not final) is raised on the writer rank only, so it is
reported once; the other ranks return None.

The time a stage may use comes from the job's deadline (recipes.job).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from recipes.job import Deadline
from recipes.evaluation import eval_identity
from recipes.results import (add_domain_scores, build_result, check_scores, is_complete, load_result,
                             requested_definition, stale_domains, write_result)
from recipes.run_spec import RESULTS_FILE, RunSpec
from synthscale.errors import MissingInputError, SynthscaleError
from synthscale.files import write_json_atomic

TRAIN_SEGMENTS = "train_segments.json"
TRAIN_DONE = "train_done.json"
EVAL_SCORES = "eval_scores.json"
STAGES_HELP = "all, train or eval:DOMAIN"


class CheckpointNotFinal(MissingInputError):
    """The checkpoint to evaluate is missing or is not the run's final iteration."""


class EvalScoreInvalid(SynthscaleError):
    """An evaluation gave a score that is not a finite loss over a positive number of tokens."""


# --- ranks --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class World:
    """This process's rank and the collectives the stages decide with (torch.distributed's
    default group; a world of one needs none)."""

    rank: int = 0
    size: int = 1

    @classmethod
    def current(cls) -> "World":
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size > 1:
            raise SynthscaleError(f"WORLD_SIZE={size} but torch.distributed is not initialised: "
                                  f"the ranks could not agree on the run's stages")
        return cls()

    @property
    def writer(self) -> int:
        return self.size - 1

    @property
    def is_writer(self) -> bool:
        return self.rank == self.writer

    def gather(self, value: Any) -> list:
        if self.size == 1:
            return [value]
        import torch.distributed as dist

        values: list = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def share(self, value: Any) -> Any:
        """The writer rank's `value`, on every rank."""
        if self.size == 1:
            return value
        import torch.distributed as dist

        box = [value if self.is_writer else None]
        dist.broadcast_object_list(box, src=self.writer)
        return box[0]

    def agree(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on every rank."""
        return all(self.gather(bool(flag)))

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()


# --- what a backend provides ---------------------------------------------------------------------
@dataclass(frozen=True)
class TrainSegment:
    """One training call: its time, the run's loss curve so far ([[step, loss], ...], steps 1..k)."""

    train_time_s: float
    loss_curve: list = field(default_factory=list)
    steps_done: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.train_time_s) and self.train_time_s >= 0):
            raise ValueError(f"train_time_s must be a finite number >= 0, got {self.train_time_s}")


class StageBackend(Protocol):
    """The four things a backend does for the stage runner, on every rank."""

    min_minutes: float  # the least usable time (past the margin) worth starting a stage with

    def train(self, usable_minutes: float | None) -> TrainSegment:
        """Train or resume until done or `usable_minutes` pass (then save a checkpoint and return)."""

    def training_finished(self) -> bool:
        """This rank sees the final checkpoint (called after a barrier)."""

    def check_final_checkpoint(self) -> None:
        """Raise CheckpointNotFinal unless the final checkpoint is there to evaluate."""

    def evaluate(self, domain: str) -> dict:
        """{loss, tokens, samples} of the final checkpoint on one domain."""


# --- the stage folder -----------------------------------------------------------------------------
@dataclass(frozen=True)
class StageFiles:
    folder: Path

    def _read(self, name: str) -> Any:
        path = self.folder / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SynthscaleError(f"{path}: not valid JSON ({exc}); delete it to redo that stage") from None

    def segments(self) -> list[dict]:
        return list((self._read(TRAIN_SEGMENTS) or {}).get("segments", []))

    def add_segment(self, segment: TrainSegment, finished: bool) -> None:
        entry = {"train_time_s": segment.train_time_s, "steps_done": segment.steps_done, "finished": finished,
                 "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                 "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")), "ended_at": time.time()}
        write_json_atomic(self.folder / TRAIN_SEGMENTS, {"segments": self.segments() + [entry]})

    def train_time_s(self) -> float:
        return sum(float(s["train_time_s"]) for s in self.segments())

    def done(self) -> dict | None:
        """The train-done marker, or None (also for a marker of an older version, without its curve:
        training is entered again and returns at once from the final checkpoint)."""
        marker = self._read(TRAIN_DONE)
        return marker if isinstance(marker, dict) and "loss_curve" in marker else None

    def mark_done(self, loss_curve: list) -> None:
        write_json_atomic(self.folder / TRAIN_DONE, {"train_time_s": self.train_time_s(),
                                                     "segments": len(self.segments()), "loss_curve": loss_curve})

    def scores(self, identities: dict[str, str]) -> dict[str, dict]:
        """Saved scores made under the evaluation definition the run asks for now (`identities`,
        `domain_identities`); one made under another (another --eval-max-tokens, other data) or
        invalid (a NaN saved by an older version) is left out, to be evaluated again."""
        saved = self._read(EVAL_SCORES) or {}
        return {domain: score for domain, score in saved.items()
                if invalid_score(score) is None and score.get("eval_identity") == identities.get(domain)}

    def save_scores(self, scores: dict[str, dict]) -> None:
        write_json_atomic(self.folder / EVAL_SCORES, scores)


def invalid_score(score: Any) -> str | None:
    """Why `score` is not a valid evaluation ({loss, tokens, ...}), or None when it is."""
    try:
        loss, tokens = float(score["loss"]), int(score["tokens"])
    except (KeyError, TypeError, ValueError):
        return f"not a score: {score!r}"
    try:
        check_scores({"": {"loss": loss, "tokens": tokens}})
    except ValueError:
        return f"loss={loss} over {tokens} tokens"
    return None


def domain_identities(spec: RunSpec) -> dict[str, str]:
    """{domain: sha256 of its evaluation definition} as the spec asks now (recipes.results)."""
    definition = requested_definition(spec)
    return {domain: eval_identity(definition, [domain]) for domain in definition}


@dataclass(frozen=True)
class StageState:
    """What the stage files say, read on the writer rank: whether training is done, the scores saved
    under today's definition, the domains this job must have scored (every domain, or, when
    results.json exists, those it lacks or scored under another definition: they are added to it)."""

    trained: bool
    scores: dict
    wanted: tuple[str, ...]
    has_results: bool
    identities: dict

    @classmethod
    def read(cls, run_dir: Path, spec: RunSpec, files: StageFiles) -> "StageState":
        identities = domain_identities(spec)
        if is_complete(run_dir):
            stale = stale_domains(load_result(run_dir / RESULTS_FILE), spec)
            return cls(True, files.scores(identities), tuple(stale), True, identities)
        return cls(files.done() is not None, files.scores(identities), tuple(spec.eval_domains), False, identities)

    def missing(self, scores: dict | None = None) -> list[str]:
        return [domain for domain in self.wanted if domain not in (self.scores if scores is None else scores)]


def _say(world: World, message: str) -> None:
    if world.is_writer:
        print(f"synthscale: {message}", file=sys.stderr, flush=True)


def _check_stage(stage: str, spec: RunSpec) -> None:
    if stage in ("all", "train") or (stage.startswith("eval:") and stage[5:] in spec.eval_domains):
        return
    raise SynthscaleError(f"--stage {stage!r}: expected {STAGES_HELP} (domains: {', '.join(spec.eval_domains)})")


# --- the stages -----------------------------------------------------------------------------------
def run_stages(run_dir: str | Path, spec: RunSpec, backend: StageBackend, files: StageFiles, deadline: Deadline,
               world: World, stage: str = "all", extra: dict | None = None,
               stop: Callable[[], bool] | None = None) -> dict | None:
    """Train (or resume), agree that training is done, evaluate the domains left, write results.json.

    Returns the record on the writer rank once complete, else None (not finished in this job: it
    continues when run again). `stage` limits the call to training or one domain's evaluation;
    `extra` goes into results.json (device, precision); once `stop()` is true on any rank (a
    signal, `StopSignals`) no further stage starts."""
    run_dir = Path(run_dir).resolve()
    _check_stage(stage, spec)
    state = world.share(StageState.read(run_dir, spec, files) if world.is_writer else None)
    if state.has_results and not state.wanted:
        return None  # complete
    trained, scores = state.trained, dict(state.scores)

    if not trained and stage in ("all", "train"):
        start, usable = _may_start(world, deadline, backend, stop, f"{spec.run_id}: training")
        if not start:
            return None
        segment = backend.train(usable)
        world.barrier()  # every rank's part of the checkpoint is saved before any rank looks
        trained = world.agree(backend.training_finished())
        if world.is_writer:
            files.add_segment(segment, finished=trained)
            if trained:
                files.mark_done(segment.loss_curve)
        world.barrier()  # the stage files are written before any rank goes on or leaves
    if not trained or stage == "train":
        return None

    invalid: dict[str, str] = {}
    for domain in state.missing():
        if stage not in ("all", f"eval:{domain}"):
            continue
        if not _may_start(world, deadline, backend, stop, f"{spec.run_id}: evaluation of {domain!r}")[0]:
            break
        problems = [p for p in world.gather(_final_checkpoint_problem(backend)) if p]
        if problems:
            if world.is_writer:
                raise CheckpointNotFinal(problems[0])
            return None
        started = time.perf_counter()
        score = dict(backend.evaluate(domain))
        score.update(time_s=time.perf_counter() - started, eval_identity=state.identities.get(domain))
        score = world.share(score)
        reason = invalid_score(score)
        if reason is not None:
            invalid[domain] = reason
            continue
        scores[domain] = score
        if world.is_writer:
            files.save_scores(scores)
    world.barrier()
    if invalid:
        if world.is_writer:
            raise EvalScoreInvalid(
                f"run {spec.run_id}: invalid evaluation of {', '.join(f'domain {d!r} ({why})' for d, why in invalid.items())}; "
                f"not saved: the next attempt evaluates it again from the final checkpoint")
        return None
    if stage != "all" or state.missing(scores):
        return None
    record = write_results(run_dir, spec, files, state, {**(extra or {}), "world_size": world.size}) \
        if world.is_writer else None
    world.barrier()  # results.json exists before any rank exits
    return record


def _may_start(world: World, deadline: Deadline, backend: StageBackend, stop: Callable[[], bool] | None,
               what: str) -> tuple[bool, float | None]:
    """(whether a stage may start, the minutes it may use): the writer's time left, on every rank,
    past the backend's minimum, and no stop signal on any rank."""
    usable = world.share(deadline.usable())
    if usable is not None and usable < backend.min_minutes:
        _say(world, f"{what} not started: {usable:.1f} min usable before the time limit's margin")
        return False, usable
    if stop is not None and any(world.gather(bool(stop()))):
        _say(world, f"{what} not started: a stop signal was received")
        return False, usable
    return True, usable


def _final_checkpoint_problem(backend: StageBackend) -> str | None:
    try:
        backend.check_final_checkpoint()
    except CheckpointNotFinal as exc:
        return str(exc)
    return None


def write_results(run_dir: Path, spec: RunSpec, files: StageFiles, state: StageState, extra: dict) -> dict:
    """results.json from the stage files: written when training is done and every domain scored, or
    with the domains scored again added to it (recipes.results.add_domain_scores)."""
    done, scores = files.done(), files.scores(state.identities)
    if state.missing(scores) or not (done or state.has_results):
        raise SynthscaleError(f"run {spec.run_id}: stages unfinished in {files.folder} (trained: {done is not None}, "
                              f"scored: {sorted(scores)}, wanted: {sorted(state.wanted)})")
    if state.has_results:
        record = add_domain_scores(load_result(run_dir / RESULTS_FILE), spec, {d: scores[d] for d in state.wanted})
        write_result(run_dir, record)
        return record
    train_time_s = float(done["train_time_s"])
    record = build_result(
        spec, spec.load_blend(), {d: scores[d] for d in spec.eval_domains}, done["loss_curve"],
        wall_time_s=train_time_s + sum(float(s.get("time_s", 0.0)) for s in scores.values()),
        train_time_s=train_time_s, extra={**extra, "train_segments": int(done.get("segments", 1))},
    )
    write_result(run_dir, record)
    return record
