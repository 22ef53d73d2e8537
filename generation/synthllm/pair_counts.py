"""Counting concept pairs for `generation concept-graph`: a reduce partitioned by key range.

Pass 2 of the graph build (generation/synthllm/graph_build.py) adds every document's pairs of
kept concepts; the counts are the graph's edge weights. A corpus has far more pairs than fit in
memory at once, so buffers are pre-reduced and spilled to key-range files on disk, and each range
is reduced once at the end: time linear in the pairs, memory ~ one buffer plus one range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PAIR_BUFFER = 4_000_000  # pair keys buffered before they are pre-reduced and spilled to bucket files
PAIR_BUCKETS = 64  # key ranges of the pair keys on disk, each reduced once at the end


def sum_by_key(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct keys, the sum of each key's counts). A stable sort (timsort) merges runs
    that are already sorted, such as the pre-reduced spills of one range, in about linear time."""
    order = np.argsort(keys, kind="stable")
    keys, counts = keys[order], counts[order]
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    return keys[starts], np.add.reduceat(counts, starts)


class PairCounter:
    """Counts (a, b) pairs, a < b, as int64 keys a << 32 | b, in time linear in the pairs.

    A full buffer is pre-reduced (`np.unique`: its distinct keys, sorted, with counts) and cut
    into PAIR_BUCKETS key ranges, whose bounds are quantiles of the first buffer's keys; each
    range is appended to its own pair of files under `folder`. `flush()` reduces each range once
    (a stable sort, which merges the sorted runs the spills left, then a sum per key), so the
    ranges come back in order: `keys` (sorted, distinct) and `counts` hold the result. Nothing
    counted earlier is ever sorted again, unlike a merge of each buffer into the whole table."""

    def __init__(self, folder: Path, buffer: int = PAIR_BUFFER, buckets: int = PAIR_BUCKETS):
        self.keys = np.zeros(0, np.int64)
        self.counts = np.zeros(0, np.int64)
        self._folder = Path(folder)
        self._pending: list[np.ndarray] = []
        self._n = 0
        self._buffer = buffer
        self._buckets = buckets
        self._splitters: np.ndarray | None = None  # the ranges' inner bounds
        self._triu: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def add(self, ids: np.ndarray) -> None:
        n = len(ids)
        if n < 2:
            return
        if n not in self._triu:
            self._triu[n] = np.triu_indices(n, 1)
        i, j = self._triu[n]
        self._pending.append((ids[i].astype(np.int64) << 32) | ids[j].astype(np.int64))
        self._n += len(i)
        if self._n >= self._buffer:
            self._spill()

    def _bucket_files(self, b: int) -> tuple[Path, Path]:
        return self._folder / f"bucket-{b:03d}.keys", self._folder / f"bucket-{b:03d}.counts"

    def _spill(self) -> None:
        """Pre-reduce the buffer and append each key range to its bucket's files."""
        if not self._pending:
            return
        keys, counts = np.unique(np.concatenate(self._pending), return_counts=True)
        self._pending, self._n = [], 0
        if self._splitters is None:
            self._folder.mkdir(parents=True, exist_ok=True)
            picks = np.linspace(0, len(keys) - 1, self._buckets + 1)[1:-1].astype(np.int64)
            self._splitters = keys[picks]
        bounds = np.concatenate(([0], np.searchsorted(keys, self._splitters, side="right"), [len(keys)]))
        for b in range(self._buckets):
            if bounds[b] == bounds[b + 1]:
                continue
            key_file, count_file = self._bucket_files(b)
            with open(key_file, "ab") as handle:
                handle.write(keys[bounds[b]:bounds[b + 1]].tobytes())
            with open(count_file, "ab") as handle:
                handle.write(counts[bounds[b]:bounds[b + 1]].astype(np.int64).tobytes())

    def flush(self) -> None:
        """Reduce every range once; `keys` (sorted) and `counts` hold the result."""
        if self._splitters is None:  # never spilled: one buffer, reduced in memory
            if self._pending:
                self.keys, counts = np.unique(np.concatenate(self._pending), return_counts=True)
                self.counts = counts.astype(np.int64)
                self._pending, self._n = [], 0
            return
        self._spill()
        keys_out, counts_out = [], []
        for b in range(self._buckets):
            key_file, count_file = self._bucket_files(b)
            if not key_file.exists():
                continue
            keys, counts = np.fromfile(key_file, np.int64), np.fromfile(count_file, np.int64)
            key_file.unlink()
            count_file.unlink()
            keys, counts = sum_by_key(keys, counts)
            keys_out.append(keys)
            counts_out.append(counts)
        self.keys, self.counts = np.concatenate(keys_out), np.concatenate(counts_out)
        self._splitters = None
