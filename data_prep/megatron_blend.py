"""Build a blend with megatron-core's `BlendedMegatronDatasetBuilder`, on CPU.

This is what training reads (the CPU trainer calls `build_gpt_dataset`; Megatron-Bridge
builds the same thing from the blend's `data_path`), and what `data_prep blend-check`
measures: the realised share of samples (so of tokens) drawn from each source. A sharded
source is one megatron-core dataset per shard (the blend's `data_path`); its realised share
is its shards' together.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass

import numpy as np

from data_prep.blend_spec import BlendSpec
from data_prep.indexed import quiet_megatron_import
from synthscale.errors import SynthscaleError


@dataclass(frozen=True)
class BlendTokenizer:
    """The little megatron-core's GPTDataset needs of a tokenizer."""

    vocab_size: int
    eod: int
    spec: str
    sha256: str

    @property
    def unique_identifiers(self) -> dict:
        return {"class": "synthscale", "spec": self.spec, "sha256": self.sha256}

    @property
    def pad(self) -> int:
        return self.eod


def megatron_blend(spec: BlendSpec) -> tuple[list[str], list[float] | None]:
    """GPTDatasetConfig's `blend`: (prefixes, weights), as `get_blend_from_list(data_path)` gives it."""
    data_path = spec.data_path
    prefixes = [str(p) for p in data_path[1::2]]
    if len(prefixes) == 1:
        return prefixes, None
    return prefixes, [float(w) for w in data_path[0::2]]


def gpt_dataset_config(spec: BlendSpec, seq_length: int | None = None, seed: int = 1234,
                       cache_dir: str | Path | None = None):
    with quiet_megatron_import():
        from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

    tokenizer = BlendTokenizer(
        vocab_size=int(spec.tokenizer["vocab_size"]),
        eod=int(spec.tokenizer["eod_id"]),
        spec=str(spec.tokenizer["spec"]),
        sha256=str(spec.tokenizer["sha256"]),
    )
    return GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length or spec.seq_length,
        blend=megatron_blend(spec),
        split="100,0,0",
        tokenizer=tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        path_to_cache=None if cache_dir is None else str(cache_dir),
    )


def _ensure_process_group() -> None:
    """megatron-core's BlendedDataset asks for the rank when it caches its index (it assumes
    training under torch.distributed). A lone CPU process gets a one-rank gloo group on an
    in-memory store: no network, nothing shared with other processes."""
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)


def build_gpt_dataset(spec: BlendSpec, num_samples: int, seq_length: int | None = None,
                      seed: int = 1234, quiet: bool = True, cache_dir: str | Path | None = None):
    """The training split of the blend: `num_samples` samples of `seq_length` tokens.

    Items are dicts of torch tensors: tokens, labels, loss_mask, position_ids.
    megatron-core writes its index cache to `cache_dir` (a run's own folder, so data folders may
    be read-only and concurrent runs never race), or next to the data when it is None.
    """
    with quiet_megatron_import():
        from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
        from megatron.core.datasets.gpt_dataset import GPTDataset

    if num_samples <= 0:
        raise SynthscaleError(f"num_samples: must be positive, got {num_samples}")
    config = gpt_dataset_config(spec, seq_length, seed, cache_dir)
    if cache_dir is not None:
        _ensure_process_group()
    logger = logging.getLogger("megatron.core")
    level = logger.level
    if quiet:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext(), \
                warnings.catch_warnings():
            if quiet:  # BlendTokenizer's pad is its eod on purpose: nothing is masked (as Bridge's NullTokenizer)
                warnings.filterwarnings("ignore", message="The pad token id in the tokenizer collides")
            train, _, _ = BlendedMegatronDatasetBuilder(
                GPTDataset, [num_samples, 0, 0], lambda: True, config
            ).build()
    finally:
        logger.setLevel(level)
    return train


def realised_shares(spec: BlendSpec, num_samples: int | None = None, seed: int = 1234) -> dict:
    """Requested vs realised token share per source for the blend's own budget."""
    seq_length = spec.seq_length
    if num_samples is None:
        num_samples = max(1, spec.tokens // seq_length)
    dataset = build_gpt_dataset(spec, num_samples, seq_length, seed)
    active = spec.active_sources
    # position in data_path -> the source it belongs to (a sharded source has several)
    owner = np.array([i for i, s in enumerate(active) for _ in s.megatron_weights], dtype=np.int64)
    if hasattr(dataset, "dataset_index"):
        per_prefix = np.bincount(np.asarray(dataset.dataset_index)[:num_samples], minlength=len(owner))
        counts = np.bincount(owner, weights=per_prefix, minlength=len(active)).astype(np.int64)
    else:  # a single prefix: megatron returns the GPTDataset itself
        counts = np.array([num_samples])
    shares = counts / counts.sum()
    rows = []
    for source, count, share in zip(active, counts.tolist(), shares.tolist()):
        rows.append({
            "name": source.name,
            "shards": len(source.shards) if source.shards is not None else None,
            "requested_share": source.weight,
            "realised_share": share,
            "abs_error": abs(share - source.weight),
            "samples": count,
            "tokens": count * seq_length,
        })
    return {
        "blend": spec.name,
        "path": spec.path,
        "samples": int(num_samples),
        "seq_length": seq_length,
        "sources": rows,
        "max_abs_error": max(r["abs_error"] for r in rows),
    }
