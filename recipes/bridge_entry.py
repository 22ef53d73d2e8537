"""Entry point inside the NeMo Framework container: train one run with Megatron-Bridge,
score its final checkpoint on every evaluation domain, write results.json.

Launched by NeMo-Run (torchrun locally, torchrun under srun on Slurm), one process per GPU:

    python -m recipes.bridge_entry --run-dir RUNS/<run_id>
    python -m recipes.bridge_entry --run-list ARRAY/runs.txt --time-limit 240   # a Slurm array task

It reads what `recipes sweep` wrote into the run directory: `run.json` and the Bridge configs
`bridge/train.yaml`, `bridge/eval_<domain>.yaml` (`ConfigContainer.from_yaml`). What it does
that Bridge does not:

  - **Resumes in stages** (`recipes.run_stages`, shared with the megatron-core backend): training
    resumes from `checkpoints/` (Bridge loads the latest); all ranks agree that training is done
    (every rank sees the checkpoint tracker at train_iters, after a barrier) before
    `bridge/train_done.json` is written and any rank evaluates; each domain's score is checked,
    then saved to `bridge/eval_scores.json`, so a requeued job scores only the domains left;
    results.json is written last, with the train time of every segment (`bridge/train_segments.json`).
  - **Stops before the time limit**: with `--time-limit MINUTES` (the Slurm job's), training
    gets `exit_duration_in_mins` = what is left of the job, counted from its start
    (`SYNTHSCALE_JOB_START`), minus a margin. Bridge then saves a checkpoint and calls
    `sys.exit(0)` (its `train()`), which this module catches so that the segment is recorded; no
    evaluation starts within the margin. The sbatch script's requeue trap (synthscale.slurm) then
    requeues the task, which continues where it stopped.
  - **Refuses to score a model that is not the final one**: Bridge's `exit_on_missing_checkpoint`
    is only consulted when Bridge decides to load a checkpoint, which it does not when none
    exists, so an evaluation with no checkpoint would score a random model. Before each
    evaluation this module checks that `checkpoints/latest_checkpointed_iteration.txt` names
    iteration train_iters and that `iter_<train_iters>` exists (the eval YAML also pins
    `ckpt_step` to it), and raises `CheckpointNotFinal` otherwise.
  - **Numbers loss-curve steps 1..N**, as the megatron-core backend does: Bridge fires `on_train_step_end`
    before it increments `train_state.step`, so the step just completed is `step + 1`.
  - **Evaluates every domain in this one process** (`--eval-process shared`, the default): Bridge
    0.6 cannot evaluate several validation sets in one `pretrain` (its issue #618; PR #5076 is
    open), so each domain is one `pretrain(skip_train=True)` call. This module initialises
    torch.distributed (NCCL) once before the first call; Bridge's `_pretrain` then leaves that
    process group alone (it destroys only a group it created) and tears down its model-parallel
    groups and global state at the end of every call (`_finish_train` -> `destroy_global_state`),
    so successive calls reuse one NCCL world communicator instead of re-initialising NCCL. The
    fallback, `--eval-process per-domain`, runs training and each domain's evaluation in a fresh
    child Python process of each rank (same torchrun environment), for a Bridge version whose
    state does not survive a second `pretrain`.

This is the only module that imports `megatron.bridge`: it needs the container (Python 3.12,
CUDA, Transformer Engine, Megatron-Bridge 0.6). `run_bridge` takes the Bridge functions as an
argument (`BridgeApi`) so that its logic is tested without the container.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click

from recipes.bridge_config import bridge_dir
from recipes.job import JOB_START_ENV, Deadline, run_from_list
from recipes.run_spec import RunSpec
from recipes.run_stages import (CheckpointNotFinal, StageFiles, StageState, TrainSegment, World, run_stages,
                                write_results)
from synthscale.cli import stage_command
from synthscale.errors import SynthscaleError

TRACKER = "latest_checkpointed_iteration.txt"
EVAL_PROCESS_MODES = ("shared", "per-domain")


@dataclass
class BridgeApi:
    """The four Megatron-Bridge names this module uses."""

    from_yaml: Callable[[str], Any]
    pretrain: Callable[..., None]
    forward_step: Callable
    callback_base: type


def load_bridge_api() -> BridgeApi:
    import megatron.bridge.utils.instantiate_utils  # noqa: F401  (allows megatron.bridge.* _target_s)
    from megatron.bridge.training.callbacks import Callback
    from megatron.bridge.training.config import ConfigContainer
    from megatron.bridge.training.gpt_step import forward_step
    from megatron.bridge.training.pretrain import pretrain

    return BridgeApi(ConfigContainer.from_yaml, pretrain, forward_step, Callback)


def _rank() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment (valid after Bridge destroys its groups)."""
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
    world = int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))
    return rank, world


def _is_last_rank() -> bool:
    rank, world = _rank()
    return rank == world - 1  # on the last pipeline stage, where losses are reduced


def _read_curve(path: Path) -> list[list]:
    if not path.is_file():
        return []
    points = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            step, loss = json.loads(line)
            points[int(step)] = float(loss)  # a resumed run may log a step twice: keep the last
    return [[step, points[step]] for step in sorted(points)]


def checkpoint_iteration(checkpoints: Path) -> int | None:
    """The iteration Megatron's tracker file names, or None when there is no checkpoint."""
    tracker = checkpoints / TRACKER
    if not tracker.is_file():
        return None
    text = tracker.read_text(encoding="utf-8").strip()
    return int(text) if text.isdigit() else None


def require_final_checkpoint(run_dir: Path, train_iters: int) -> Path:
    """The final checkpoint's folder; CheckpointNotFinal when it is missing or not the last."""
    checkpoints = run_dir / "checkpoints"
    iteration = checkpoint_iteration(checkpoints)
    folder = checkpoints / f"iter_{train_iters:07d}"
    if iteration is None:
        raise CheckpointNotFinal(f"no checkpoint to evaluate in {checkpoints} (no {TRACKER}): train the run first; "
                                 f"Bridge would score a randomly initialised model")
    if iteration != train_iters or not folder.is_dir():
        raise CheckpointNotFinal(f"the checkpoint in {checkpoints} is iteration {iteration}, not the final "
                                 f"{train_iters} ({folder} {'exists' if folder.is_dir() else 'missing'}): "
                                 f"finish training before evaluating")
    return folder


def _callbacks(api: BridgeApi, curve_path: Path, scores: dict):
    class RecordLosses(api.callback_base):
        """Training loss per step (to a file) and the test-split loss of an evaluation pass."""

        def on_train_step_end(self, context):
            loss = (context.loss_dict or {}).get("lm loss")
            if loss is None or not _is_last_rank():
                return
            step = int(context.state.train_state.step) + 1  # Bridge increments step after this callback
            with open(curve_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps([step, float(loss)]) + "\n")

        def on_test_end(self, context):
            loss = (context.total_loss_dict or {}).get("lm loss")
            if loss is not None:
                scores["loss"] = float(loss)

    return [RecordLosses()]


class BridgeStages:
    """The stages on Megatron-Bridge (`recipes.run_stages.StageBackend`): each is one pretrain() call."""

    min_minutes = 1.0  # exit_duration_in_mins counts whole minutes, and 0 would switch it off

    def __init__(self, run_dir: Path, spec: RunSpec, api: BridgeApi):
        self.run_dir, self.spec, self.api = run_dir, spec, api
        self.configs = bridge_dir(run_dir)
        self.curve_path = self.configs / "train_loss.jsonl"
        self.exited = False

    def train(self, usable_minutes: float | None) -> TrainSegment:
        cfg = self.api.from_yaml(str(self.configs / "train.yaml"))
        if usable_minutes is not None:
            cfg.train.exit_duration_in_mins = int(usable_minutes)  # Bridge counts it from its own start
        started = time.perf_counter()
        try:
            self.api.pretrain(cfg, self.api.forward_step, callbacks=_callbacks(self.api, self.curve_path, {}))
        except SystemExit as exc:  # Bridge's train() saves, then sys.exit(0), at exit_duration_in_mins or SIGTERM
            if exc.code not in (None, 0):
                raise
            self.exited = True
        return TrainSegment(time.perf_counter() - started, _read_curve(self.curve_path),
                            checkpoint_iteration(self.run_dir / "checkpoints"))

    def training_finished(self) -> bool:
        # After Bridge's sys.exit its global state is not torn down: evaluate in the next job, where
        # pretrain() returns at once from the final checkpoint.
        return not self.exited and checkpoint_iteration(self.run_dir / "checkpoints") == self.spec.plan.train_iters

    def check_final_checkpoint(self) -> None:
        require_final_checkpoint(self.run_dir, self.spec.plan.train_iters)

    def evaluate(self, domain: str) -> dict:
        cfg = self.api.from_yaml(str(self.configs / f"eval_{domain}.yaml"))
        found: dict = {}
        self.api.pretrain(cfg, self.api.forward_step, callbacks=_callbacks(self.api, self.curve_path, found))
        samples = cfg.validation.eval_iters * cfg.validation.eval_global_batch_size
        # the loss is on the last pipeline stage only (the writer rank, whose score the stages keep)
        return {"loss": found.get("loss", float("nan")), "tokens": samples * cfg.dataset.seq_length, "samples": samples}


def _init_world() -> bool:
    """torch.distributed (NCCL) for the whole process, once; True when this call created it."""
    import torch

    if not torch.distributed.is_available() or torch.distributed.is_initialized() or "WORLD_SIZE" not in os.environ:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return True


def _result_extra(spec: RunSpec) -> dict:
    return {"precision": spec.recipe.precision, "device": "cuda"}


def _stage_in_child(run_dir: Path, spec: RunSpec, stage: str, deadline: Deadline) -> None:
    """One stage in a fresh Python process of this rank; it counts its time from this job's start."""
    command = [sys.executable, "-m", "recipes.bridge_entry", "--run-dir", str(run_dir), "--stage", stage]
    if deadline.limit is not None:
        command += ["--time-limit", repr(deadline.limit)]
    env = {**os.environ, JOB_START_ENV: repr(deadline.started)}
    status = subprocess.run(command, env=env).returncode
    if status != 0:
        raise SynthscaleError(f"run {spec.run_id}: stage {stage} failed in its child process (exit {status}); "
                              f"its error is above")


def _run_in_children(run_dir: Path, spec: RunSpec, files: StageFiles, deadline: Deadline) -> dict | None:
    """`--eval-process per-domain`: training and each evaluation in a child process of each rank; the
    children decide together (each holds the process group) and write the stage files; this parent
    only reads them, and the writer rank's writes results.json."""
    state = StageState.read(run_dir, spec, files)
    if state.has_results and not state.wanted:
        return None  # complete
    if not state.trained:
        _stage_in_child(run_dir, spec, "train", deadline)
        if files.done() is None:
            return None
    for domain in state.missing():
        _stage_in_child(run_dir, spec, f"eval:{domain}", deadline)
        if domain not in files.scores(state.identities):
            return None  # stopped at the time limit's margin
    rank, world = _rank()
    if rank != world - 1:
        return None
    return write_results(run_dir, spec, files, state, {**_result_extra(spec), "world_size": world})


def run_bridge(run_dir: str | Path, api: BridgeApi | None = None, deadline: Deadline | None = None,
               eval_process: str = "shared", stage: str = "all") -> dict | None:
    """Train (or resume) and evaluate one run; results.json when complete (a complete run whose
    results.json lacks a domain, or scored it under another definition, is scored again on it).
    Returns the record on the last rank once written, else None (nothing to do, or not finished in
    this job: it continues when run again)."""
    if eval_process not in EVAL_PROCESS_MODES:
        raise ValueError(f"--eval-process must be one of {EVAL_PROCESS_MODES}, got {eval_process!r}")
    run_dir = Path(run_dir).resolve()
    deadline = deadline or Deadline(None)
    spec = RunSpec.load(run_dir)
    files = StageFiles(bridge_dir(run_dir))
    if eval_process == "per-domain" and stage == "all":
        return _run_in_children(run_dir, spec, files, deadline)
    api = api or load_bridge_api()
    _init_world()
    return run_stages(run_dir, spec, BridgeStages(run_dir, spec, api), files, deadline, World.current(), stage,
                      extra=_result_extra(spec))


@stage_command()
@click.option("--run-dir", type=click.Path(file_okay=False, exists=True), help="A run folder from `recipes sweep`.")
@click.option("--run-list", type=click.Path(dir_okay=False, exists=True),
              help="A Slurm array's run list: this task's run is line SLURM_ARRAY_TASK_ID + 1.")
@click.option("--time-limit", type=float, default=None,
              help=f"Minutes this job may run (Slurm's --time), counted from ${JOB_START_ENV} when set "
                   f"(the sbatch script exports it); none: no limit.")
@click.option("--eval-process", type=click.Choice(EVAL_PROCESS_MODES), default="shared", show_default=True,
              help="shared: every pretrain() call in this process; per-domain: a child process per stage.")
@click.option("--stage", default="all", hidden=True, help="all, train or eval:DOMAIN (the per-domain children).")
def main(run_dir: str | None, run_list: str | None, time_limit: float | None, eval_process: str, stage: str) -> None:
    """Train and evaluate one run with Megatron-Bridge (inside the NeMo container).

    \b
    Example (what NeMo-Run launches, one process per GPU):
      torchrun --nproc-per-node 8 -m recipes.bridge_entry --run-dir runs/1B-5B-0123456789-hq_33
    """
    if (run_dir is None) == (run_list is None):
        raise click.UsageError("give one of --run-dir and --run-list")
    target = Path(run_dir) if run_dir else run_from_list(run_list)
    run_bridge(target, deadline=Deadline.for_job(time_limit), eval_process=eval_process, stage=stage)


if __name__ == "__main__":
    main()
