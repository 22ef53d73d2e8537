"""The CPU backend's model: transformers' `LlamaForCausalLM` built from a recipe shape.

The same shape gives the Megatron `GPTModelProvider` fields in `bridge_config`; this module
maps it to Hugging Face's `LlamaConfig` names (the mapping Megatron-Bridge's own Llama
bridge uses: num_hidden_layers <-> num_layers, intermediate_size <-> ffn_hidden_size, ...).
"""

from __future__ import annotations

import torch

from recipes.shapes import ModelShape


def llama_config(shape: ModelShape, vocab_size: int, seq_length: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape.d_model,
        intermediate_size=shape.ffn,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.query_groups,
        head_dim=shape.head_dim,
        hidden_act="silu",
        max_position_embeddings=seq_length,
        rms_norm_eps=shape.norm_eps,
        rope_theta=shape.rope_theta,
        initializer_range=shape.init_std,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        attention_dropout=0.0,
        use_cache=False,
    )


def build_model(shape: ModelShape, vocab_size: int, seq_length: int, seed: int):
    """A freshly initialised fp32 LlamaForCausalLM (deterministic for a given seed)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(shape, vocab_size, seq_length))
    return model.float()


def non_embedding_parameter_count(model) -> int:
    """Parameters except the input embedding and the output layer (the paper's N)."""
    skip = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def adamw_param_groups(model, weight_decay: float) -> list[dict]:
    """Megatron's rule: no weight decay on 1-D parameters (norm weights, biases)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def token_losses(model, tokens: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor | None = None):
    """Per-token cross-entropy (fp32), shape (batch, seq): labels are already shifted."""
    logits = model(input_ids=tokens, position_ids=position_ids).logits
    loss = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none"
    )
    return loss.view(labels.shape)
