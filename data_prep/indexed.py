"""Megatron indexed datasets (PREFIX.bin + PREFIX.idx): the project's one reader of them.

Reading goes through megatron-core's `IndexedDataset` (memory-mapped), as training reads the
data; writing goes through its `IndexedDatasetBuilder` (`data_prep tokenize` and `merge`).
Both come from `megatron_indexed()`, the one place that imports megatron-core's module.

megatron-core (and with it torch) is imported on first use only, so importing this module is
cheap; it is part of the `data_prep` extra. Importing megatron-core costs seconds: its package
`__init__` imports the whole library, and `indexed_dataset` itself imports torch and
`megatron.core.utils` (see docs/formats.md, "Start-up").

    with open_indexed("data/cc") as data:
        data.documents, data.tokens, data.dtype     # counts from the .idx alone
        data.document(0)                            # one document's token ids (numpy)
        for first, stop, tokens in data.blocks():   # whole documents, ~16M tokens at a time
            ...
"""

from __future__ import annotations

import contextlib
import struct
import sys
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from synthscale.errors import MissingInputError, SynthscaleError

DEFAULT_BLOCK_TOKENS = 1 << 24
IDX_MAGIC = b"MMIDIDX\x00\x00"  # the first bytes of every .idx megatron-core writes


@contextlib.contextmanager
def quiet_megatron_import():
    """Without Transformer Engine or Apex, megatron-core warns at import about GPU kernels it falls
    back from; data preparation uses none of them. Import megatron-core inside this."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex).*")
        yield


def megatron_indexed():
    """megatron-core's `megatron.core.datasets.indexed_dataset` module (the reader and the builder)."""
    with quiet_megatron_import():
        from megatron.core.datasets import indexed_dataset

    return indexed_dataset


def dataset_exists(prefix: str | Path) -> bool:
    """Whether PREFIX.bin and PREFIX.idx both exist (no megatron-core import)."""
    prefix = str(prefix)
    return Path(prefix + ".bin").is_file() and Path(prefix + ".idx").is_file()


class IndexedTokens:
    """An open PREFIX.bin/.idx. A `data_prep` dataset holds one sequence per document."""

    def __init__(self, prefix: str, dataset) -> None:
        self.prefix = prefix
        self._dataset = dataset  # kept alive while its memory maps are read

    @property
    def sequence_lengths(self) -> np.ndarray:
        """Tokens in each sequence (int32), from the .idx."""
        return self._dataset.sequence_lengths

    @property
    def documents(self) -> int:
        return len(self._dataset)

    @property
    def tokens(self) -> int:
        return int(self._dataset.sequence_lengths.sum(dtype=np.int64))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._dataset.index.dtype)

    def __len__(self) -> int:
        return self.documents

    def document(self, index: int) -> np.ndarray:
        """The token ids of document `index` (a read-only view of the memory map)."""
        if not 0 <= index < self.documents:
            raise IndexError(f"{self.prefix!r}: no document {index} (it has {self.documents:,})")
        return self._dataset[index]

    def blocks(self, block_tokens: int = DEFAULT_BLOCK_TOKENS) -> Iterator[tuple[int, int, np.ndarray]]:
        """(first, stop, tokens): documents first..stop-1 end to end, about `block_tokens` at a time.

        A block holds whole documents, at least one, so memory stays near `block_tokens` whatever
        the dataset's size (a document longer than that is one block).
        """
        if block_tokens < 1:
            raise SynthscaleError(f"block_tokens: must be positive, got {block_tokens}")
        ends = np.cumsum(self.sequence_lengths, dtype=np.int64)
        start, n = 0, self.documents
        while start < n:
            done = int(ends[start - 1]) if start else 0
            stop = min(n, max(start + 1, int(np.searchsorted(ends, done + block_tokens, side="right"))))
            yield start, stop, np.concatenate(self._dataset[start:stop])
            start = stop

    def close(self) -> None:
        self._dataset = None

    def __enter__(self) -> "IndexedTokens":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_indexed(prefix: str | Path, label: str | None = None) -> IndexedTokens:
    """Open PREFIX.bin/.idx; a missing file is a MissingInputError that names it (and `label`)."""
    prefix = str(prefix)
    for suffix in (".idx", ".bin"):
        if not Path(prefix + suffix).is_file():
            raise MissingInputError(f"{label + ': ' if label else ''}no Megatron dataset at prefix {prefix!r} "
                                    f"({prefix + suffix!r} is missing)")
    where = f"{label + ': ' if label else ''}{prefix!r} is not a readable Megatron dataset"
    with open(prefix + ".idx", "rb") as handle:
        if handle.read(len(IDX_MAGIC)) != IDX_MAGIC:
            raise SynthscaleError(f"{where}: {prefix + '.idx'!r} does not start as a megatron-core index")
    IndexedDataset = megatron_indexed().IndexedDataset
    hook = sys.unraisablehook
    try:
        try:
            return IndexedTokens(prefix, IndexedDataset(prefix, mmap=True))
        except (AssertionError, ValueError, struct.error) as exc:  # a truncated or inconsistent index
            message = f"{where}: {exc or type(exc).__name__}"
            # the half-built reader is collected when this block ends, and megatron-core's __del__
            # fails on it ("Exception ignored ... has no attribute 'index'"): not the user's news
            sys.unraisablehook = lambda _: None
    finally:
        sys.unraisablehook = hook
    raise SynthscaleError(message)


def count_tokens(prefix: str | Path, label: str | None = None) -> int:
    """Tokens in PREFIX.bin, from its .idx."""
    with open_indexed(prefix, label) as data:
        return data.tokens
