"""Every parallelism rule, with the error naming the field and the values that would work."""

from __future__ import annotations

import pytest

from recipes.parallelism import ParallelismError, plan_layout
from recipes.recipe import PAPER
from recipes.shapes import PAPER_SHAPES


def test_default_layouts_for_the_paper_shapes_on_8_gpus():
    layouts = {name: plan_layout(shape, PAPER, gpus_per_node=8) for name, shape in PAPER_SHAPES.items()}
    for name in ("100M", "200M", "500M", "1B", "2B"):
        assert (layouts[name].tensor_parallel, layouts[name].pipeline_parallel, layouts[name].data_parallel) == (1, 1, 8)
    three_b = layouts["3B"]
    assert (three_b.tensor_parallel, three_b.pipeline_parallel, three_b.data_parallel) == (1, 2, 4)
    assert three_b.world_size == 8


def test_tensor_parallel_must_divide_heads():
    shape = PAPER_SHAPES["100M"]  # 9 heads
    with pytest.raises(ParallelismError, match=r"tensor_parallel=2 must divide num_attention_heads=9 .*on 6 GPUs: \[1, 3\]$"):
        plan_layout(shape, PAPER, gpus_per_node=6, tensor_parallel=2)
    assert plan_layout(shape, PAPER, gpus_per_node=6, tensor_parallel=3).data_parallel == 2
    with pytest.raises(ParallelismError, match=r"pairs that work on 8 GPUs: \[\(1, 1\)\]$"):
        plan_layout(shape, PAPER, gpus_per_node=8, tensor_parallel=3)  # divides 9 heads, not 8 GPUs


def test_three_b_allows_tensor_parallel_1_only():
    shape = PAPER_SHAPES["3B"]  # 41 heads: prime
    for tp in (2, 4, 8):
        with pytest.raises(ParallelismError, match=r"num_attention_heads=41 .*values that work on 8 GPUs: \[1\]"):
            plan_layout(shape, PAPER, gpus_per_node=8, tensor_parallel=tp)


def test_pipeline_parallel_must_divide_layers():
    shape = PAPER_SHAPES["1B"]  # 22 layers
    with pytest.raises(ParallelismError, match=r"pipeline_parallel=4 must divide num_layers=22 .* \[1, 2\]$"):
        plan_layout(shape, PAPER, gpus_per_node=8, pipeline_parallel=4)
    assert plan_layout(shape, PAPER, gpus_per_node=8, pipeline_parallel=2).data_parallel == 4


def test_world_size_must_be_a_multiple_of_tp_times_pp():
    shape = PAPER_SHAPES["3B"]  # default PP=2
    with pytest.raises(ParallelismError, match=r"world size 3 .* multiple of tensor_parallel x pipeline_parallel = 1 x 2 = 2; world sizes that work: \[2, 4, 6, 8\]"):
        plan_layout(shape, PAPER, gpus_per_node=3)
    two_nodes = plan_layout(shape, PAPER, num_nodes=2, gpus_per_node=8)
    assert (two_nodes.world_size, two_nodes.data_parallel) == (16, 8)


def test_global_batch_must_divide_by_micro_batch_times_dp():
    shape = PAPER_SHAPES["500M"]
    with pytest.raises(ParallelismError, match=r"global_batch_size=256 must be divisible by micro_batch_size x data_parallel = 3 x 8 = 24; micro_batch_size values that work with data_parallel=8: \[1, 2, 4, 8, 16, 32\]"):
        plan_layout(shape, PAPER, gpus_per_node=8, micro_batch_size=3)
    with pytest.raises(ParallelismError, match=r"3 x 6 = 18"):
        plan_layout(shape, PAPER, gpus_per_node=6, micro_batch_size=3)
    assert plan_layout(shape, PAPER, gpus_per_node=8, micro_batch_size=4).micro_batch_size == 4


def test_bad_counts_are_named():
    with pytest.raises(ParallelismError, match="gpus_per_node must be a positive integer, got 0"):
        plan_layout(PAPER_SHAPES["1B"], PAPER, gpus_per_node=0)
    with pytest.raises(ParallelismError, match="tensor_parallel must be a positive integer, got -1"):
        plan_layout(PAPER_SHAPES["1B"], PAPER, tensor_parallel=-1)


def test_without_ranks_per_node_one_data_parallel_replica():
    from recipes.recipe import CPU_TINY
    from recipes.shapes import get_shape

    layout = plan_layout(get_shape("tiny-s"), CPU_TINY, gpus_per_node=None, tensor_parallel=2, pipeline_parallel=2)
    assert (layout.world_size, layout.data_parallel, layout.gpus_per_node) == (4, 1, 4)
    with pytest.raises(ParallelismError, match=r"num_nodes=2: give the ranks per node"):
        plan_layout(get_shape("tiny-s"), CPU_TINY, num_nodes=2, gpus_per_node=None)


def test_the_megatron_backend_splits_the_vocabulary_by_tp():
    from recipes.recipe import CPU_TINY
    from recipes.shapes import get_shape

    shape = get_shape("tiny-s")  # 4 heads
    assert plan_layout(shape, CPU_TINY, gpus_per_node=None, tensor_parallel=4, vocab_size=300).tensor_parallel == 4
    with pytest.raises(ParallelismError, match=r"tensor_parallel=4 must divide the vocabulary \(302 tokens\).* \[1, 2\]$"):
        plan_layout(shape, CPU_TINY, gpus_per_node=4, tensor_parallel=4, vocab_size=302)
