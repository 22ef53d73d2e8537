"""Entry point of the megatron-core backend: train one run, score its final checkpoint on every
evaluation domain, write results.json. One process per rank, under torchrun:

    torchrun --nproc-per-node 2 -m recipes.megatron.entry --run-dir RUNS/<run_id>
    torchrun ... -m recipes.megatron.entry --run-list ARRAY/runs.txt --time-limit 240   # a Slurm array task

It reads the run's `run.json`, joins the job's process group split as the run's frozen layout says
(`parallel.init_distributed(TP, PP)` from `layout`; the world must be TP x PP x DP of that layout),
then runs the stages of `recipes.run_stages` with `recipes.megatron.trainer`: train or resume from
RUN/checkpoints, all ranks agree that training is done (the checkpoint tracker, read by every rank
after a barrier), evaluate the domains left, results.json with the device and world size. Stage
files go to RUN/megatron/ (train_segments.json, train_done.json, eval_scores.json).

Stopping, then continuing in the next job (the sbatch trap requeues a task that made progress):
  - `--time-limit MINUTES` (the Slurm job's): training gets what is left of the job, counted from
    its start (`SYNTHSCALE_JOB_START`), minus a margin; the trainer saves a checkpoint when it has
    used that and returns; no stage starts inside the margin. `--train-minutes` caps the training
    time of one job the same way (Megatron's `--exit-duration-in-mins`).
  - SIGTERM or SIGUSR1 (Slurm's `--signal`, `scancel --signal`): during training the trainer saves
    after the current step and returns (all ranks agree on it); at any other moment no further
    stage starts. The process then exits 0. Slurm signals every process of the step, megatron's
    checkpoint-writer server included: `shield_checkpoint_writer` keeps that one alive.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import click
from torch.distributed.elastic.multiprocessing.errors import record

from recipes.job import JOB_START_ENV, STOP_SIGNALS, Deadline, StopSignals, run_from_list
from recipes.run_spec import RunSpec
from recipes.run_stages import CheckpointNotFinal, StageFiles, TrainSegment, World, run_stages
from synthscale.cli import stage_command
from synthscale.errors import SynthscaleError

STAGE_DIR = "megatron"


class MegatronStages:
    """The stages on recipes.megatron.trainer (`recipes.run_stages.StageBackend`)."""

    min_minutes = 0.0  # the trainer stops after at least one step, whatever its budget

    def __init__(self, run_dir: Path, spec: RunSpec, train_minutes: float | None = None):
        self.run_dir, self.spec, self.train_minutes = run_dir, spec, train_minutes
        self.finished = False

    def train(self, usable_minutes: float | None) -> TrainSegment:
        from recipes.megatron.trainer import train

        budgets = [m for m in (usable_minutes, self.train_minutes) if m is not None]
        result = train(self.run_dir, self.spec, stop_after_minutes=min(budgets) if budgets else None)
        self.finished = bool(result["finished"])
        return TrainSegment(float(result["train_time_s"]), result["loss_curve"], int(result["steps_done"]))

    def _checkpoint_step(self) -> int | None:
        from recipes.megatron.checkpoint import latest_step

        return latest_step(self.run_dir)

    def training_finished(self) -> bool:
        return self.finished and self._checkpoint_step() == self.spec.plan.train_iters

    def check_final_checkpoint(self) -> None:
        try:
            step = self._checkpoint_step()
        except SynthscaleError as exc:  # the tracker names a checkpoint that is not there
            raise CheckpointNotFinal(str(exc)) from None
        if step != self.spec.plan.train_iters:
            raise CheckpointNotFinal(f"run {self.spec.run_id}: the newest checkpoint in {self.run_dir / 'checkpoints'} "
                                     f"is step {step}, not the final {self.spec.plan.train_iters}: finish training "
                                     f"before evaluating")

    def evaluate(self, domain: str) -> dict:
        from recipes.megatron.trainer import evaluate

        return evaluate(self.run_dir, self.spec, [domain])[domain]


def frozen_layout(spec: RunSpec) -> tuple[int, int]:
    """(TP, PP) of the run's layout, after checking this job's world size is TP x PP x DP."""
    layout = spec.layout or {}
    try:
        tp, pp, dp = (int(layout[k]) for k in ("tensor_parallel", "pipeline_parallel", "data_parallel"))
    except (KeyError, TypeError, ValueError):
        raise SynthscaleError(f"run {spec.run_id}: run.json's layout {layout} lacks tensor_parallel, "
                              f"pipeline_parallel or data_parallel") from None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != tp * pp * dp:
        raise SynthscaleError(f"run {spec.run_id}: its layout is TP {tp} x PP {pp} x DP {dp} = {tp * pp * dp} ranks, "
                              f"but this job has WORLD_SIZE={world}; start it with torchrun --nproc-per-node "
                              f"{tp * pp * dp} (a run's layout is fixed when it is planned)")
    return tp, pp


def shield_checkpoint_writer() -> None:
    """Let megatron's checkpoint writer outlive Slurm's stop signal.

    Slurm delivers `--signal` / `scancel --signal` to every process of the job step (its process
    tracking), not only to the ranks. megatron-core 0.16's `FileSystemWriterAsync` collects write
    results through a multiprocessing Manager it spawns at the first save
    (`dist_checkpointing.strategies.filesystem_async._get_write_results_queue`); a SIGTERM kills
    that server, and the save the signal asks for then never completes (seen here: the ranks died
    without a checkpoint). Starting the Manager now with SIGTERM and SIGUSR1 ignored (an ignored
    disposition survives its exec) keeps it alive; megatron reuses it for every save."""
    import warnings

    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex).*")
            from megatron.core.dist_checkpointing.strategies import filesystem_async

            filesystem_async._get_write_results_queue()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_megatron(run_dir: str | Path, deadline: Deadline | None = None, train_minutes: float | None = None,
                 stop=None, threads: int | None = None) -> dict | None:
    """Train (or resume) and evaluate one run on this rank, or score a complete run again on the
    domains its results.json lacks or scored under another definition; returns the record on the
    writer (last) rank once written, else None (nothing to do, or not finished in this job)."""
    import torch

    from recipes.megatron.parallel import init_distributed

    run_dir = Path(run_dir).resolve()
    spec = RunSpec.load(run_dir)
    if spec.backend != "megatron":
        raise SynthscaleError(f"run {spec.run_id} is for the {spec.backend!r} backend, not 'megatron'")
    if threads or os.environ.get("SYNTHSCALE_TORCH_THREADS"):  # an explicit count, else the job's variable
        torch.set_num_threads(threads or int(os.environ["SYNTHSCALE_TORCH_THREADS"]))
    init_distributed(*frozen_layout(spec))
    shield_checkpoint_writer()
    extra = {"precision": spec.recipe.precision, "device": "cuda" if torch.cuda.is_available() else "cpu",
             "torch_threads": torch.get_num_threads()}
    return run_stages(run_dir, spec, MegatronStages(run_dir, spec, train_minutes), StageFiles(run_dir / STAGE_DIR),
                      deadline or Deadline(None), World.current(), extra=extra, stop=stop)


def run_single_rank(run_dir: str | Path, threads: int | None = None, stop=None) -> dict:
    """Train (or resume) and evaluate a run of one rank (TP = PP = DP = 1) in this process, with no
    torchrun: what `recipes sweep --executor local` runs in its worker processes (`--jobs N` of
    them) and `recipes train RUN_DIR` runs. Returns the run's record (results.json)."""
    from recipes.results import load_result
    from recipes.run_spec import RESULTS_FILE

    run_dir = Path(run_dir).resolve()
    record = run_megatron(run_dir, stop=stop, threads=threads)
    if record is None:  # nothing was left to do (complete and scored), or a stop signal came first
        if not (run_dir / RESULTS_FILE).is_file():
            raise SynthscaleError(f"run {run_dir.name} stopped before it finished (its checkpoint is kept); "
                                  f"run it again to continue")
        record = load_result(run_dir / RESULTS_FILE)
    return record


@stage_command()
@click.option("--run-dir", type=click.Path(file_okay=False, exists=True), help="A run folder from `recipes sweep`.")
@click.option("--run-list", type=click.Path(dir_okay=False, exists=True),
              help="A Slurm array's run list: this task's run is line SLURM_ARRAY_TASK_ID + 1.")
@click.option("--time-limit", type=float, default=None,
              help=f"Minutes this job may run (Slurm's --time), counted from ${JOB_START_ENV} when set "
                   f"(the sbatch script exports it); none: no limit.")
@click.option("--train-minutes", type=click.FloatRange(min=0), default=None,
              help="Train at most this many minutes in this job, then save and exit 0; the next run continues.")
@record  # a rank's error goes to torchrun's failure summary, the end of the job's log that a stopped task reports
def main(run_dir: str | None, run_list: str | None, time_limit: float | None, train_minutes: float | None) -> None:
    """Train and evaluate one run with megatron-core (TP x PP x DP ranks, one process each).

    \b
    Example (a run planned with --tensor-parallel 2, on 2 CPU processes over gloo):
      torchrun --nproc-per-node 2 -m recipes.megatron.entry --run-dir runs/tiny-xs-51K-0123456789-hq_33
    """
    stop = StopSignals().install()  # before the imports and setup: a signal never kills a rank unsaved
    if (run_dir is None) == (run_list is None):
        raise click.UsageError("give one of --run-dir and --run-list")
    target = Path(run_dir) if run_dir else run_from_list(run_list)
    run_megatron(target, Deadline.for_job(time_limit), train_minutes, stop)
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
