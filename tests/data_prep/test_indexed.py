"""data_prep.indexed, the one reader of .bin/.idx: what tokenize wrote reads back, in whole-document blocks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from data_prep.indexed import count_tokens, dataset_exists, open_indexed
from data_prep.tokenize import TokenizeConfig, tokenize
from synthscale.errors import MissingInputError, SynthscaleError
from tests.data_prep.conftest import make_docs, write_jsonl
from tests.data_prep.test_tokenize import hf_reference_ids


@pytest.fixture(scope="module")
def written(tmp_path_factory, hf_tokenizer_path):
    root = tmp_path_factory.mktemp("indexed")
    docs = make_docs(200, seed=3)
    spec = f"hf:{hf_tokenizer_path}"
    manifest = tokenize(TokenizeConfig((str(write_jsonl(root / "d.jsonl", docs)),), str(root / "ds"), spec,
                                       show_progress=False))
    return root / "ds", manifest, hf_reference_ids(hf_tokenizer_path, docs)  # from `tokenizers` itself


def test_counts_and_documents_match_what_tokenize_wrote(written):
    prefix, manifest, expected = written
    assert dataset_exists(prefix) and not dataset_exists(prefix.with_name("other"))
    with open_indexed(prefix) as data:
        assert (data.documents, len(data), data.tokens) == (manifest["documents"], 200, manifest["tokens"])
        assert data.dtype == np.dtype(manifest["dtype"])
        assert data.sequence_lengths.tolist() == [len(e) for e in expected]
        assert [data.document(i).tolist() for i in range(data.documents)] == expected
        with pytest.raises(IndexError, match="no document 200"):
            data.document(200)
    assert count_tokens(prefix) == manifest["tokens"]


@pytest.mark.parametrize("block_tokens", [1, 50, 997, 1 << 24])
def test_blocks_hold_whole_documents_in_order(written, block_tokens):
    prefix, _, expected = written
    with open_indexed(prefix) as data:
        blocks = list(data.blocks(block_tokens))
    assert blocks[0][0] == 0 and blocks[-1][1] == len(expected)
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))  # contiguous, no document twice
    for first, stop, tokens in blocks:
        assert stop > first
        assert tokens.tolist() == [t for doc in expected[first:stop] for t in doc]
        # a block only exceeds the budget when it is a single document
        assert tokens.size <= block_tokens or stop - first == 1
    if block_tokens == 1:
        assert len(blocks) == len(expected)
    with open_indexed(prefix) as data, pytest.raises(SynthscaleError, match="block_tokens"):
        next(data.blocks(0))


def test_missing_and_foreign_files_are_named(tmp_path, written):
    with pytest.raises(MissingInputError, match=r"eval domain 'x': no Megatron dataset at prefix .*nothing\.idx"):
        open_indexed(tmp_path / "nothing", "eval domain 'x'")
    (tmp_path / "fake.idx").write_bytes(b"not an index at all")
    (tmp_path / "fake.bin").write_bytes(b"\0" * 8)
    with pytest.raises(SynthscaleError, match="does not start as a megatron-core index"):
        open_indexed(tmp_path / "fake")
    prefix, _, _ = written
    (tmp_path / "cut.idx").write_bytes(open(f"{prefix}.idx", "rb").read()[:20])  # a truncated index
    (tmp_path / "cut.bin").write_bytes(open(f"{prefix}.bin", "rb").read())
    with pytest.raises(SynthscaleError, match="not a readable Megatron dataset"):
        open_indexed(tmp_path / "cut")


def test_importing_the_reader_does_not_import_torch():
    code = ("import sys, json\nimport data_prep.indexed\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'megatron'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
