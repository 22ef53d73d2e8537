"""Entry point inside the NeMo Framework container: train one run with Megatron-Bridge,
score its final checkpoint on every evaluation domain, write results.json.

Launched by NeMo-Run (torchrun locally, torchrun under srun on Slurm), one process per GPU:

    python -m recipes.bridge_entry --run-dir RUNS/<run_id>
    python -m recipes.bridge_entry --run-list ARRAY/runs.txt --time-limit 240   # a Slurm array task

It reads what `recipes sweep` wrote into the run directory: `run.json` and the Bridge configs
`bridge/train.yaml`, `bridge/eval_<domain>.yaml` (`ConfigContainer.from_yaml`). What it does
that Bridge does not:

  - **Resumes in stages**: training resumes from `checkpoints/` (Bridge loads the latest);
    `bridge/train_done.json` marks training finished (the checkpoint tracker says iteration ==
    train_iters); each domain's score goes to `bridge/eval_scores.json` as it is made, so a
    requeued job scores only the domains left; results.json is written last.
  - **Stops before the time limit**: with `--time-limit MINUTES` (the Slurm job's), training
    gets `exit_duration_in_mins` = what is left minus a margin (Bridge then saves a checkpoint
    and exits with code 0), and no evaluation starts within the margin. The sbatch script's
    requeue trap (synthscale.slurm) then requeues the task, which continues where it stopped.
  - **Refuses to score a model that is not the final one**: Bridge's `exit_on_missing_checkpoint`
    is only consulted when Bridge decides to load a checkpoint, which it does not when none
    exists, so an evaluation with no checkpoint would score a random model. Before each
    evaluation this module checks that `checkpoints/latest_checkpointed_iteration.txt` names
    iteration train_iters and that `iter_<train_iters>` exists (the eval YAML also pins
    `ckpt_step` to it), and raises `CheckpointNotFinal` otherwise.
  - **Numbers loss-curve steps 1..N**, as the CPU backend does: Bridge fires `on_train_step_end`
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
from recipes.results import build_result, is_complete, write_result
from recipes.run_spec import RunSpec
from synthscale.cli import stage_command
from synthscale.errors import MissingInputError, SynthscaleError
from synthscale.files import write_json_atomic

TRAIN_DONE = "train_done.json"
EVAL_SCORES = "eval_scores.json"
TRACKER = "latest_checkpointed_iteration.txt"
EVAL_PROCESS_MODES = ("shared", "per-domain")


class CheckpointNotFinal(MissingInputError):
    """The checkpoint to evaluate is missing or is not the run's final iteration."""


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


class Deadline:
    """Minutes left in this job (None: no limit) and the margin kept for checkpoints and exits."""

    def __init__(self, limit_minutes: float | None, margin_minutes: float | None = None, clock=time.monotonic):
        self.clock, self.started = clock, clock()
        self.limit = limit_minutes
        self.margin = margin_minutes if margin_minutes is not None else (
            max(10.0, 0.1 * limit_minutes) if limit_minutes else 0.0)

    def left(self) -> float | None:
        return None if self.limit is None else self.limit - (self.clock() - self.started) / 60.0

    def usable(self) -> float | None:
        left = self.left()
        return None if left is None else left - self.margin


def _init_world() -> bool:
    """torch.distributed (NCCL) for the whole process, once; True when this call created it."""
    import torch

    if not torch.distributed.is_available() or torch.distributed.is_initialized() or "WORLD_SIZE" not in os.environ:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return True


def _stage_in_child(run_dir: Path, stage: str, time_limit: float | None) -> None:
    command = [sys.executable, "-m", "recipes.bridge_entry", "--run-dir", str(run_dir), "--stage", stage]
    if time_limit is not None:
        command += ["--time-limit", f"{time_limit:.2f}"]
    subprocess.run(command, check=True)


def run_bridge(run_dir: str | Path, api: BridgeApi | None = None, deadline: Deadline | None = None,
               eval_process: str = "shared", stage: str = "all") -> dict | None:
    """Train (or resume) and evaluate one run; results.json when complete. Returns the record on the
    last rank once complete, else None (not finished in this job: it continues when run again)."""
    if eval_process not in EVAL_PROCESS_MODES:
        raise ValueError(f"--eval-process must be one of {EVAL_PROCESS_MODES}, got {eval_process!r}")
    run_dir = Path(run_dir).resolve()
    if is_complete(run_dir):
        return None
    deadline = deadline or Deadline(None)
    spec = RunSpec.load(run_dir)
    configs = bridge_dir(run_dir)
    curve_path, done_marker, scores_path = configs / "train_loss.jsonl", configs / TRAIN_DONE, configs / EVAL_SCORES
    child = eval_process == "per-domain" and stage == "all"
    if not child:
        api = api or load_bridge_api()
        _init_world()

    if not done_marker.is_file() and stage in ("all", "train"):
        started = time.perf_counter()
        if child:
            _stage_in_child(run_dir, "train", deadline.left())
        else:
            cfg = api.from_yaml(str(configs / "train.yaml"))
            usable = deadline.usable()
            if usable is not None:
                if usable < 1:
                    return None
                cfg.train.exit_duration_in_mins = int(usable)
            api.pretrain(cfg, api.forward_step, callbacks=_callbacks(api, curve_path, {}))
        if checkpoint_iteration(run_dir / "checkpoints") != spec.plan.train_iters:
            return None  # stopped early (time limit, signal): the checkpoint is saved, continue next time
        if _is_last_rank():
            earlier = json.loads(done_marker.read_text())["train_time_s"] if done_marker.is_file() else 0.0
            write_json_atomic(done_marker, {"train_time_s": earlier + time.perf_counter() - started})
    if stage == "train" or not done_marker.is_file():
        return None

    scores = json.loads(scores_path.read_text(encoding="utf-8")) if scores_path.is_file() else {}
    for domain in spec.eval_domains:
        if domain in scores or stage not in ("all", f"eval:{domain}"):
            continue
        usable = deadline.usable()
        if usable is not None and usable < 1:
            return None  # too close to the time limit to start an evaluation
        require_final_checkpoint(run_dir, spec.plan.train_iters)
        if child:
            _stage_in_child(run_dir, f"eval:{domain}", deadline.left())
            scores = json.loads(scores_path.read_text(encoding="utf-8"))
            continue
        cfg = api.from_yaml(str(configs / f"eval_{domain}.yaml"))
        found: dict = {}
        started = time.perf_counter()
        api.pretrain(cfg, api.forward_step, callbacks=_callbacks(api, curve_path, found))
        tokens = cfg.validation.eval_iters * cfg.validation.eval_global_batch_size * cfg.dataset.seq_length
        scores[domain] = {"loss": found.get("loss", float("nan")), "tokens": tokens,
                          "samples": cfg.validation.eval_iters * cfg.validation.eval_global_batch_size,
                          "time_s": time.perf_counter() - started}
        if _is_last_rank():
            write_json_atomic(scores_path, scores)

    if stage != "all" or not _is_last_rank() or set(scores) != set(spec.eval_domains):
        return None
    train_time_s = json.loads(done_marker.read_text(encoding="utf-8"))["train_time_s"]
    record = build_result(
        spec, spec.load_blend(), {d: scores[d] for d in spec.eval_domains}, _read_curve(curve_path),
        wall_time_s=train_time_s + sum(s.get("time_s", 0.0) for s in scores.values()), train_time_s=train_time_s,
        extra={"precision": spec.recipe.precision, "device": "cuda", "world_size": _rank()[1]},
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


@stage_command()
@click.option("--run-dir", type=click.Path(file_okay=False, exists=True), help="A run folder from `recipes sweep`.")
@click.option("--run-list", type=click.Path(dir_okay=False, exists=True),
              help="A Slurm array's run list: this task's run is line SLURM_ARRAY_TASK_ID + 1.")
@click.option("--time-limit", type=float, default=None, help="Minutes this job may run (Slurm's --time); none: no limit.")
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
    run_bridge(target, deadline=Deadline(time_limit), eval_process=eval_process, stage=stage)


if __name__ == "__main__":
    main()
