"""Tensor / pipeline / data parallel layout for the Megatron-Bridge and megatron-core backends,
checked before launch.

Rules (each error names the field, the bad value and the values that would work):
  - tensor_parallel divides num_attention_heads and num_query_groups
    (the paper's heads are 9, 13, 20, 28, 35, 41: the 3B shape allows TP=1 only), and the
    vocabulary when it is given (the megatron backend splits the embedding without padding);
  - pipeline_parallel divides num_layers;
  - the world size (nodes x ranks per node: GPUs, or CPU processes for the megatron backend's
    CPU shapes) is a multiple of TP x PP; DP = world / (TP x PP). Ranks per node not given: one
    data-parallel replica on one node (TP x PP ranks);
  - global_batch_size divides by micro_batch_size x DP.
"""

from __future__ import annotations

from dataclasses import dataclass

from recipes.recipe import TrainingRecipe
from recipes.shapes import ModelShape
from synthscale.errors import SynthscaleError

# Per-shape defaults: the smallest model parallelism that fits an 80 GB GPU at seq 4096.
# 3B cannot use TP (41 heads), so it splits its 32 layers over 2 pipeline stages.
DEFAULT_MODEL_PARALLEL: dict[str, tuple[int, int]] = {
    "100M": (1, 1),
    "200M": (1, 1),
    "500M": (1, 1),
    "1B": (1, 1),
    "2B": (1, 1),
    "3B": (1, 2),
}


class ParallelismError(SynthscaleError):
    """A layout that cannot run; the message names the field and the values that work."""


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclass(frozen=True)
class ParallelLayout:
    tensor_parallel: int
    pipeline_parallel: int
    data_parallel: int
    micro_batch_size: int
    num_nodes: int
    gpus_per_node: int

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.gpus_per_node

    def to_dict(self) -> dict:
        return {
            "tensor_parallel": self.tensor_parallel,
            "pipeline_parallel": self.pipeline_parallel,
            "data_parallel": self.data_parallel,
            "micro_batch_size": self.micro_batch_size,
            "num_nodes": self.num_nodes,
            "gpus_per_node": self.gpus_per_node,
            "world_size": self.world_size,
        }


def plan_layout(
    shape: ModelShape,
    recipe: TrainingRecipe,
    *,
    num_nodes: int = 1,
    gpus_per_node: int | None = 8,
    tensor_parallel: int | None = None,
    pipeline_parallel: int | None = None,
    micro_batch_size: int | None = None,
    vocab_size: int | None = None,
) -> ParallelLayout:
    """Validate (and complete with per-shape defaults) a layout; raise ParallelismError if it cannot run.

    `gpus_per_node=None`: one data-parallel replica on one node (TP x PP ranks)."""
    default_tp, default_pp = DEFAULT_MODEL_PARALLEL.get(shape.name, (1, 1))
    tp = default_tp if tensor_parallel is None else tensor_parallel
    pp = default_pp if pipeline_parallel is None else pipeline_parallel
    mbs = recipe.micro_batch_size if micro_batch_size is None else micro_batch_size
    for key, value in (("tensor_parallel", tp), ("pipeline_parallel", pp), ("micro_batch_size", mbs)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ParallelismError(f"{key} must be a positive integer, got {value!r}")
    if gpus_per_node is None:
        if num_nodes != 1:
            raise ParallelismError(f"num_nodes={num_nodes}: give the ranks per node (--gpus-per-node) for more than one node")
        gpus_per_node = tp * pp
    for key, value in (("num_nodes", num_nodes), ("gpus_per_node", gpus_per_node)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ParallelismError(f"{key} must be a positive integer, got {value!r}")
    world = num_nodes * gpus_per_node
    heads, groups, layers = shape.num_heads, shape.query_groups, shape.num_layers

    if heads % tp or groups % tp:
        works = [d for d in _divisors(heads) if groups % d == 0 and world % d == 0]
        raise ParallelismError(
            f"tensor_parallel={tp} must divide num_attention_heads={heads} and num_query_groups={groups} "
            f"of shape {shape.name!r}; values that work on {world} GPUs: {works}"
        )
    if vocab_size is not None and vocab_size % tp:
        works = [d for d in _divisors(heads) if groups % d == 0 and vocab_size % d == 0 and world % d == 0]
        raise ParallelismError(
            f"tensor_parallel={tp} must divide the vocabulary ({vocab_size} tokens) for the megatron backend; "
            f"values that work for shape {shape.name!r} on {world} ranks: {works}"
        )
    if layers % pp:
        works = [d for d in _divisors(layers) if world % (d * tp) == 0]
        raise ParallelismError(
            f"pipeline_parallel={pp} must divide num_layers={layers} of shape {shape.name!r}; "
            f"values that work with tensor_parallel={tp} on {world} GPUs: {works}"
        )
    if world % (tp * pp):
        works = [tp * pp * k for k in range(1, 5)]
        sizes = [(t, p) for t in _divisors(heads) if groups % t == 0 for p in _divisors(layers) if world % (t * p) == 0]
        raise ParallelismError(
            f"world size {world} (num_nodes={num_nodes} x gpus_per_node={gpus_per_node}) must be a multiple of "
            f"tensor_parallel x pipeline_parallel = {tp} x {pp} = {tp * pp}; world sizes that work: {works}, ...; "
            f"(tensor_parallel, pipeline_parallel) pairs that work on {world} GPUs: {sizes}"
        )
    dp = world // (tp * pp)
    gbs = recipe.global_batch_size
    if gbs % (mbs * dp):
        works = [m for m in _divisors(gbs) if gbs % (m * dp) == 0]
        raise ParallelismError(
            f"global_batch_size={gbs} must be divisible by micro_batch_size x data_parallel = "
            f"{mbs} x {dp} = {mbs * dp}; micro_batch_size values that work with data_parallel={dp}: {works}"
        )
    return ParallelLayout(
        tensor_parallel=tp,
        pipeline_parallel=pp,
        data_parallel=dp,
        micro_batch_size=mbs,
        num_nodes=num_nodes,
        gpus_per_node=gpus_per_node,
    )
