"""Every CUDA shim the megatron-core backend needs to train on a CPU, in one place.

megatron-core is written for GPUs: a few of its code paths name CUDA outright, and a CPU build
of torch raises "Torch not compiled with CUDA enabled" there. `apply()` installs the shims below,
only when no GPU is present (`torch.cuda.is_available()` is False), and only for the
megatron-core versions they were checked against (`CHECKED_VERSIONS`); on any other version it
raises a SynthscaleError naming it, because a shim that silently stops matching the code it
patches would train something else. On a GPU nothing here is applied.

What else megatron-core needs on CPU is configuration, not patching (recipes/megatron/model.py):
the local layer spec (no Transformer Engine), `use_cpu_initialization`, the fusions off,
`batch_p2p_sync=False` (p2p_communication.py would call `torch.cuda.synchronize()`), and an
explicit causal mask (transformer/utils.py builds its default one with `device="cuda"`).
The facts are measured in ../shared/platform-notes.md ("megatron-core training on CPU (gloo)").
"""

from __future__ import annotations

import warnings

import torch
from torch.overrides import TorchFunctionMode

from synthscale.errors import SynthscaleError

CHECKED_VERSIONS = ("0.16.1",)

_applied = False


def megatron_core_version() -> str:
    with warnings.catch_warnings():  # importing megatron.core: the GPU kernels it falls back from do not apply
        warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex).*")
        from megatron.core.package_info import __version__

    return __version__


def needed() -> bool:
    """Shims are for machines without a GPU only."""
    return not torch.cuda.is_available()


def check_version(version: str | None = None) -> str:
    """Refuse a megatron-core the shims were not checked against (SynthscaleError naming it)."""
    version = version or megatron_core_version()
    if version not in CHECKED_VERSIONS:
        raise SynthscaleError(
            f"megatron-core {version}: the CPU shims in recipes/megatron/cpu_shims.py were checked against "
            f"{', '.join(CHECKED_VERSIONS)} only; install megatron-core=={CHECKED_VERSIONS[-1]} to train on CPU, "
            f"or check each shim against {version} and add it to CHECKED_VERSIONS"
        )
    return version


class _CudaDeviceToCpu(TorchFunctionMode):
    """Maps `device="cuda"` (or torch.device("cuda"), or `.cuda()`) to the CPU.

    Works around literal `device="cuda"` in megatron-core 0.16.1:
      - pipeline_parallel/schedules.py: `forward_backward_no_pipelining` and the pipelined
        schedules (`total_num_tokens = torch.zeros([], dtype=torch.int, device="cuda")`);
      - optimizer/optimizer.py: `FP32Optimizer.__init__` (`self._scale = torch.tensor(..., device='cuda')`);
      - optimizer/clip_grads.py: `get_grad_norm_fp32` (`dummy_overflow_buf`, the empty-grads norm);
      - utils.py: `local_multi_tensor_l2_norm` (the norm without Apex/TE, `device="cuda"`);
      - dist_checkpointing/strategies/state_dict_saver.py: `verify_global_md_reuse`;
      - dist_checkpointing/exchange_utils.py: `exchange_loaded_tensors_*` (`.cuda()`, `device="cuda"`).
    """

    @staticmethod
    def _is_cuda(device) -> bool:
        if isinstance(device, str):
            return device.startswith("cuda")
        return isinstance(device, torch.device) and device.type == "cuda"

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            return args[0]
        if "device" in kwargs and self._is_cuda(kwargs["device"]):
            kwargs = {**kwargs, "device": "cpu"}
        return func(*args, **kwargs)


def _current_device_cpu() -> str:
    """`torch.cuda.current_device()` on a CPU machine: the CPU.

    Works around `device=torch.cuda.current_device()` in megatron-core 0.16.1:
    models/common/embeddings/rotary_pos_embedding.py `RotaryEmbedding.get_emb`/`forward`,
    utils.py `GlobalMemoryBuffer.get_tensor` (used by transformer/dot_product_attention.py),
    tensor_parallel/mappings.py (`_gather_along_first_dim`, `_reduce_scatter_along_first_dim`),
    pipeline_parallel/p2p_communication.py (`_communicate_shapes`, `_communicate`),
    distributed/param_and_grad_buffer.py `_ParamAndGradBuffer.__init__` (the DDP buffers),
    transformer/module.py `MegatronModule` and optimizer/optimizer.py `get_loss_scale`.
    """
    return "cpu"


def _synchronize_cpu(device=None) -> None:
    """`torch.cuda.synchronize()` on a CPU machine: nothing to wait for (CPU ops are synchronous).

    Works around dist_checkpointing/strategies/filesystem_async.py
    `FileSystemWriterAsync.preload_tensors`, which every checkpoint save calls (megatron-core 0.16.1).
    """


def _clip_grad_by_total_norm_fp32_cpu(parameters, max_norm, total_norm, use_decoupled_grad=False):
    """megatron-core's `clip_grad_by_total_norm_fp32` without its CUDA-only assertion.

    Replaces optimizer/clip_grads.py `clip_grad_by_total_norm_fp32` (as imported by
    optimizer/optimizer.py, which calls it from `MegatronOptimizer.clip_grad_norm`): the original
    asserts `param.grad.type() == 'torch.cuda.FloatTensor'`. Same arithmetic: every fp32 gradient
    scaled by max_norm / (total_norm + 1e-6) when that is below 1.
    """
    from megatron.core.utils import to_local_if_dtensor

    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    grads = []
    for param in parameters:
        grad = getattr(param, "decoupled_grad", None) if use_decoupled_grad else param.grad
        if grad is not None:
            if grad.dtype != torch.float32:
                raise SynthscaleError(f"gradient clipping on CPU expects fp32 gradients, got {grad.dtype}")
            grads.append(to_local_if_dtensor(grad).detach())
    clip_coeff = max_norm / (total_norm + 1.0e-6)
    if clip_coeff < 1.0 and grads:
        torch._foreach_mul_(grads, clip_coeff)


def apply() -> bool:
    """Install the shims when there is no GPU (once per process); True when they are active."""
    global _applied
    if not needed():
        return False
    if _applied:
        return True
    check_version()
    import megatron.core.optimizer.optimizer as megatron_optimizer

    torch.cuda.current_device = _current_device_cpu
    torch.cuda.synchronize = _synchronize_cpu
    megatron_optimizer.clip_grad_by_total_norm_fp32 = _clip_grad_by_total_norm_fp32_cpu
    # A torch function mode stays active for this thread once entered: megatron-core runs the
    # model, the schedule, the optimizer and the checkpoint writer on the calling thread.
    _CudaDeviceToCpu().__enter__()
    _applied = True
    return True


def model_parallel_seed(seed: int) -> None:
    """Seed megatron-core's model-parallel RNG tracker.

    On CPU: tensor_parallel/random.py `CudaRNGStatesTracker.add` calls `torch.cuda.get_rng_state`;
    megatron-core's own `inference_rng_tracker=True` makes add/fork no-ops, which is exact for this
    backend (dropout is 0, and with `use_cpu_initialization` weights are drawn from the CPU RNG).
    """
    from megatron.core import tensor_parallel

    tensor_parallel.model_parallel_cuda_manual_seed(seed, inference_rng_tracker=needed(), force_reset_rng=True)
