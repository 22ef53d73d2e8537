"""Fixtures for the analysis tests: simulated results tables and small token files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis.fit import COARSE_GRID, FitSettings
from analysis.simulate import TrueLaw, simulate_table

# Three mixtures of one family, natural text as baseline (the report's inputs).
LAWS = {
    "natural": TrueLaw(A=400.0, B=1200.0, E=1.80, alpha=0.34, beta=0.28),
    "hq_33": TrueLaw(A=400.0, B=900.0, E=1.75, alpha=0.34, beta=0.27),
    "hq_67": TrueLaw(A=400.0, B=1000.0, E=1.85, alpha=0.34, beta=0.29),
}
FRACTIONS = {"natural": 0.0, "hq_33": 0.33, "hq_67": 0.67}
SIZES = [2e7, 5e7, 1e8, 2e8]
BUDGETS = [1e9, 2e9, 4e9, 8e9, 1.6e10]
COARSE = FitSettings(grid=COARSE_GRID)


@pytest.fixture
def results_csv(tmp_path: Path) -> Path:
    """A results table of 3 mixtures x 4 sizes x 5 budgets, 0.2% noise."""
    path = tmp_path / "results.csv"
    simulate_table(LAWS, SIZES, BUDGETS, noise=0.002, seed=1, fractions=FRACTIONS).to_csv(path, index=False)
    return path


@pytest.fixture
def write_tokens():
    return _write_tokens


def _write_tokens(prefix: Path, documents: list[list[int]], eod_id: int | None = None,
                  vocab_size: int | None = None) -> Path:
    """PREFIX.bin/.idx with megatron-core's builder (one sequence per document), and a manifest."""
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.uint16)
    for doc in documents:
        builder.add_item(torch.tensor(doc, dtype=torch.int64))
        builder.end_document()
    builder.finalize(f"{prefix}.idx")
    if eod_id is not None:
        tokenizer = {"spec": "test", "eod_id": eod_id, "vocab_size": vocab_size, "sha256": None}
        Path(f"{prefix}.manifest.json").write_text(json.dumps({"kind": "synthscale.tokenized", "tokenizer": tokenizer}))
    return prefix
