"""recipes.job: the job's start and deadline as the stage runner sees them, the stop signals Slurm
sends, and which run folder an array task takes.

Start times and clocks are passed through the `environ` / `clock` arguments (the job's environment as
the sbatch script exports it), never set in this process's os.environ: a wrapper that read os.environ
instead of what it is given would see no job start here, and the tests say so.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from recipes.job import JOB_START_ENV, STOP_SIGNALS, Deadline, StopSignals, job_start, run_from_list
from synthscale.errors import SynthscaleError

STARTED = 1_700_000_000.0  # the job's start, epoch seconds (`date +%s` in the sbatch script)


@pytest.fixture(autouse=True)
def no_job_start_in_this_process(monkeypatch):
    """This process is not a Slurm job: whatever counts from a job start must take it from its arguments."""
    monkeypatch.delenv(JOB_START_ENV, raising=False)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)


def test_job_start_reads_the_environment_it_is_given():
    assert job_start({JOB_START_ENV: f" {STARTED:.0f}\n"}, now=STARTED + 5) == STARTED
    assert job_start({JOB_START_ENV: ""}, now=STARTED) is None
    assert job_start({}, now=STARTED) is None


def test_job_start_without_now_is_held_to_the_real_clock():
    assert job_start({JOB_START_ENV: f"{STARTED:.0f}"}) == STARTED  # 2023: before now
    in_an_hour = time.time() + 3600
    with pytest.raises(SynthscaleError, match="not after now"):
        job_start({JOB_START_ENV: f"{in_an_hour:.0f}"})


def test_job_start_allows_a_minute_of_clock_skew_and_no_more():
    """The sbatch script's clock and this node's may differ a little: up to 60 s after `now` is the
    job's start; later is a wrong value, refused with the value and the `now` it was held to."""
    now = 1_000_000.0
    assert job_start({JOB_START_ENV: "1000060"}, now=now) == 1_000_060.0
    for late in ("1000060.5", "1000061", "1000120"):
        with pytest.raises(SynthscaleError) as refused:
            job_start({JOB_START_ENV: late}, now=now)
        assert str(refused.value) == (f"{JOB_START_ENV}={late!r}: expected the job's start in epoch seconds "
                                      f"(`date +%s`), not after now (1000000)")


@pytest.mark.parametrize("text", ["yesterday", "nan", "inf"])
def test_a_job_start_that_is_not_a_time_is_refused_by_value(text):
    with pytest.raises(SynthscaleError, match=f"{JOB_START_ENV}='{text}': expected the job's start"):
        job_start({JOB_START_ENV: text}, now=STARTED)


def test_the_deadline_counts_from_the_job_start_and_keeps_the_margin_it_is_given():
    """A 120-minute job that started 30 minutes ago (srun, container, imports) has 90 minutes left;
    with a 5-minute margin a stage may use 85 (the default margin would be 12)."""
    now = [STARTED + 30 * 60]
    deadline = Deadline.for_job(120, margin=5, environ={JOB_START_ENV: f"{STARTED:.0f}"}, clock=lambda: now[0])
    assert deadline.started == STARTED and deadline.margin == 5
    assert deadline.elapsed() == pytest.approx(30)
    assert deadline.left() == pytest.approx(90)
    assert deadline.usable() == pytest.approx(85)
    now[0] += 15 * 60  # the clock it was given moves on: 15 minutes fewer
    assert deadline.usable() == pytest.approx(70)


def test_the_deadline_without_a_job_start_counts_from_now_with_the_default_margin():
    now = [STARTED]
    deadline = Deadline.for_job(120, environ={}, clock=lambda: now[0])
    assert deadline.started == STARTED
    assert deadline.margin == 12  # 10% of 120 minutes (more than 10)
    now[0] += 60
    assert deadline.usable() == pytest.approx(120 - 1 - 12)
    unlimited = Deadline.for_job(None, environ={JOB_START_ENV: f"{STARTED:.0f}"}, clock=lambda: now[0])
    assert unlimited.left() is None and unlimited.usable() is None and unlimited.margin == 0


@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_stop_signals_record_a_real_signal(sig):
    """Slurm's `--signal` (SIGUSR1) and its SIGTERM before the kill, sent to this very process."""
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        stop = StopSignals().install()
        assert not stop() and stop.received is None
        os.kill(os.getpid(), sig)
        assert stop() and stop.received == sig
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def test_run_from_list_takes_line_task_id_plus_one(tmp_path, monkeypatch):
    run_list = tmp_path / "runs.txt"
    run_list.write_text("runs/a\n\n  runs/b  \nruns/c\n", encoding="utf-8")
    assert run_from_list(run_list) == run_from_list(run_list, 0) == Path("runs/a")  # no array: task 0
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert run_from_list(run_list) == Path("runs/b")  # blank lines are not runs; spaces are trimmed
    assert run_from_list(run_list, 2) == Path("runs/c")  # an explicit task id wins over the environment


@pytest.mark.parametrize("task", [3, -1])
def test_run_from_list_names_an_out_of_range_task(tmp_path, task):
    run_list = tmp_path / "runs.txt"
    run_list.write_text("runs/a\nruns/b\nruns/c\n", encoding="utf-8")
    with pytest.raises(SynthscaleError) as refused:
        run_from_list(run_list, task)
    assert str(refused.value) == f"array task {task}: {run_list} lists 3 runs"


@pytest.mark.parametrize("limit, margin", [(60, 10.0), (100, 10.0), (300, 30.0), (12, 6.0), (0.5, 0.25)])
def test_the_default_margin_is_ten_minutes_or_ten_percent_and_at_most_half(limit, margin):
    """60 and 100 minutes keep the 10-minute floor (10% would be 6 and 10); 300 keeps 10% (30);
    12 and half a minute keep half the limit (10 would leave nothing). Half a minute is a limit."""
    deadline = Deadline(limit, started=0.0, clock=lambda: 0.0)
    assert deadline.margin == pytest.approx(margin)
    assert deadline.usable() == pytest.approx(limit - margin)


def test_a_limit_that_is_not_positive_and_a_negative_margin_are_refused_by_value():
    with pytest.raises(SynthscaleError, match=r"^--time-limit 0: must be a positive number of minutes$"):
        Deadline(0, started=0.0)
    with pytest.raises(SynthscaleError, match=r"^--time-limit -5: must be a positive number of minutes$"):
        Deadline(-5, started=0.0)
    with pytest.raises(SynthscaleError, match=r"^time margin -1: must be >= 0 minutes$"):
        Deadline(60, margin=-1, started=0.0)
