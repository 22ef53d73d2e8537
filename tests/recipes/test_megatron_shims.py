"""recipes/megatron/cpu_shims.py: the version check, and that each CPU shim still works around
real megatron-core code (when megatron-core stops naming CUDA there, these tests say so)."""

from __future__ import annotations

import pytest
import torch

from recipes.megatron import cpu_shims
from synthscale.errors import SynthscaleError

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU shims apply only without a GPU")


def test_an_unchecked_megatron_core_version_is_refused_by_name():
    with pytest.raises(SynthscaleError, match=r"megatron-core 0\.17\.0: .*checked against 0\.16\.1"):
        cpu_shims.check_version("0.17.0")


def test_the_installed_megatron_core_is_one_the_shims_were_checked_against():
    assert cpu_shims.check_version() == cpu_shims.megatron_core_version() == "0.16.1"
    assert cpu_shims.needed()


def test_megatron_clipping_asserts_cuda_gradients_and_the_shim_clips_like_it():
    from megatron.core.optimizer.clip_grads import clip_grad_by_total_norm_fp32

    params = [torch.nn.Parameter(torch.ones(3, 2)), torch.nn.Parameter(torch.ones(4))]
    for param, grad in zip(params, (torch.full((3, 2), 3.0), torch.full((4,), -2.0))):
        param.grad = grad
    with pytest.raises(AssertionError):  # megatron-core's own: 'torch.cuda.FloatTensor' only
        clip_grad_by_total_norm_fp32(params, max_norm=1.0, total_norm=10.0)
    cpu_shims._clip_grad_by_total_norm_fp32_cpu(params, max_norm=1.0, total_norm=10.0)
    coeff = 1.0 / (10.0 + 1e-6)
    assert torch.allclose(params[0].grad, torch.full((3, 2), 3.0 * coeff))
    assert torch.allclose(params[1].grad, torch.full((4,), -2.0 * coeff))
    cpu_shims._clip_grad_by_total_norm_fp32_cpu(params, max_norm=100.0, total_norm=1.0)  # below the limit: unchanged
    assert torch.allclose(params[1].grad, torch.full((4,), -2.0 * coeff))


def test_cuda_device_requests_map_to_the_cpu_inside_the_mode():
    with pytest.raises((AssertionError, RuntimeError)):
        torch.zeros(1, device="cuda")  # what megatron-core's schedules do, on a CPU build of torch
    with cpu_shims._CudaDeviceToCpu():
        made = torch.zeros([], dtype=torch.int, device="cuda")
        moved = torch.ones(2).cuda()
    assert made.device.type == "cpu" and moved.device.type == "cpu"
