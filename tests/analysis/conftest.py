"""Fixtures for the analysis tests: simulated results tables and small token files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.analysis.helpers import BUDGETS, CONDITION, FRACTIONS, LABELS, LAWS, SIZES, TABLE_COLUMNS
from tests.analysis.simulate import simulate_table


@pytest.fixture
def results_csv(tmp_path: Path) -> Path:
    """A results table of 3 mixtures x 4 sizes x 5 budgets, 0.1% noise, every column of
    `recipes results`; the natural baseline at the largest (N, D) trained with 3 seeds.
    (At 0.2% noise hq-33pct's joint-law E is not pinned within 20% of its smallest loss: E's rule.)"""
    path = tmp_path / "results.csv"
    frame = simulate_table(LAWS, SIZES, BUDGETS, noise=0.001, seed=1, fractions=FRACTIONS, labels=LABELS,
                           condition=CONDITION, repeats={("natural", SIZES[-1], BUDGETS[-1]): 3})
    assert list(frame.columns) == TABLE_COLUMNS
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def write_tokens():
    return _write_tokens


def _write_tokens(prefix: Path, documents: list[list[int]], eod_id: int | None = None,
                  vocab_size: int | None = None) -> Path:
    """PREFIX.bin/.idx with megatron-core's builder (one sequence per document), and a manifest."""
    import torch

    from data_prep.indexed import megatron_indexed

    builder = megatron_indexed().IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.uint16)
    for doc in documents:
        builder.add_item(torch.tensor(doc, dtype=torch.int64))
        builder.end_document()
    builder.finalize(f"{prefix}.idx")
    if eod_id is not None:
        tokenizer = {"spec": "test", "eod_id": eod_id, "vocab_size": vocab_size, "sha256": None}
        Path(f"{prefix}.manifest.json").write_text(json.dumps({"kind": "synthscale.tokenized", "tokenizer": tokenizer}))
    return prefix
