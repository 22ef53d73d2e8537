"""Model shapes: the paper's Llama-3-style models (its Table 1) and tiny CPU shapes.

Every shape is decoder-only: RoPE, RMSNorm (pre-norm), SwiGLU MLP, no biases, untied input
and output embeddings, multi-head attention (one key/value head per query head: the paper
gives head counts only, and 41 heads, the 3B shape, has no grouping but 1 or 41).

The label (`name`) is only a name. The number the scaling laws use is `non_embedding_params`
(the paper's N: every learnable parameter except the input embedding and the output layer),
computed exactly from the shape.

FFN hidden size rule (Table 1 does not give it). Llama 3's own formula:

    ffn = multiple_of * ceil( int(ffn_dim_multiplier * int(8 * d_model / 3)) / multiple_of )

with ffn_dim_multiplier = 1.3 and multiple_of = 256. (Llama 3 8B uses 1.3 with multiple_of
1024; 256 keeps the rounding small for these narrow models.) With it the 1B, 2B and 3B shapes
have 1.04B, 2.06B and 3.20B non-embedding parameters. A shape may set `ffn_hidden_size`
explicitly instead.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from synthscale.errors import SynthscaleError
from synthscale.units import format_count

LLAMA3_VOCAB_SIZE = 128_256
FFN_DIM_MULTIPLIER = 1.3
FFN_MULTIPLE_OF = 256


def llama3_ffn_hidden_size(
    d_model: int, multiplier: float = FFN_DIM_MULTIPLIER, multiple_of: int = FFN_MULTIPLE_OF
) -> int:
    """Llama 3's SwiGLU hidden size for a model width (see the module docstring)."""
    hidden = int(multiplier * int(8 * d_model / 3))
    return multiple_of * math.ceil(hidden / multiple_of)


@dataclass(frozen=True)
class ModelShape:
    """One decoder-only transformer. Validates itself; `N` is computed, never typed in."""

    name: str
    d_model: int
    num_layers: int
    num_heads: int
    head_dim: int = 64
    num_query_groups: int | None = None  # key/value heads; None means one per head (MHA)
    ffn_hidden_size: int | None = None  # None means the Llama 3 rule above
    rope_theta: float = 500_000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    cpu: bool = field(default=False, compare=False)  # small enough to train on CPU (megatron-core over gloo)

    def __post_init__(self) -> None:
        for key in ("d_model", "num_layers", "num_heads", "head_dim"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise SynthscaleError(f"shape {self.name!r}: {key} must be a positive integer, got {value!r}")
        if self.num_heads * self.head_dim != self.d_model:
            raise SynthscaleError(
                f"shape {self.name!r}: num_heads x head_dim must equal d_model, got "
                f"{self.num_heads} x {self.head_dim} = {self.num_heads * self.head_dim} != {self.d_model}"
            )
        if self.head_dim < 32:
            raise SynthscaleError(f"shape {self.name!r}: head_dim must be >= 32, got {self.head_dim}")
        groups = self.query_groups
        if groups <= 0 or self.num_heads % groups:
            raise SynthscaleError(
                f"shape {self.name!r}: num_query_groups must divide num_heads={self.num_heads}, got {groups}"
            )
        if self.ffn_hidden_size is not None and self.ffn_hidden_size <= 0:
            raise SynthscaleError(f"shape {self.name!r}: ffn_hidden_size must be positive, got {self.ffn_hidden_size}")

    # --- derived sizes ------------------------------------------------------------
    @property
    def query_groups(self) -> int:
        return self.num_heads if self.num_query_groups is None else self.num_query_groups

    @property
    def ffn(self) -> int:
        return self.ffn_hidden_size if self.ffn_hidden_size is not None else llama3_ffn_hidden_size(self.d_model)

    @property
    def params_per_layer(self) -> int:
        d, kv = self.d_model, self.query_groups * self.head_dim
        attention = d * d + 2 * d * kv + d * d  # q, k, v, o projections (no biases)
        mlp = 3 * d * self.ffn  # gate, up, down (SwiGLU)
        norms = 2 * d  # RMSNorm before attention and before the MLP
        return attention + mlp + norms

    @property
    def non_embedding_params(self) -> int:
        """The paper's N: all parameters except the input embedding and the output layer."""
        return self.num_layers * self.params_per_layer + self.d_model  # + the final RMSNorm

    @property
    def N(self) -> int:  # noqa: N802 (the paper's symbol)
        return self.non_embedding_params

    def embedding_params(self, vocab_size: int) -> int:
        """Input embedding plus the untied output layer."""
        return 2 * vocab_size * self.d_model

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("cpu")
        out.update(
            num_query_groups=self.query_groups,
            ffn_hidden_size=self.ffn,
            non_embedding_params=self.non_embedding_params,
        )
        return out


def _shape(name: str, d_model: int, num_layers: int, num_heads: int, **kw) -> ModelShape:
    return ModelShape(name=name, d_model=d_model, num_layers=num_layers, num_heads=num_heads, **kw)


PAPER_SHAPES: dict[str, ModelShape] = {
    s.name: s
    for s in (
        _shape("100M", 576, 7, 9),
        _shape("200M", 832, 10, 13),
        _shape("500M", 1280, 16, 20),
        _shape("1B", 1792, 22, 28),
        _shape("2B", 2240, 28, 35),
        _shape("3B", 2624, 32, 41),
    )
}

# Tiny shapes for CPU training, the demo and the tests (head_dim 32 or 64).
TINY_SHAPES: dict[str, ModelShape] = {
    s.name: s
    for s in (
        _shape("tiny-2xs", 32, 2, 1, head_dim=32, cpu=True),
        _shape("tiny-xs", 64, 2, 2, head_dim=32, cpu=True),
        _shape("tiny-s", 128, 4, 4, head_dim=32, cpu=True),
        _shape("tiny-m", 256, 4, 4, head_dim=64, cpu=True),
    )
}

SHAPES: dict[str, ModelShape] = {**PAPER_SHAPES, **TINY_SHAPES}


def get_shape(name: str) -> ModelShape:
    try:
        return SHAPES[name]
    except KeyError:
        raise SynthscaleError(f"unknown model shape {name!r}; known shapes: {', '.join(SHAPES)}") from None


def describe_shapes() -> list[dict]:
    """Rows for `recipes shapes`: the registry with computed N."""
    rows = []
    for shape in SHAPES.values():
        rows.append(
            {
                "name": shape.name,
                "d_model": shape.d_model,
                "layers": shape.num_layers,
                "heads": shape.num_heads,
                "head_dim": shape.head_dim,
                "ffn": shape.ffn,
                "N": shape.non_embedding_params,
                "N_label": format_count(shape.non_embedding_params),
                "cpu": shape.cpu,
            }
        )
    return rows
