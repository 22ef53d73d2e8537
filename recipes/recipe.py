"""Training hyperparameters (the paper's Table 2), the learning-rate schedule, and the
train-iteration arithmetic shared by both backends.

`PAPER` is Table 2: AdamW (beta1 0.9, beta2 0.95, weight decay 0.1), peak LR 3e-4, linear
warmup over 10% of the steps, cosine decay to 1e-6 x peak, gradient clipping 1.0, sequence
length 4096, global batch 256 sequences (1,048,576 tokens), Llama 3 tokenizer (128,256
entries), bf16. `CPU_TINY` keeps the optimizer and schedule and shrinks the batch and the
sequence so a tiny model trains in seconds on a CPU (in fp32: bf16 on CPU is slow and not
what the GPU runs either).

The schedule is Megatron's `OptimizerParamScheduler` (what Megatron-Bridge runs): at scheduler
step k (k optimizer steps done), warmup gives peak * k / W for k <= W, then cosine
min + (peak - min) * (1 + cos(pi * (k - W) / (T - W))) / 2 until k = T (= train iterations).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from synthscale.errors import SynthscaleError
from synthscale.units import format_count

MIN_TRAIN_ITERS = 50  # fewer steps measure warmup, not training: refuse (the loss of a run this short
# is too far from converged behaviour for a scaling-law fit)


@dataclass(frozen=True)
class TrainingRecipe:
    name: str
    peak_lr: float = 3e-4
    min_lr_ratio: float = 1e-6  # cosine ends at min_lr_ratio x peak_lr
    warmup_fraction: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    weight_decay: float = 0.1
    clip_grad: float = 1.0
    seq_length: int = 4096
    global_batch_size: int = 256  # sequences per optimizer step
    micro_batch_size: int = 1  # sequences per forward pass (per data-parallel rank)
    precision: str = "bf16"  # bf16 | fp32
    vocab_size: int | None = 128_256  # the tokenizer the recipe expects (Llama 3); None: any
    seed: int = 1234
    checkpoint_interval: int = 1000  # optimizer steps between checkpoints

    def __post_init__(self) -> None:
        def positive(key, kind=(int,)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
                raise SynthscaleError(f"recipe {self.name!r}: {key} must be positive, got {value!r}")

        for key in ("seq_length", "global_batch_size", "micro_batch_size", "checkpoint_interval"):
            positive(key)
        if self.vocab_size is not None:
            positive("vocab_size")
        for key in ("peak_lr", "adam_eps", "clip_grad"):
            positive(key, (int, float))
        for key in ("min_lr_ratio", "warmup_fraction", "adam_beta1", "adam_beta2"):
            value = getattr(self, key)
            if not 0.0 <= value < 1.0:
                raise SynthscaleError(f"recipe {self.name!r}: {key} must be in [0, 1), got {value!r}")
        if self.weight_decay < 0:
            raise SynthscaleError(f"recipe {self.name!r}: weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.precision not in ("bf16", "fp32"):
            raise SynthscaleError(f"recipe {self.name!r}: precision must be bf16 or fp32, got {self.precision!r}")
        if self.global_batch_size % self.micro_batch_size:
            raise SynthscaleError(
                f"recipe {self.name!r}: global_batch_size={self.global_batch_size} must be a multiple of "
                f"micro_batch_size={self.micro_batch_size}"
            )

    @property
    def min_lr(self) -> float:
        return self.peak_lr * self.min_lr_ratio

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.seq_length

    def with_overrides(self, **changes) -> "TrainingRecipe":
        """A copy with some fields changed (validated again); None values are ignored."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **changes) if changes else self

    def to_dict(self) -> dict:
        out = asdict(self)
        out["min_lr"] = self.min_lr
        return out


PAPER = TrainingRecipe(name="paper")
CPU_TINY = TrainingRecipe(
    name="cpu-tiny",
    seq_length=128,
    global_batch_size=16,
    micro_batch_size=16,
    precision="fp32",
    vocab_size=None,
    checkpoint_interval=50,
)
RECIPES: dict[str, TrainingRecipe] = {r.name: r for r in (PAPER, CPU_TINY)}


def get_recipe(name: str) -> TrainingRecipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise SynthscaleError(f"unknown training recipe {name!r}; known recipes: {', '.join(RECIPES)}") from None


@dataclass(frozen=True)
class TrainPlan:
    """How many optimizer steps a token budget buys, and the schedule's step counts."""

    tokens_requested: int  # D asked for
    train_iters: int
    warmup_iters: int
    tokens_per_step: int
    global_batch_size: int

    @property
    def tokens(self) -> int:
        """Tokens actually trained on: whole steps only (<= tokens_requested)."""
        return self.train_iters * self.tokens_per_step

    @property
    def num_samples(self) -> int:
        """Training sequences drawn from the blend."""
        return self.train_iters * self.global_batch_size

    def to_dict(self) -> dict:
        return {
            "tokens_requested": self.tokens_requested,
            "tokens": self.tokens,
            "train_iters": self.train_iters,
            "warmup_iters": self.warmup_iters,
            "tokens_per_step": self.tokens_per_step,
            "global_batch_size": self.global_batch_size,
            "num_samples": self.num_samples,
        }


def plan_training(tokens: int, recipe: TrainingRecipe) -> TrainPlan:
    """Train iterations = tokens / (global batch x sequence length), rounded down.

    Refused (SynthscaleError naming the numbers and the smallest budget that works) when that is
    fewer than MIN_TRAIN_ITERS steps.
    """
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens <= 0:
        raise SynthscaleError(f"tokens: must be a positive integer, got {tokens!r}")
    per_step = recipe.tokens_per_step
    iters = tokens // per_step
    if iters < MIN_TRAIN_ITERS:
        raise SynthscaleError(
            f"tokens={tokens} ({format_count(tokens)}) buys {iters} train iterations at "
            f"global_batch_size={recipe.global_batch_size} x seq_length={recipe.seq_length} "
            f"= {per_step} tokens per step; at least {MIN_TRAIN_ITERS} are needed: use tokens >= "
            f"{MIN_TRAIN_ITERS * per_step} or a smaller global batch"
        )
    warmup = max(1, round(recipe.warmup_fraction * iters)) if recipe.warmup_fraction > 0 else 0
    return TrainPlan(
        tokens_requested=tokens,
        train_iters=iters,
        warmup_iters=warmup,
        tokens_per_step=per_step,
        global_batch_size=recipe.global_batch_size,
    )


def learning_rate(step: int, plan: TrainPlan, recipe: TrainingRecipe) -> float:
    """Megatron's warmup + cosine schedule at scheduler step `step` (see module docstring)."""
    peak, floor = recipe.peak_lr, recipe.min_lr
    warmup, total = plan.warmup_iters, plan.train_iters
    if warmup > 0 and step <= warmup:
        return peak * step / warmup
    if step > total:
        return floor
    ratio = (step - warmup) / max(1, total - warmup)
    return floor + (peak - floor) * 0.5 * (math.cos(math.pi * ratio) + 1.0)
