"""NeMo-Run on Slurm, shared by `recipes` (training sweeps) and `generation` (sharded corpora).

One launch path: a NeMo-Run `SlurmExecutor` per job array, whose sbatch script NeMo-Run writes
(with pyxis container flags, and for torchrun the multi-node rendezvous on the head node). What
this module adds:

  - **job arrays**: one job per group of work items with the same resources; task i takes line
    i + 1 of a list file written next to the script (`item_lines`), so an array never needs
    re-rendering to know its work;
  - **requeue until complete**: the script installs an EXIT trap (`requeue_lines`) that, after the
    task's command returns, requeues the array task (`scontrol requeue ARRAYID_TASKID`) when its item
    is not complete *and* its progress stamp changed during this attempt (a checkpoint advanced, a
    shard committed more output), up to `max_requeues` times. A task that made no progress (a crash
    at start-up, a bad config) is not requeued: rerunning the submitting command picks it up once
    the cause is fixed; it leaves a report of why (with its log's tail) for the rerun to show. A
    refused `scontrol requeue` fails the task loudly (exit 3). The trap runs on the batch host,
    outside the container: it uses only POSIX shell, `sed`, `find`, `cksum`, `ps` and `scontrol`;
  - **a script that stands on its own** (`slurm_executor`): `--requeue` (not only on NeMo-Run's
    sbatch command line), `--open-mode=append`, SIGTERM to the task's steps before the time limit
    (`--signal=TERM@N`: trainers save and stop, the trap requeues), and SYNTHSCALE_JOB_START
    exported first, for deadlines that count from the job's start;
  - **no container needed**: without an image the tasks run in the submitting Python environment
    (its bin folder first on PATH), as on a cluster with a shared virtualenv;
  - **which tasks are live**: `active_array_tasks` asks `squeue --array`, per task, and raises
    `QueueUnavailable` when it cannot tell;
  - **dry runs through NeMo-Run's public functions**: `render_script` packages the task for the
    executor (`packaging.package`) and asks NeMo-Run's torchx runner for a dry run
    (`torchx_backend.launcher.launch(..., dryrun=True)`); for Slurm the text is the sbatch script
    (`SlurmBatchRequest.materialize()`), for the others the request NeMo-Run would run.

Nothing here imports `recipes` or `generation`; `nemo_run` is imported only when used.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from synthscale.errors import SynthscaleError
from synthscale.files import write_text_atomic

DEFAULT_TIME = "04:00:00"
DEFAULT_MAX_REQUEUES = 50
# NeMo-Run's home in an array folder. Not "nemo_run": without a container NeMo-Run 0.11 rewrites every
# "/nemo_run" of the sbatch script (its in-container job folder) into the job folder, paths included.
NEMO_RUN_DIR = "nemorun"
DEFAULT_SIGNAL_MARGIN_S = 120  # SIGTERM this long before the time limit (Slurm may send it up to 60 s early)


def import_nemo_run(home: str | Path):
    """`nemo_run` with NEMORUN_HOME (its experiment bookkeeping) at `home`, never the home folder."""
    home = str(Path(home).resolve())
    os.environ["NEMORUN_HOME"] = home
    import nemo_run
    from nemo_run import config as nemo_run_config

    nemo_run_config.set_nemorun_home(home)
    return nemo_run


_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def time_minutes(text: str) -> int:
    """Minutes in a Slurm time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS."""
    match = _TIME.match(text.strip())
    if not match:
        raise SynthscaleError(f"--slurm-time {text!r}: expected a Slurm time such as 04:00:00 or 2-00:00:00")
    days, a, b, c = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = int(a), int(b or 0), int(c or 0)
    elif c is not None:  # HH:MM:SS
        hours, minutes, seconds = int(a), int(b), int(c)
    else:  # MM or MM:SS
        hours, minutes, seconds = 0, int(a), int(b or 0)
    total = int(days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)
    if total < 1:
        raise SynthscaleError(f"--slurm-time {text!r}: must be at least one minute")
    return total


@dataclass(frozen=True)
class SlurmSettings:
    """What every Slurm job of a launch shares (resources may differ per array)."""

    account: str
    partition: str | None = None
    time: str = DEFAULT_TIME
    container_image: str | None = None
    mounts: tuple[str, ...] = ()
    max_requeues: int = DEFAULT_MAX_REQUEUES
    array_parallelism: int | None = None  # at most this many tasks of an array at once (`%N`)
    env: dict = field(default_factory=dict)
    signal_margin_s: int = DEFAULT_SIGNAL_MARGIN_S

    def __post_init__(self) -> None:
        if not self.account:
            raise SynthscaleError("executor slurm: --slurm-account is required")
        time_minutes(self.time)
        if self.max_requeues < 0:
            raise SynthscaleError(f"max_requeues must be >= 0, got {self.max_requeues}")
        if self.array_parallelism is not None and self.array_parallelism < 1:
            raise SynthscaleError(f"array parallelism must be >= 1, got {self.array_parallelism}")
        if not 0 < self.signal_margin_s < 65536:
            raise SynthscaleError(f"signal margin must be 1..65535 s, got {self.signal_margin_s}")

    @property
    def minutes(self) -> int:
        return time_minutes(self.time)


def array_spec(count: int, parallelism: int | None = None) -> str:
    if count < 1:
        raise SynthscaleError("a job array needs at least one task")
    return f"0-{count - 1}" + (f"%{parallelism}" if parallelism else "")


# Job states in which a task may still run (or run again): everything but the final states.
ACTIVE_STATES = ("PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD",
                 "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "SPECIAL_EXIT")


class QueueUnavailable(SynthscaleError):
    """`squeue` is missing or failed: which tasks are queued or running is unknown."""


def _task_ids(text: str) -> list[int]:
    """Task ids in squeue's %K: `3`, or a range set such as `[1-4,7]%2` (arrays not yet split)."""
    text = text.strip().strip("[]").split("%", 1)[0].rstrip("]")
    ids: list[int] = []
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            return []  # N/A: not an array job
        ids.extend(range(int(low), int(high or low) + 1))
    return ids


def active_array_tasks(job_names: list[str] | tuple[str, ...], timeout: float = 60) -> set[tuple[str, int]]:
    """{(job name, array task id)} of the tasks of these jobs that Slurm lists as queued, running or
    requeued (one line per task: `squeue --array`). QueueUnavailable when squeue is missing or fails."""
    import subprocess

    if not job_names:
        return set()
    command = ["squeue", "--noheader", "--array", "--format=%j %K", f"--states={','.join(ACTIVE_STATES)}",
               f"--name={','.join(job_names)}"]
    try:
        listed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise QueueUnavailable("squeue not found (not a Slurm machine?)") from None
    except subprocess.TimeoutExpired:
        raise QueueUnavailable(f"squeue did not answer within {timeout:.0f} s") from None
    if listed.returncode != 0:
        raise QueueUnavailable(f"squeue failed (exit {listed.returncode}): {listed.stderr.strip()[:200]}")
    wanted, tasks = set(job_names), set()
    for line in listed.stdout.splitlines():
        name, _, ids = line.strip().rpartition(" ")
        if name in wanted:
            tasks.update((name, task) for task in _task_ids(ids))
    return tasks


def write_item_list(path: str | Path, items: list[str]) -> Path:
    """The array's work list: task i takes line i + 1."""
    for item in items:
        if not item or "\n" in item:
            raise SynthscaleError(f"array item {item!r}: must be one non-empty line")
    write_text_atomic(path, "".join(f"{item}\n" for item in items))
    return Path(path)


def item_lines(list_file: str | Path, var: str = "SYNTHSCALE_ITEM") -> str:
    """Shell that sets `$var` to this array task's line of `list_file` (exported to the task)."""
    q = shlex.quote(str(list_file))
    return (
        f'{var}=$(sed -n "$((${{SLURM_ARRAY_TASK_ID:-0}} + 1))p" {q})\n'
        f'if [ -z "${var}" ]; then echo "synthscale: no line $((${{SLURM_ARRAY_TASK_ID:-0}} + 1)) in {q}" >&2; exit 2; fi\n'
        f"export {var}"
    )


def job_start_lines() -> str:
    """Shell that exports SYNTHSCALE_JOB_START (epoch seconds): when this job started, for deadlines
    that must count srun, container start, torchrun and imports. Slurm's own value where it exports
    one (SLURM_JOB_START_TIME, Slurm >= 23.02), else the batch shell's start (now minus its age)."""
    return ('synthscale_age=$(ps -o etimes= -p $$ 2>/dev/null | tr -d " ")\n'
            'export SYNTHSCALE_JOB_START=${SLURM_JOB_START_TIME:-$(( $(date +%s) - ${synthscale_age:-0} ))}')


def requeue_lines(complete_test: str, progress_stamp: str, max_requeues: int, var: str = "SYNTHSCALE_ITEM",
                  report_file: str | None = None) -> str:
    """Shell (for the executor's setup_lines) that requeues this array task at exit while its item
    is incomplete and made progress. `complete_test` is a shell test of the item (`$var`);
    `progress_stamp` prints something that changes when the item makes progress.

    A failed `scontrol requeue` (a job that is not requeueable, a controller that is down) is an
    error: the task says so on stderr and exits 3, never ends as if requeued. When the task ends
    with its item incomplete and not requeued, `report_file` (a shell word, e.g.
    `"$SYNTHSCALE_ITEM/slurm-stopped.txt"`) gets why and the end of the task's srun log, for the
    rerun to show; it is removed when an attempt starts."""
    report = report_file or "/dev/null"
    # never `rm -f /dev/null`: as root that deletes the machine's null device
    forget_report = f"rm -f {report_file} 2>/dev/null" if report_file else ": no report file"
    return f"""\
# synthscale: requeue this task until its item is complete, while it makes progress
synthscale_stamp() {{ {progress_stamp} ; }}
synthscale_stamp_before=$(synthscale_stamp)
{forget_report}
# this task alone: in an array, SLURM_JOB_ID of one task is the array's id, and requeueing it requeues
# (cancels and restarts) every task of the array
synthscale_job=${{SLURM_ARRAY_JOB_ID:+${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}}}
synthscale_job=${{synthscale_job:-$SLURM_JOB_ID}}
synthscale_stopped() {{
    echo "synthscale: $1"
    synthscale_out=$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null | sed -n 's/.* StdOut=\\([^ ]*\\).*/\\1/p')
    synthscale_log=$(ls -t "${{synthscale_out%/*}}"/log-*_"${{SLURM_JOB_ID}}"_*.out 2>/dev/null | head -n 1)
    {{ echo "job $synthscale_job (job id $SLURM_JOB_ID, restart ${{SLURM_RESTART_COUNT:-0}}) at $(date -u +%FT%TZ): $1"
      echo "log: ${{synthscale_log:-$synthscale_out}}"; tail -n 25 "${{synthscale_log:-$synthscale_out}}" 2>/dev/null; }} > {report} || true
}}
synthscale_requeue() {{
    synthscale_status=$?
    if {complete_test}; then echo "synthscale: ${var} complete"; return 0; fi
    if [ "$(synthscale_stamp)" = "$synthscale_stamp_before" ]; then
        synthscale_stopped "${var} incomplete and made no progress in this attempt (exit $synthscale_status): not requeued"
        return 0
    fi
    if [ "${{SLURM_RESTART_COUNT:-0}}" -ge {int(max_requeues)} ]; then
        synthscale_stopped "${var} incomplete after {int(max_requeues)} requeues: not requeued"
        return 0
    fi
    echo "synthscale: ${var} incomplete, progress made: requeue $synthscale_job"
    if scontrol requeue "$synthscale_job"; then return 0; fi
    synthscale_stopped "ERROR: scontrol requeue $synthscale_job failed: ${var} stays incomplete; rerun the submitting command"
    echo "synthscale: ERROR: scontrol requeue $synthscale_job failed (see above): ${var} was NOT requeued" >&2
    exit 3
}}
trap synthscale_requeue EXIT"""


def slurm_executor(run, settings: SlurmSettings, *, nodes: int = 1, ntasks_per_node: int = 1,
                   gpus_per_node: int | None = None, launcher: str | None = None, array: str | None = None,
                   setup_lines: str | None = None, env: dict | None = None, time: str | None = None):
    """A NeMo-Run SlurmExecutor. Its job folder (sbatch script, task scripts, logs) is the one NeMo-Run
    writes, NEMORUN_HOME/experiments/<title>/<id>/ (see import_nemo_run): the local tunnel copies
    nothing, so `sbatch` must find the script there.

    The script is requeueable by itself (`#SBATCH --requeue`, not only through NeMo-Run's sbatch
    command line), appends to its logs across requeues, gets SIGTERM `signal_margin_s` (at most half
    the limit) before its time limit (`--signal=TERM@N`: the task's steps save and stop; the trap requeues), and exports
    SYNTHSCALE_JOB_START first. Without a container image the tasks run in the submitting Python
    environment: its bin folder (python, torchrun, the stage commands) leads PATH."""
    environment = {"PYTHONUNBUFFERED": "1", **settings.env, **(env or {})}
    if settings.container_image is None:
        environment["PATH"] = f"{shlex.quote(str(Path(sys.executable).parent))}:$PATH"
        for text in (os.environ.get("NEMORUN_HOME", ""), setup_lines or "", *environment.values()):
            if "/nemo_run" in text:  # NeMo-Run would rewrite it (NEMO_RUN_DIR)
                path = next(word for word in re.split(r"[\s'\"=:]+", text) if "/nemo_run" in word)
                raise SynthscaleError(f"{path}: without --container-image NeMo-Run rewrites '/nemo_run' in the "
                                      "sbatch script's paths; use a folder whose path does not contain it")
    return run.SlurmExecutor(
        account=settings.account,
        partition=settings.partition,
        nodes=nodes,
        ntasks_per_node=ntasks_per_node,
        gpus_per_node=gpus_per_node,
        time=time or settings.time,
        container_image=settings.container_image,
        container_mounts=list(settings.mounts) if settings.container_image else [],
        tunnel=run.LocalTunnel(job_dir=""),  # "": NEMORUN_HOME/experiments, where NeMo-Run writes the job
        packager=run.Packager(),  # synthscale is installed (image or submitting environment): nothing to package
        launcher=launcher,
        array=array,
        signal=f"TERM@{min(settings.signal_margin_s, time_minutes(time or settings.time) * 30)}",  # <= half the limit
        open_mode="append",
        additional_parameters={"requeue": True},
        setup_lines="\n".join(filter(None, [job_start_lines(), setup_lines])),
        env_vars=environment,
    )


@contextlib.contextmanager
def quiet():
    """NeMo-Run prints banners and progress to stdout: keep the CLI's output ours (and `--json`'s
    stdout pure). Its shell commands (invoke) mirror stdin: give them an empty one, so they neither
    eat the caller's input nor fail where stdin cannot be read (pytest)."""
    stdin = sys.stdin
    sys.stdin = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        sys.stdin = stdin


def render_script(run, executor, task, name: str, experiment_dir: str | Path) -> str:
    """What NeMo-Run would launch, through its public dry-run path: for Slurm the sbatch script."""
    from nemo_run.run.torchx_backend.launcher import launch
    from nemo_run.run.torchx_backend.packaging import package
    from nemo_run.run.torchx_backend.runner import get_runner
    from nemo_run.run.torchx_backend.schedulers.api import get_executor_str

    experiment_dir = Path(experiment_dir).resolve()
    executor = executor.clone()
    executor.assign(name, str(experiment_dir), name, name)
    with quiet():
        executor.create_job_dir()
        app = package(name, task, executor=executor, serialize_to_file=True)
        _, info = launch(app, get_executor_str(executor), executor, dryrun=True, runner=get_runner())
    request = info.request
    return request.materialize() if hasattr(request, "materialize") else str(info)


def submit(run, executor, task, name: str, wait: bool = False) -> None:
    """Launch through a NeMo-Run Experiment: Slurm submits (sbatch) and returns; others wait."""
    experiment = run.Experiment(name, executor=executor, log_level="WARN")
    with quiet() if not wait else contextlib.nullcontext(), experiment:
        experiment.add(task, name=name, tail_logs=wait)
        experiment.run(detach=not wait)
