"""Build a blend with megatron-core's `BlendedMegatronDatasetBuilder`, on CPU.

This is what training reads (the CPU trainer calls `build_gpt_dataset`; Megatron-Bridge
builds the same thing from the blend's `data_path`), and what `data_prep blend-check`
measures: the realised share of samples (so of tokens) drawn from each source.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass

import numpy as np

from data_prep.blend_spec import BlendSpec


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


def gpt_dataset_config(spec: BlendSpec, seq_length: int | None = None, seed: int = 1234):
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

    active = spec.active_sources
    tokenizer = BlendTokenizer(
        vocab_size=int(spec.tokenizer["vocab_size"]),
        eod=int(spec.tokenizer["eod_id"]),
        spec=str(spec.tokenizer["spec"]),
        sha256=str(spec.tokenizer["sha256"]),
    )
    return GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length or spec.seq_length,
        blend=([s.prefix for s in active], [s.weight for s in active]) if len(active) > 1
        else ([active[0].prefix], None),
        split="100,0,0",
        tokenizer=tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
    )


def build_gpt_dataset(spec: BlendSpec, num_samples: int, seq_length: int | None = None,
                      seed: int = 1234, quiet: bool = True):
    """The training split of the blend: `num_samples` samples of `seq_length` tokens.

    Items are dicts of torch tensors: tokens, labels, loss_mask, position_ids.
    megatron-core writes its index cache next to the data (as in training).
    """
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset

    if num_samples <= 0:
        raise ValueError(f"num_samples: must be positive, got {num_samples}")
    config = gpt_dataset_config(spec, seq_length, seed)
    logger = logging.getLogger("megatron.core")
    level = logger.level
    if quiet:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
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
    if hasattr(dataset, "dataset_index"):
        counts = np.bincount(np.asarray(dataset.dataset_index)[:num_samples], minlength=len(active))
    else:  # a single source: megatron returns the GPTDataset itself
        counts = np.array([num_samples])
    shares = counts / counts.sum()
    rows = []
    for source, count, share in zip(active, counts.tolist(), shares.tolist()):
        rows.append({
            "name": source.name,
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
