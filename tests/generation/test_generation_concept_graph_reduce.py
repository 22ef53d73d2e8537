"""The concept graph's pair count: key ranges spilled to disk and reduced once each, so the work done
while counting never grows with what was counted before (it re-sorted the whole edge table at
every flush: 10 s at 100K documents, 352 s at 1M). Speed itself: benchmarks/bench_concept_graph.py."""

from __future__ import annotations

from collections import Counter

import numpy as np

import generation.synthllm.pair_counts as pair_counts


def _documents(n_docs: int, vocab: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.unique(rng.integers(0, vocab, size=rng.integers(2, 9))).astype(np.int32) for _ in range(n_docs)]


def test_bucketed_counts_equal_a_plain_count(tmp_path):
    docs = _documents(3000, vocab=400)
    expected = Counter((int(a), int(b)) for ids in docs for i, a in enumerate(ids) for b in ids[i + 1:])
    pairs = pair_counts.PairCounter(tmp_path / "pairs", buffer=500, buckets=8)
    for ids in docs:
        pairs.add(ids)
    assert len(list((tmp_path / "pairs").glob("bucket-*.keys"))) == 8  # spilled to every range
    pairs.flush()
    got = {(int(k >> 32), int(k & 0xFFFFFFFF)): int(c) for k, c in zip(pairs.keys, pairs.counts)}
    assert got == dict(expected)
    assert np.all(np.diff(pairs.keys) > 0)  # sorted and distinct: edges.parquet is written as before
    assert not list((tmp_path / "pairs").glob("bucket-*"))


def test_counting_never_sorts_more_than_a_buffer(tmp_path, monkeypatch):
    """Before the final reduce, no sort sees more than one buffer of keys, however many were counted."""
    sizes = []
    real_unique, real_argsort = np.unique, np.argsort

    def unique(values, *args, **kwargs):
        sizes.append(len(values))
        return real_unique(values, *args, **kwargs)

    def argsort(values, *args, **kwargs):
        sizes.append(len(values))
        return real_argsort(values, *args, **kwargs)

    monkeypatch.setattr(pair_counts.np, "unique", unique)
    monkeypatch.setattr(pair_counts.np, "argsort", argsort)
    pairs = pair_counts.PairCounter(tmp_path / "pairs", buffer=1000, buckets=4) \
        if "folder" in pair_counts.PairCounter.__init__.__code__.co_varnames else pair_counts.PairCounter(1000)
    for ids in _documents(6000, vocab=5000, seed=1):
        pairs.add(ids)
    assert sizes and max(sizes) <= 1000 + 28  # a buffer, plus the last document's pairs
    monkeypatch.setattr(pair_counts.np, "unique", real_unique)
    monkeypatch.setattr(pair_counts.np, "argsort", real_argsort)
    pairs.flush()
    assert len(pairs.keys) > 10_000  # far more distinct pairs than one buffer
