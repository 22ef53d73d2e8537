"""Per-domain evaluation on CPU: each domain's tokens cut into seq_length windows, loss token-weighted.

A domain is a megatron-core indexed dataset (PREFIX.bin/.idx) the user names. Its documents
are read in order (as written, EOD tokens included), concatenated, and cut into
non-overlapping windows of seq_length + 1 tokens (inputs and next-token labels). The domain's
loss is the mean cross-entropy over every predicted token; the run's `loss` is the mean over
domains weighted by their token counts.
"""

from __future__ import annotations

import numpy as np
import torch

from recipes.cpu_model import token_losses


def domain_windows(prefix: str, seq_length: int, max_tokens: int | None = None) -> np.ndarray:
    """(windows, seq_length + 1) int64 array of the domain's tokens, in document order."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(prefix, mmap=True)
    lengths = np.array(dataset.sequence_lengths, dtype=np.int64)  # a copy: the map closes with `dataset`
    if max_tokens is not None:
        docs = int(np.searchsorted(np.cumsum(lengths), max_tokens, side="left")) + 1
        docs = min(docs, len(lengths))
    else:
        docs = len(lengths)
    # Slicing reads the documents in one go; concatenate copies them out of the memory map.
    tokens = np.concatenate([np.asarray(a, dtype=np.int64) for a in dataset[0:docs]]) if docs else np.zeros(0, np.int64)
    del dataset
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    windows = (len(tokens) - 1) // seq_length if len(tokens) > 1 else 0
    if windows < 1:
        raise ValueError(
            f"eval domain {prefix}: {len(tokens)} tokens, fewer than one window of seq_length {seq_length} + 1"
        )
    view = np.lib.stride_tricks.sliding_window_view(tokens, seq_length + 1)[::seq_length]
    return np.ascontiguousarray(view[:windows])


@torch.no_grad()
def evaluate_domain(model, windows: np.ndarray, batch_size: int) -> dict:
    """{loss, tokens}: token-weighted mean cross-entropy over all windows."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, len(windows), batch_size):
            batch = torch.from_numpy(windows[start : start + batch_size])
            losses = token_losses(model, batch[:, :-1], batch[:, 1:])
            total += float(losses.double().sum())
            count += losses.numel()
    finally:
        model.train(was_training)
    return {"loss": total / count, "tokens": count}


def evaluate_domains(model, domains: dict[str, str], seq_length: int, batch_size: int,
                     max_tokens: int | None = None) -> dict[str, dict]:
    return {
        name: evaluate_domain(model, domain_windows(prefix, seq_length, max_tokens), batch_size)
        for name, prefix in domains.items()
    }


def token_weighted_loss(per_domain: dict[str, dict]) -> float:
    tokens = sum(d["tokens"] for d in per_domain.values())
    return sum(d["loss"] * d["tokens"] for d in per_domain.values()) / tokens
