"""Entry point inside the NeMo Framework container: train one run with Megatron-Bridge,
score its final checkpoint on every evaluation domain, write results.json.

Launched by NeMo-Run (torchrun locally, srun on Slurm), one process per GPU:

    python -m recipes.bridge_entry --run-dir RUNS/<run_id>

It reads what `recipes sweep` wrote into the run directory: `run.json` and the Bridge
configs `bridge/train.yaml`, `bridge/eval_<domain>.yaml` (`ConfigContainer.from_yaml`).
Training resumes from `checkpoints/` after a preemption (Bridge loads the latest checkpoint).
The training-loss curve is appended to `bridge/train_loss.jsonl` by the last rank as training
goes, so a resumed run keeps its earlier points.

This is the only module that imports `megatron.bridge`: it needs the container (Python 3.12,
CUDA, Transformer Engine, Megatron-Bridge 0.6).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

from recipes.bridge_config import bridge_dir
from recipes.results import build_result, is_complete, write_result
from recipes.run_spec import RunSpec
from synthscale.files import write_json_atomic

TRAIN_DONE = "train_done.json"


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


def _callbacks(curve_path: Path, scores: dict):
    from megatron.bridge.training.callbacks import Callback

    class RecordLosses(Callback):
        """Training loss per step (to a file) and the test-split loss of an evaluation pass."""

        def on_train_step_end(self, context):
            loss = (context.loss_dict or {}).get("lm loss")
            if loss is None or not _is_last_rank():
                return
            with open(curve_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps([int(context.state.train_state.step), float(loss)]) + "\n")

        def on_test_end(self, context):
            loss = (context.total_loss_dict or {}).get("lm loss")
            if loss is not None:
                scores["loss"] = float(loss)

    return [RecordLosses()]


def run_bridge(run_dir: str | Path) -> dict | None:
    import megatron.bridge.utils.instantiate_utils  # noqa: F401  (allows megatron.bridge.* _target_s)
    from megatron.bridge.training.config import ConfigContainer
    from megatron.bridge.training.gpt_step import forward_step
    from megatron.bridge.training.pretrain import pretrain

    run_dir = Path(run_dir).resolve()
    if is_complete(run_dir):
        return None
    spec = RunSpec.load(run_dir)
    blend = spec.load_blend()
    configs = bridge_dir(run_dir)
    curve_path = configs / "train_loss.jsonl"
    started = time.perf_counter()

    train_time_s = None
    done_marker = configs / TRAIN_DONE
    if done_marker.is_file():
        train_time_s = json.loads(done_marker.read_text(encoding="utf-8"))["train_time_s"]
    else:
        cfg = ConfigContainer.from_yaml(str(configs / "train.yaml"))
        pretrain(cfg, forward_step, callbacks=_callbacks(curve_path, {}))
        train_time_s = time.perf_counter() - started
        if _is_last_rank():
            write_json_atomic(done_marker, {"train_time_s": train_time_s})

    per_domain = {}
    for domain in spec.eval_domains:
        cfg = ConfigContainer.from_yaml(str(configs / f"eval_{domain}.yaml"))
        scores: dict = {}
        pretrain(cfg, forward_step, callbacks=_callbacks(curve_path, scores))
        tokens = cfg.validation.eval_iters * cfg.validation.eval_global_batch_size * cfg.dataset.seq_length
        per_domain[domain] = {"loss": scores.get("loss", float("nan")), "tokens": tokens}

    if not _is_last_rank():
        return None
    record = build_result(
        spec,
        blend,
        per_domain,
        _read_curve(curve_path),
        wall_time_s=time.perf_counter() - started,
        train_time_s=train_time_s,
        extra={"precision": spec.recipe.precision, "device": "cuda", "world_size": _rank()[1]},
    )
    write_result(run_dir, record)
    return record


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--run-dir", required=True, type=click.Path(file_okay=False, exists=True), help="A run folder from `recipes sweep`.")
def main(run_dir: str) -> None:
    """Train and evaluate one run with Megatron-Bridge (inside the NeMo container).

    \b
    Example (what NeMo-Run launches, one process per GPU):
      torchrun --nproc-per-node 8 -m recipes.bridge_entry --run-dir runs/1B-5B-0123456789-hq_33
    """
    run_bridge(run_dir)


if __name__ == "__main__":
    main()
