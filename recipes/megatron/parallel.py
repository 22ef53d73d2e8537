"""torch.distributed and megatron-core's model-parallel state for one training process.

`init_distributed(tensor_parallel, pipeline_parallel)` is called once per process, before
`trainer.train` / `trainer.evaluate`. It reads torchrun's environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT); a process started without torchrun is a world of one.
The backend is gloo on CPU (the CUDA shims are applied then) and nccl on GPU. Data parallel
is what is left: DP = world size / (TP x PP).
"""

from __future__ import annotations

import os
import warnings
from datetime import timedelta

import torch
import torch.distributed as dist

from recipes.megatron import cpu_shims
from synthscale.errors import SynthscaleError

DEFAULT_SEED = 1234
TIMEOUT = timedelta(minutes=30)


def _init_process_group() -> None:
    if dist.is_initialized():
        return
    backend = "gloo" if cpu_shims.needed() else "nccl"
    if "RANK" not in os.environ:  # not under torchrun: one process, nothing to connect to
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=TIMEOUT)
        return
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=TIMEOUT)


def init_distributed(tensor_parallel: int, pipeline_parallel: int, seed: int = DEFAULT_SEED) -> None:
    """Join the job's process group and split it into TP x PP x DP (megatron parallel_state).

    Idempotent for the same layout; another layout in the same process replaces the old one.
    `seed` seeds megatron-core's model-parallel RNG tracker (the trainer seeds it again with the
    run's recipe seed).
    """
    for name, value in (("tensor_parallel", tensor_parallel), ("pipeline_parallel", pipeline_parallel)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SynthscaleError(f"{name} must be a positive integer, got {value!r}")
    cpu_shims.apply()
    _init_process_group()
    world = dist.get_world_size()
    if world % (tensor_parallel * pipeline_parallel):
        raise SynthscaleError(
            f"world size {world} is not a multiple of tensor_parallel x pipeline_parallel = "
            f"{tensor_parallel} x {pipeline_parallel}; start {tensor_parallel * pipeline_parallel} x DP processes"
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex).*")
        from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        if (parallel_state.get_tensor_model_parallel_world_size() == tensor_parallel
                and parallel_state.get_pipeline_model_parallel_world_size() == pipeline_parallel):
            return
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tensor_parallel, pipeline_model_parallel_size=pipeline_parallel
    )
    cpu_shims.model_parallel_seed(seed)


def device() -> torch.device:
    """Where this rank's batches and collective tensors live: its GPU (nccl), or the CPU (gloo)."""
    return torch.device("cpu") if cpu_shims.needed() else torch.device("cuda", torch.cuda.current_device())


def layout() -> dict:
    """The layout this process runs in: tensor_parallel, pipeline_parallel, data_parallel, world_size."""
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        raise SynthscaleError("megatron-core's parallel state is not set up: call init_distributed(tp, pp) first")
    return {
        "tensor_parallel": parallel_state.get_tensor_model_parallel_world_size(),
        "pipeline_parallel": parallel_state.get_pipeline_model_parallel_world_size(),
        "data_parallel": parallel_state.get_data_parallel_world_size(),
        "world_size": dist.get_world_size(),
    }
