"""Shapes (Table 1, exact N), the paper recipe (Table 2), the schedule and the step arithmetic."""

from __future__ import annotations

import math

import pytest
import torch

from recipes.recipe import MIN_TRAIN_ITERS, PAPER, TrainingRecipe, learning_rate, plan_training
from recipes.shapes import PAPER_SHAPES, SHAPES, TINY_SHAPES, ModelShape, get_shape, llama3_ffn_hidden_size

TABLE_1 = {  # name: (d_model, layers, heads)
    "100M": (576, 7, 9),
    "200M": (832, 10, 13),
    "500M": (1280, 16, 20),
    "1B": (1792, 22, 28),
    "2B": (2240, 28, 35),
    "3B": (2624, 32, 41),
}


def test_paper_shapes_are_table_1():
    assert set(PAPER_SHAPES) == set(TABLE_1)
    for name, (d, layers, heads) in TABLE_1.items():
        shape = PAPER_SHAPES[name]
        assert (shape.d_model, shape.num_layers, shape.num_heads, shape.head_dim) == (d, layers, heads, 64)
        assert shape.query_groups == heads  # multi-head attention


@pytest.mark.parametrize("name", list(SHAPES))
def test_non_embedding_params_match_the_transformers_llama(name):
    """N from the shape arithmetic == parameters of transformers' reference Llama, built here from
    the shape's dimensions, minus both embeddings."""
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = get_shape(name)
    vocab = 128_256
    config = LlamaConfig(vocab_size=vocab, hidden_size=shape.d_model, intermediate_size=shape.ffn,
                         num_hidden_layers=shape.num_layers, num_attention_heads=shape.num_heads,
                         num_key_value_heads=shape.query_groups, head_dim=shape.head_dim, tie_word_embeddings=False,
                         attention_bias=False, mlp_bias=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    embeddings = {"model.embed_tokens.weight", "lm_head.weight"}
    assert sum(p.numel() for n, p in model.named_parameters() if n not in embeddings) == shape.non_embedding_params
    total = sum(p.numel() for p in model.parameters())
    assert total == shape.non_embedding_params + shape.embedding_params(vocab)  # untied embeddings
    assert not any(n.endswith("bias") for n, _ in model.named_parameters())


def test_ffn_rule_is_llama3_and_n_is_computed_not_labelled():
    # Llama 3 8B: d 4096, x1.3, multiple_of 1024 -> 14336 (Meta's published size)
    assert llama3_ffn_hidden_size(4096, 1.3, 1024) == 14336
    assert [PAPER_SHAPES[n].ffn for n in TABLE_1] == [2048, 3072, 4608, 6400, 7936, 9216]
    one_b = PAPER_SHAPES["1B"]
    expected = 22 * (4 * 1792**2 + 3 * 1792 * 6400 + 2 * 1792) + 1792
    assert one_b.N == expected == 1_039_612_672


def test_tiny_shapes_fit_a_cpu():
    assert TINY_SHAPES
    for shape in TINY_SHAPES.values():
        assert shape.cpu and shape.head_dim >= 32
        assert shape.non_embedding_params < 5_000_000


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(d_model=100, num_layers=2, num_heads=2, head_dim=64), "num_heads x head_dim must equal d_model"),
        (dict(d_model=64, num_layers=2, num_heads=4, head_dim=16), "head_dim must be >= 32"),
        (dict(d_model=128, num_layers=0, num_heads=2), "num_layers must be a positive integer"),
        (dict(d_model=192, num_layers=2, num_heads=3, num_query_groups=2), "num_query_groups must divide"),
    ],
)
def test_shape_validation_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelShape(name="bad", **kwargs)


def test_unknown_shape_lists_the_known_ones():
    with pytest.raises(ValueError, match="known shapes: 100M, 200M"):
        get_shape("7B")


def test_paper_recipe_is_table_2():
    assert (PAPER.adam_beta1, PAPER.adam_beta2, PAPER.weight_decay) == (0.9, 0.95, 0.1)
    assert PAPER.peak_lr == 3e-4 and PAPER.warmup_fraction == 0.1
    assert math.isclose(PAPER.min_lr, 3e-4 * 1e-6)
    assert PAPER.clip_grad == 1.0 and PAPER.seq_length == 4096
    assert PAPER.global_batch_size * PAPER.seq_length == 256 * 4096 == 1_048_576
    assert PAPER.vocab_size == 128_256 and PAPER.precision == "bf16"


def test_train_iterations_arithmetic():
    plan = plan_training(5_000_000_000, PAPER)
    assert plan.train_iters == 5_000_000_000 // 1_048_576 == 4768
    assert plan.warmup_iters == round(0.1 * 4768) == 477
    assert plan.tokens == 4768 * 1_048_576 <= 5_000_000_000
    assert plan.num_samples == 4768 * 256
    exact = plan_training(60 * 1_048_576, PAPER)
    assert (exact.train_iters, exact.warmup_iters, exact.tokens) == (60, 6, 60 * 1_048_576)


def test_too_few_steps_is_refused_with_the_smallest_budget_that_works():
    with pytest.raises(ValueError, match=rf"buys 9 train iterations.*tokens >= {MIN_TRAIN_ITERS * 1_048_576}"):
        plan_training(9 * 1_048_576 + 5, PAPER)


def test_schedule_is_megatrons_optimizer_param_scheduler():
    """Our learning_rate(step) equals megatron-core's OptimizerParamScheduler, step by step."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    recipe = TrainingRecipe(name="t", seq_length=8, global_batch_size=2, micro_batch_size=1)
    plan = plan_training(2 * 8 * 57, recipe)
    assert (plan.train_iters, plan.warmup_iters) == (57, 6)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=recipe.peak_lr)
    scheduler = OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=recipe.peak_lr, min_lr=recipe.min_lr,
        lr_warmup_steps=plan.warmup_iters, lr_decay_steps=plan.train_iters, lr_decay_style="cosine",
        start_wd=0.1, end_wd=0.1, wd_incr_steps=plan.train_iters, wd_incr_style="constant",
    )
    for step in range(plan.train_iters + 3):
        ours = learning_rate(step, plan, recipe)
        assert math.isclose(ours, optimizer.param_groups[0]["lr"], rel_tol=1e-12, abs_tol=1e-18), step
        scheduler.step(1)
    assert learning_rate(0, plan, recipe) == 0.0
    assert learning_rate(plan.warmup_iters, plan, recipe) == recipe.peak_lr
    assert math.isclose(learning_rate(plan.train_iters, plan, recipe), recipe.min_lr)


def test_recipe_validation_names_the_field():
    with pytest.raises(ValueError, match="global_batch_size=10 must be a multiple of micro_batch_size=4"):
        TrainingRecipe(name="x", global_batch_size=10, micro_batch_size=4)
    with pytest.raises(ValueError, match="warmup_fraction must be in"):
        TrainingRecipe(name="x", warmup_fraction=1.5)
    with pytest.raises(ValueError, match="precision must be bf16 or fp32"):
        PAPER.with_overrides(precision="fp8")


def test_run_id_is_deterministic_and_ignores_how_a_run_executes():
    from recipes.run_spec import make_run_id

    shape = get_shape("1B")
    base = make_run_id(shape, 5 * 10**9, "a" * 64, PAPER, "bridge")
    assert base == make_run_id(shape, 5 * 10**9, "a" * 64, PAPER, "bridge")
    assert base.startswith("1B-5B-")
    assert base == make_run_id(shape, 5 * 10**9, "a" * 64, PAPER.with_overrides(micro_batch_size=4, checkpoint_interval=7), "bridge")
    for changed in (
        make_run_id(get_shape("2B"), 5 * 10**9, "a" * 64, PAPER, "bridge"),
        make_run_id(shape, 6 * 10**9, "a" * 64, PAPER, "bridge"),
        make_run_id(shape, 5 * 10**9, "b" * 64, PAPER, "bridge"),
        make_run_id(shape, 5 * 10**9, "a" * 64, PAPER.with_overrides(peak_lr=1e-3), "bridge"),
        make_run_id(shape, 5 * 10**9, "a" * 64, PAPER, "megatron"),
    ):
        assert changed != base
