"""RoPE settings of a Llama GGUF file that transformers' GGUF loader leaves out.

The loader maps `llama.rope.freq_base` only. `generation convert-gguf` maps the rest itself:
linear scaling (`llama.rope.scaling.type=linear` with `.factor`) becomes the same HF
`rope_parameters`; a `rope_freqs.weight` tensor (llama.cpp's per-frequency factors, which its
converter writes for Llama 3.x models) becomes Llama 3 RoPE when its values are exactly those
transformers computes for Llama 3 RoPE with that factor. Anything else (YaRN, LongRoPE, unknown
scaling keys, other frequency factors) is refused, naming the key: converted without it, the
model would silently use default RoPE.
"""

from __future__ import annotations

from pathlib import Path

from synthscale.errors import SynthscaleError


class GGUFRopeError(SynthscaleError):
    """A GGUF's RoPE setting that convert-gguf cannot carry over; the message names the key."""


ROPE_FREQS = "rope_freqs.weight"
_ROPE_KNOWN = {"llama.rope.scaling.type", "llama.rope.scaling.factor", "llama.rope.scaling.original_context_length",
               "llama.rope.scaling.finetuned"}
# Llama 3.x's rope_scaling besides its factor (the values llama.cpp's converter assumes too)
LLAMA3_ROPE = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def _llama3_factors(meta: dict, factor: float):
    """llama.cpp's rope_freqs for Llama 3 RoPE with `factor`: default inverse frequencies over the
    ones transformers computes for rope_type llama3."""
    import torch
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    heads = int(meta["llama.attention.head_count"])
    head_dim = int(meta.get("llama.rope.dimension_count") or int(meta["llama.embedding_length"]) // heads)
    theta = float(meta.get("llama.rope.freq_base", 10000.0))
    config = LlamaConfig(hidden_size=head_dim * heads, num_attention_heads=heads, head_dim=head_dim,
                         max_position_embeddings=int(meta.get("llama.context_length", 8192)),
                         rope_parameters={"rope_type": "llama3", "factor": factor, "rope_theta": theta, **LLAMA3_ROPE})
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    default = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    return (default / scaled).numpy()


def rope_parameters(gguf_path: Path, header: dict) -> dict | None:
    """The `rope_parameters` (besides rope_theta) the GGUF's RoPE metadata and `rope_freqs.weight`
    call for; None for default RoPE. Refuses, naming the key, what it cannot map."""
    import numpy as np

    meta = header["metadata"]
    unknown = sorted(k for k in meta if k.startswith("llama.rope.scaling.") and k not in _ROPE_KNOWN)
    if unknown:
        raise GGUFRopeError(f"{gguf_path}: {unknown[0]}={meta[unknown[0]]!r} is a RoPE setting convert-gguf does "
                               "not map; converting without it would change the model")
    kind = str(meta.get("llama.rope.scaling.type", "none")).lower()
    mapped: dict | None = None
    if kind == "linear":
        factor = float(meta.get("llama.rope.scaling.factor", 0) or 0)
        if factor <= 0:
            raise GGUFRopeError(f"{gguf_path}: llama.rope.scaling.type='linear' without a positive "
                                   f"llama.rope.scaling.factor (got {meta.get('llama.rope.scaling.factor')!r})")
        mapped = {"rope_type": "linear", "factor": factor}
    elif kind != "none":
        raise GGUFRopeError(f"{gguf_path}: llama.rope.scaling.type={kind!r}: convert-gguf maps linear scaling and "
                               "Llama 3 rope_freqs only; a model converted without it would use default RoPE")
    if ROPE_FREQS not in header["tensor_names"]:
        return mapped
    from gguf import GGUFReader

    tensor = next(t for t in GGUFReader(str(gguf_path)).tensors if t.name == ROPE_FREQS)
    factors = np.asarray(tensor.data, dtype=np.float64).reshape(-1)
    if np.all(factors == 1.0):
        return mapped
    if mapped is not None:
        raise GGUFRopeError(f"{gguf_path}: both llama.rope.scaling.type={kind!r} and {ROPE_FREQS}: not mapped")
    factor = float(factors.max())
    expected = _llama3_factors(meta, factor)
    if expected.shape != factors.shape or not np.allclose(factors, expected, rtol=1e-5, atol=1e-6):
        raise GGUFRopeError(f"{gguf_path}: tensor {ROPE_FREQS} holds RoPE frequency factors that are not Llama 3's "
                               f"(factor {factor:g}, {LLAMA3_ROPE}); transformers would ignore them: not converted")
    return {"rope_type": "llama3", "factor": factor, **LLAMA3_ROPE}
