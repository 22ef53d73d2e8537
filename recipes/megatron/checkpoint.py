"""Checkpoints of the megatron-core backend: megatron's distributed checkpointing, Megatron's layout.

`RUN/checkpoints/iter_0000050/` is one `megatron.core.dist_checkpointing` checkpoint (format
torch_dist): the model's and the optimizer's sharded state, each rank writing its own shards,
plus the common state rank 0 writes (step, loss curve, training time, the LR scheduler, the
layout it was written at). `RUN/checkpoints/latest_checkpointed_iteration.txt` names the newest
complete one, as Megatron-LM and Megatron-Bridge do; it is replaced atomically only after every
rank has written, so a kill at any moment leaves the previous checkpoint usable. Older
checkpoints are then removed.

Because the state is sharded by global tensor, not by rank, a checkpoint written at one TP x PP
loads at another (megatron reshards). The per-rank RNG states are restored only at the layout
they were written at (elsewhere they are not per-rank states of the same ranks; with dropout 0
the RNG does not influence training anyway).
"""

from __future__ import annotations

import contextlib
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from synthscale.errors import MissingInputError, SynthscaleError
from synthscale.files import write_text_atomic

CHECKPOINTS = "checkpoints"
TRACKER = "latest_checkpointed_iteration.txt"


@contextlib.contextmanager
def _quiet():
    """megatron-core 0.16.1's checkpoint code calls torch APIs torch now deprecates (ShardedTensor,
    `load_state_dict`): their FutureWarnings say nothing to a user of this backend."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def iteration_dir(run_dir: Path, step: int) -> Path:
    return checkpoints_dir(run_dir) / f"iter_{step:07d}"


def latest_step(run_dir: Path) -> int | None:
    """The step of the newest complete checkpoint (from the tracker file), or None."""
    tracker = checkpoints_dir(run_dir) / TRACKER
    if not tracker.is_file():
        return None
    text = tracker.read_text(encoding="utf-8").strip()
    if not text.isdigit():
        raise SynthscaleError(f"{tracker}: expected an iteration number, found {text[:40]!r}")
    step = int(text)
    if not iteration_dir(run_dir, step).is_dir():
        raise MissingInputError(f"{tracker} names iteration {step} but {iteration_dir(run_dir, step)} is missing")
    return step


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():  # the GPU's generator and megatron's model-parallel tracker
        from megatron.core import tensor_parallel

        state["cuda"] = torch.cuda.get_rng_state()
        state["tracker"] = tensor_parallel.get_cuda_rng_tracker().get_states()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        from megatron.core import tensor_parallel

        torch.cuda.set_rng_state(state["cuda"])
        tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def _rng_object(layout: dict, state: dict | None):
    """This rank's RNG state as a ShardedObject: one per (pp, tp, dp) rank."""
    from megatron.core import parallel_state
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    shape = (layout["pipeline_parallel"], layout["tensor_parallel"], layout["data_parallel"])
    offset = (parallel_state.get_pipeline_model_parallel_rank(), parallel_state.get_tensor_model_parallel_rank(),
              parallel_state.get_data_parallel_rank())
    return ShardedObject("rng_state", state, shape, offset, replica_id=0)


def _sharded_state(model, optimizer, is_loading: bool) -> dict:
    model_state = model.sharded_state_dict()
    state = {"model": model_state}
    if optimizer is not None:
        state["optimizer"] = optimizer.sharded_state_dict(model_state, is_loading=is_loading)
    return state


def save(run_dir: Path, step: int, model, optimizer, common: dict, layout: dict) -> Path:
    """Write iter_<step> with every rank, then point the tracker at it and drop older ones."""
    from megatron.core import dist_checkpointing

    final = iteration_dir(run_dir, step)
    temp = final.with_name(final.name + ".partial")
    rank = dist.get_rank()
    if rank == 0:
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir(parents=True)
    dist.barrier()
    state = _sharded_state(model, optimizer, is_loading=False)
    state["rng_state"] = _rng_object(layout, _rng_state())
    state.update(common, layout=layout)
    with _quiet():
        dist_checkpointing.save(state, str(temp))
    dist.barrier()
    if rank == 0:
        if final.exists():
            shutil.rmtree(final)
        temp.rename(final)
        write_text_atomic(checkpoints_dir(run_dir) / TRACKER, f"{step}\n")
        for old in checkpoints_dir(run_dir).glob("iter_*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def load_common(run_dir: Path, step: int) -> dict:
    """The common (rank 0) state of a checkpoint: step, loss curve, scheduler, layout, ..."""
    from megatron.core import dist_checkpointing

    return dist_checkpointing.load_common_state_dict(str(iteration_dir(run_dir, step)))


def load(run_dir: Path, step: int, model, optimizer, layout: dict) -> dict:
    """Load model (and optimizer) shards for this rank's layout; return the common state.

    The RNG states come back only when the checkpoint was written at this same layout."""
    from megatron.core import dist_checkpointing

    path = str(iteration_dir(run_dir, step))
    common = dist_checkpointing.load_common_state_dict(path)
    state = _sharded_state(model, optimizer, is_loading=True)
    same_layout = common.get("layout") == layout
    if same_layout:
        state["rng_state"] = _rng_object(layout, None)
    with _quiet():
        loaded = dist_checkpointing.load(state, path)
    model.load_state_dict(loaded["model"])
    if optimizer is not None:
        optimizer.load_state_dict(loaded["optimizer"])
    if same_layout:
        _set_rng_state(loaded["rng_state"])
    return common
