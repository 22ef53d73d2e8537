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

The deadline counts from the job's start, `SYNTHSCALE_JOB_START` (epoch seconds, exported by the
sbatch script before srun, container start, torchrun and imports), else from when it is made.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from recipes.results import build_result, check_scores, is_complete, write_result
from recipes.run_spec import RunSpec
from synthscale.errors import MissingInputError, SynthscaleError
from synthscale.files import write_json_atomic

JOB_START_ENV = "SYNTHSCALE_JOB_START"
TRAIN_SEGMENTS = "train_segments.json"
TRAIN_DONE = "train_done.json"
EVAL_SCORES = "eval_scores.json"
STAGES_HELP = "all, train or eval:DOMAIN"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class CheckpointNotFinal(MissingInputError):
    """The checkpoint to evaluate is missing or is not the run's final iteration."""


class EvalScoreInvalid(SynthscaleError):
    """An evaluation gave a score that is not a finite loss over a positive number of tokens."""


# --- time ---------------------------------------------------------------------------------------
def default_margin(limit_minutes: float) -> float:
    """Minutes kept for the last checkpoint and the exit: 10 or 10% of the limit, at most half of it."""
    return min(max(10.0, 0.1 * limit_minutes), 0.5 * limit_minutes)


def job_start(environ: dict | None = None, now: float | None = None) -> float | None:
    """The job's start (epoch seconds) from SYNTHSCALE_JOB_START, or None when it is not set."""
    text = (os.environ if environ is None else environ).get(JOB_START_ENV, "").strip()
    if not text:
        return None
    now = time.time() if now is None else now
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value > now + 60:
        raise SynthscaleError(f"{JOB_START_ENV}={text!r}: expected the job's start in epoch seconds "
                              f"(`date +%s`), not after now ({now:.0f})")
    return value


@dataclass
class Deadline:
    """Minutes left in this job (None: no limit) and the margin kept for checkpoints and exits.

    `started` is the job's start in the `clock`'s seconds (epoch seconds for `time.time`)."""

    limit: float | None
    margin: float | None = None
    started: float | None = None
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if self.limit is not None and not self.limit > 0:
            raise SynthscaleError(f"--time-limit {self.limit}: must be a positive number of minutes")
        if self.margin is None:
            self.margin = default_margin(self.limit) if self.limit else 0.0
        if self.margin < 0:
            raise SynthscaleError(f"time margin {self.margin}: must be >= 0 minutes")
        if self.started is None:
            self.started = self.clock()

    @classmethod
    def for_job(cls, limit: float | None, margin: float | None = None, environ: dict | None = None,
                clock: Callable[[], float] = time.time) -> "Deadline":
        """Counting from SYNTHSCALE_JOB_START when it is set, else from now."""
        return cls(limit, margin, job_start(environ, clock()), clock)

    def elapsed(self) -> float:
        return (self.clock() - self.started) / 60.0

    def left(self) -> float | None:
        return None if self.limit is None else self.limit - self.elapsed()

    def usable(self) -> float | None:
        left = self.left()
        return None if left is None else left - self.margin


class StopSignals:
    """SIGTERM / SIGUSR1 (Slurm's `--signal`, `scancel --signal`) ask the stages to stop: once one
    has arrived no stage starts (a trainer that handles them itself saves and returns meanwhile)."""

    def __init__(self) -> None:
        self.received: int | None = None

    def install(self) -> "StopSignals":
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def __call__(self) -> bool:
        return self.received is not None


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

    def scores(self) -> dict[str, dict]:
        """Saved scores; an invalid one (saved by an older version) is dropped, to be evaluated again."""
        saved = self._read(EVAL_SCORES) or {}
        return {domain: score for domain, score in saved.items() if invalid_score(score) is None}

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
    state = world.share((is_complete(run_dir), files.done() is not None, files.scores()) if world.is_writer else None)
    complete, trained, scores = state
    if complete:
        return None

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
    for domain in spec.eval_domains:
        if domain in scores or stage not in ("all", f"eval:{domain}"):
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
        score["time_s"] = time.perf_counter() - started
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
    if stage != "all" or set(scores) != set(spec.eval_domains):
        return None
    record = write_results(run_dir, spec, files, {**(extra or {}), "world_size": world.size}) if world.is_writer else None
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


def write_results(run_dir: Path, spec: RunSpec, files: StageFiles, extra: dict) -> dict:
    """results.json from the stage files (training done, every domain scored)."""
    done, scores = files.done(), files.scores()
    if done is None or set(scores) != set(spec.eval_domains):
        raise SynthscaleError(f"run {spec.run_id}: stages unfinished in {files.folder} (trained: {done is not None}, "
                              f"scored: {sorted(scores)} of {sorted(spec.eval_domains)})")
    train_time_s = float(done["train_time_s"])
    record = build_result(
        spec, spec.load_blend(), {d: scores[d] for d in spec.eval_domains}, done["loss_curve"],
        wall_time_s=train_time_s + sum(float(s.get("time_s", 0.0)) for s in scores.values()),
        train_time_s=train_time_s, extra={**extra, "train_segments": int(done.get("segments", 1))},
    )
    write_result(run_dir, record)
    return record


def run_from_list(run_list: str | Path, task_id: int | None = None) -> Path:
    """The run folder of this array task: line SLURM_ARRAY_TASK_ID + 1 of the run list."""
    task_id = int(os.environ.get("SLURM_ARRAY_TASK_ID", "0")) if task_id is None else task_id
    lines = [line.strip() for line in Path(run_list).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not 0 <= task_id < len(lines):
        raise SynthscaleError(f"array task {task_id}: {run_list} lists {len(lines)} runs")
    return Path(lines[task_id])
