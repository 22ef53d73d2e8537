"""This job, as the stage runner sees it: its deadline, the stop signals Slurm sends, and the run of
an array task.

The deadline counts from the job's start, `SYNTHSCALE_JOB_START` (epoch seconds, exported by the
sbatch script as its first line, before srun, container start, torchrun and imports; synthscale.slurm),
else from when the Deadline is made: with `--time-limit` (the Slurm job's), a stage may use what is
left minus a margin kept for the last checkpoint and the exit.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from synthscale.errors import SynthscaleError

JOB_START_ENV = "SYNTHSCALE_JOB_START"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


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


def run_from_list(run_list: str | Path, task_id: int | None = None) -> Path:
    """The run folder of this array task: line SLURM_ARRAY_TASK_ID + 1 of the run list."""
    task_id = int(os.environ.get("SLURM_ARRAY_TASK_ID", "0")) if task_id is None else task_id
    lines = [line.strip() for line in Path(run_list).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not 0 <= task_id < len(lines):
        raise SynthscaleError(f"array task {task_id}: {run_list} lists {len(lines)} runs")
    return Path(lines[task_id])
