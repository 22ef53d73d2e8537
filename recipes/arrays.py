"""A sweep on Slurm: one NeMo-Run job array per group of runs with the same resources.

Runs are grouped by what their job asks Slurm for: backend, nodes, ranks per node and whether
they are GPUs or CPU processes, tensor and pipeline parallel sizes, and the time limit. Each group
becomes one array in `RUNS/_arrays/<group>-<hash>/`:

  - `runs.txt`: the runs to launch (not complete, or complete but to be scored again), one run
    folder a line; array task i runs line i + 1 (`bridge_entry --run-list` or `recipes.megatron.entry
    --run-list`, under srun + torchrun);
  - `sbatch.sh`: the script NeMo-Run renders (what `--dry-run` prints), with the requeue trap of
    synthscale.slurm: after the task's command, a run that is not complete but progressed (its
    checkpoint tracker, train-done marker or per-domain scores changed) is
    requeued with `scontrol requeue $SLURM_JOB_ID`, up to `--slurm-max-requeues` times; the
    task stops itself before the time limit (`--time-limit`), saving a checkpoint, so a
    multi-day run continues job after job until results.json exists;
  - `nemorun/`: NeMo-Run's home; its `experiments/` holds the job folder (scripts, logs).

Rerunning the sweep leaves complete runs out, and runs whose array TASK Slurm still lists
(`squeue --array`: queued, running or requeued; the array's job name is in `submitted.json`, task
i is line i + 1 of its runs.txt), and puts every other run (failed, stopped without progress,
never started) in a new array. When squeue cannot say (missing, failing), `active_runs` raises
`QueueUnavailable`: the sweep then submits nothing (recipes.rerun).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from recipes.launchers import ENTRIES, ExecutorSettings, fold_mounts, rank_device
from synthscale import slurm
from synthscale.files import write_text_atomic

ARRAYS_DIR = "_arrays"
RUN_LIST = "runs.txt"
SCRIPT = "sbatch.sh"
SUBMITTED = "submitted.json"
STOPPED_REPORT = "slurm-stopped.txt"  # in a run folder: why its last task ended incomplete and not requeued
# Files whose content changes when a run makes progress (what the requeue trap compares).
PROGRESS_FILES = ("checkpoints/latest_checkpointed_iteration.txt", "bridge/train_done.json", "bridge/eval_scores.json", "megatron/train_done.json",
                  "megatron/eval_scores.json", "results.json")


@dataclass(frozen=True)
class ArrayGroup:
    backend: str
    nodes: int
    gpus_per_node: int  # ranks per node (GPUs, or CPU processes when device is "cpu")
    tensor_parallel: int
    pipeline_parallel: int
    time: str
    device: str = "gpu"  # "gpu": one rank per GPU; "cpu": ranks are CPU processes (megatron's CPU shapes)

    @property
    def label(self) -> str:
        ranks = f"{self.gpus_per_node}{'cpu' if self.device == 'cpu' else ''}"
        return (f"{self.backend}-n{self.nodes}x{ranks}-tp{self.tensor_parallel}-"
                f"pp{self.pipeline_parallel}-t{self.time.replace(':', '')}")


def group_of(planned, settings: ExecutorSettings) -> ArrayGroup:
    layout = planned.spec.layout
    return ArrayGroup(
        backend=planned.spec.backend,
        nodes=layout["num_nodes"],
        gpus_per_node=layout["gpus_per_node"],
        tensor_parallel=layout["tensor_parallel"],
        pipeline_parallel=layout["pipeline_parallel"],
        time=settings.slurm_time,
        device=rank_device(planned.spec),
    )


def group_pending(planned: list, settings: ExecutorSettings) -> dict[ArrayGroup, list]:
    """{group: runs to launch}, in plan order; complete and queued runs are left out."""
    groups: dict[ArrayGroup, list] = {}
    for item in planned:
        if item.launches:
            groups.setdefault(group_of(item, settings), []).append(item)
    return groups


def array_dir(runs_dir: Path, group: ArrayGroup, runs: list) -> Path:
    digest = hashlib.sha256("\n".join(str(r.run_dir) for r in runs).encode()).hexdigest()[:8]
    return Path(runs_dir).resolve() / ARRAYS_DIR / f"{group.label}-{digest}"


def progress_stamp(var: str = "SYNTHSCALE_ITEM") -> str:
    files = " ".join(f'"${var}/{name}"' for name in PROGRESS_FILES)
    return f"for f in {files}; do [ -f \"$f\" ] && cksum \"$f\"; done"


def _mounts(runs: list, settings: ExecutorSettings) -> list[str]:
    from recipes.launchers import container_mounts

    mounts: set[str] = set()
    for item in runs:
        mounts |= set(container_mounts(item.spec, item.blend, item.run_dir))
    folders = {Path(m.split(":", 1)[0]) for m in mounts}
    return fold_mounts(folders, settings.extra_mounts)


def _executor_and_task(run, group: ArrayGroup, runs: list, settings: ExecutorSettings, folder: Path):
    list_file = folder / RUN_LIST
    sset = settings.slurm_settings(_mounts(runs, settings) + [f"{folder}:{folder}"])
    setup = "\n".join([
        slurm.item_lines(list_file),
        slurm.requeue_lines('[ -f "$SYNTHSCALE_ITEM/results.json" ]', progress_stamp(), sset.max_requeues,
                            report_file=f'"$SYNTHSCALE_ITEM/{STOPPED_REPORT}"'),
    ])
    array = slurm.array_spec(len(runs), sset.array_parallelism)
    # srun (one task a node) + torchrun (a rank per GPU or CPU process)
    gpus = group.gpus_per_node if group.device == "gpu" else None
    executor = slurm.slurm_executor(
        run, sset, nodes=group.nodes, ntasks_per_node=group.gpus_per_node,
        gpus_per_node=gpus, launcher="torchrun", array=array, setup_lines=setup)
    if gpus is None:
        executor.cpus_per_task = group.gpus_per_node  # torchrun's ranks share the node's one srun task
    task = run.Script(path=ENTRIES[group.backend], m=True, entrypoint="python",
                      args=["--run-list", str(list_file), "--time-limit", str(sset.minutes)])
    return executor, task


def prepare_array(group: ArrayGroup, runs: list, settings: ExecutorSettings, runs_dir: Path) -> tuple[Path, str]:
    """Write the array folder (run list, sbatch script); return (folder, script)."""
    folder = array_dir(runs_dir, group, runs)
    folder.mkdir(parents=True, exist_ok=True)
    slurm.write_item_list(folder / RUN_LIST, [str(r.run_dir) for r in runs])
    run = slurm.import_nemo_run(folder / slurm.NEMO_RUN_DIR)
    executor, task = _executor_and_task(run, group, runs, settings, folder)
    script = slurm.render_script(run, executor, task, folder.name, folder / slurm.NEMO_RUN_DIR / "dryrun")
    write_text_atomic(folder / SCRIPT, script)
    return folder, script


def submit_array(group: ArrayGroup, runs: list, settings: ExecutorSettings, runs_dir: Path) -> Path:
    """Submit the group's array through NeMo-Run (sbatch); returns the array folder."""
    folder, script = prepare_array(group, runs, settings, runs_dir)
    run = slurm.import_nemo_run(folder / slurm.NEMO_RUN_DIR)
    executor, task = _executor_and_task(run, group, runs, settings, folder)
    slurm.submit(run, executor, task, folder.name)
    mark_submitted(folder, script)
    return folder


def mark_submitted(folder: Path, script: str) -> None:
    """Record that the array went to Slurm, with the job name `squeue` knows it by."""
    match = re.search(r"^#SBATCH --job-name=(\S+)", script, re.M)
    if match is None:
        raise RuntimeError(f"{folder / SCRIPT}: no --job-name line")  # NeMo-Run always writes one
    write_text_atomic(folder / SUBMITTED, json.dumps({"job_name": match.group(1)}) + "\n")


def submitted_arrays(runs_dir: Path) -> dict[str, Path]:
    """{job name: array folder} of the arrays a sweep into runs_dir submitted."""
    arrays = {}
    for marker in sorted((Path(runs_dir) / ARRAYS_DIR).glob(f"*/{SUBMITTED}")):
        arrays[json.loads(marker.read_text())["job_name"]] = marker.parent
    return arrays


def active_runs(runs_dir: Path) -> dict[str, str]:
    """{run folder: "ARRAY task N"} for the runs whose task of a submitted array Slurm still lists
    (queued, running or requeued), per task: the other tasks' runs of that array are not active.
    Raises slurm.QueueUnavailable when arrays were submitted and squeue cannot tell."""
    arrays = submitted_arrays(runs_dir)
    active: dict[str, str] = {}
    for name, task in sorted(slurm.active_array_tasks(sorted(arrays))):
        lines = [line for line in (arrays[name] / RUN_LIST).read_text().splitlines() if line]
        if 0 <= task < len(lines):
            active[lines[task]] = f"{arrays[name].name} task {task}"
    return active


def stopped_report(run_dir: Path) -> str | None:
    """Why the run's last array task ended incomplete without a requeue (the trap's report: what
    happened, and its log), or None."""
    path = Path(run_dir) / STOPPED_REPORT
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "; ".join(lines[:2]) + f" (more in {path})"


def describe(group: ArrayGroup, runs: list, folder: Path) -> str:
    ranks = "GPUs" if group.device == "gpu" else "CPU ranks" if group.gpus_per_node else "CPU process"
    return (f"array {folder.name}: {len(runs)} runs ({group.nodes} nodes x {group.gpus_per_node or 1} {ranks}, "
            f"TP {group.tensor_parallel}, PP {group.pipeline_parallel}, time {group.time}); "
            f"run list {shlex.quote(str(folder / RUN_LIST))}")
