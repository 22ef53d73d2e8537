"""The megatron-core backend's model: `GPTModel` (what Megatron-Bridge builds) from a run's shape.

Llama-3 style, the same fields `recipes/bridge_config.py` gives Bridge's `GPTModelProvider`:
RMSNorm (pre-norm), SwiGLU (`gated_linear_unit` with SiLU), RoPE (base `rope_theta`), no
biases, untied input and output embeddings, no dropout, multi-head or grouped attention from the
shape. The layer spec is megatron-core's local one (`get_gpt_layer_local_spec`): no Transformer
Engine, which has no CPU build; the fused kernels Bridge turns on for GPUs are off.

**Initialisation does not depend on the parallel layout.** With `use_cpu_initialization` megatron
draws each full weight from the CPU RNG and keeps this rank's slice, so TP ranks agree; but a
pipeline stage builds only its own layers and would start drawing where the previous stage never
drew. `SeededTransformerLayer` seeds the CPU RNG from (seed, global layer number) before each
layer, so layer k gets the same weights at any TP x PP, and the output layer (built right after
the last layer) does too. A run therefore trains the same model at TP=1, TP=2, PP=2 or DP=2.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch

from recipes.megatron import cpu_shims
from recipes.shapes import ModelShape
from synthscale.errors import SynthscaleError

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex).*")
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer.transformer_config import TransformerConfig
    from megatron.core.transformer.transformer_layer import TransformerLayer, get_transformer_layer_offset

LAYER_SEED_STRIDE = 1_000_003  # keeps (seed, layer) pairs apart for any layer count


class SeededTransformerLayer(TransformerLayer):
    """megatron-core's TransformerLayer, its weights drawn from the CPU RNG seeded by
    (init_seed, global layer number): the same at every tensor/pipeline layout."""

    def __init__(self, config, submodules, layer_number: int = 1, *args, init_seed: int = 0, **kwargs):
        global_number = layer_number + get_transformer_layer_offset(config, kwargs.get("vp_stage"))
        torch.manual_seed(init_seed * LAYER_SEED_STRIDE + global_number)
        super().__init__(config, submodules, layer_number, *args, **kwargs)


def check_layout(shape: ModelShape, vocab_size: int, tensor_parallel: int, pipeline_parallel: int) -> None:
    """Refuse a layout the shape cannot be split into, naming the value (SynthscaleError)."""
    for what, count in (("num_heads", shape.num_heads), ("num_query_groups", shape.query_groups),
                        ("vocab_size", vocab_size)):
        if count % tensor_parallel:
            raise SynthscaleError(
                f"shape {shape.name}: tensor_parallel={tensor_parallel} does not divide {what}={count}; "
                f"use a tensor-parallel size that divides {count}"
            )
    if shape.num_layers % pipeline_parallel:
        raise SynthscaleError(
            f"shape {shape.name}: pipeline_parallel={pipeline_parallel} does not divide num_layers={shape.num_layers}"
        )


def transformer_config(shape: ModelShape, precision: str = "fp32") -> TransformerConfig:
    """megatron-core's TransformerConfig for a shape at this process's parallel layout."""
    tp = parallel_state.get_tensor_model_parallel_world_size()
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    on_cpu = cpu_shims.needed()
    if on_cpu and precision != "fp32":
        raise SynthscaleError(f"precision {precision!r}: the megatron backend trains in fp32 on CPU; use --precision fp32")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    fields = dict(
        num_layers=shape.num_layers,
        hidden_size=shape.d_model,
        num_attention_heads=shape.num_heads,
        num_query_groups=shape.query_groups,
        kv_channels=shape.head_dim,
        ffn_hidden_size=shape.ffn,
        normalization="RMSNorm",
        layernorm_epsilon=shape.norm_eps,
        gated_linear_unit=True,
        activation_func=torch.nn.functional.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=shape.init_std,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        sequence_parallel=False,
        bf16=precision == "bf16",
        params_dtype=dtype,
        pipeline_dtype=dtype,
        # the loss is the mean over every token of the global batch
        calculate_per_token_loss=True,
        # weights drawn whole from the CPU RNG and sliced per rank (layout-independent init)
        use_cpu_initialization=True,
        # fused kernels: GPU-only, and without Transformer Engine / Apex
        gradient_accumulation_fusion=False,
        bias_activation_fusion=False,
        masked_softmax_fusion=False,
        bias_dropout_fusion=False,
        apply_rope_fusion=False,
        persist_layer_norm=False,
        # p2p_communication.py calls torch.cuda.synchronize() when this is True
        batch_p2p_sync=not on_cpu,
    )
    with warnings.catch_warnings():
        # megatron-core 0.16.1 warns about its own default cuda_graph_scope ("full scope is deprecated")
        warnings.filterwarnings("ignore", message="full scope is deprecated")
        return TransformerConfig(**fields)


def layer_spec(seed: int):
    """The local (no Transformer Engine) Llama layer spec, its layers seeded per global number."""
    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    return dataclasses.replace(spec, module=SeededTransformerLayer, params={**spec.params, "init_seed": seed})


def build_model(shape: ModelShape, vocab_size: int, seq_length: int, seed: int, precision: str = "fp32") -> GPTModel:
    """This rank's part of the GPTModel: its pipeline stage, its tensor-parallel slices."""
    check_layout(shape, vocab_size, parallel_state.get_tensor_model_parallel_world_size(),
                 parallel_state.get_pipeline_model_parallel_world_size())
    config = transformer_config(shape, precision)
    torch.manual_seed(seed)  # the input embedding's draw (first stage)
    model = GPTModel(
        config=config,
        transformer_layer_spec=layer_spec(seed),
        vocab_size=vocab_size,
        max_sequence_length=seq_length,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        share_embeddings_and_output_weights=False,
        position_embedding_type="rope",
        rotary_percent=1.0,
        rotary_base=shape.rope_theta,
    )
    if not cpu_shims.needed():
        model.cuda(torch.cuda.current_device())
    return model


def causal_mask(seq_length: int) -> torch.Tensor:
    """(1, 1, s, s) boolean mask, True where attention is masked (a token's future)."""
    return torch.triu(torch.ones(seq_length, seq_length, dtype=torch.bool), diagonal=1).view(1, 1, seq_length, seq_length)
