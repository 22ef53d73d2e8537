"""data_prep merge: shards -> one dataset, read back by megatron-core as the concatenation of its parts."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from click.testing import CliRunner

from data_prep.cli import main
from data_prep.merge import merge
from data_prep.sources import open_tokenized
from data_prep.tokenize import TokenizeConfig, tokenize
from synthscale.files import sha256_file
from tests.data_prep.conftest import make_docs, write_jsonl


def tok(inputs, prefix, spec):
    return tokenize(TokenizeConfig(tuple(str(i) for i in inputs), str(prefix), spec, skip_invalid=True,
                                   show_progress=False))


@pytest.fixture(scope="module")
def parts(tmp_path_factory, hf_tokenizer_path):
    """Four inputs tokenized one shard each (the last with two inputs), and all of them in one run."""
    root = tmp_path_factory.mktemp("merge").resolve()
    spec = f"hf:{hf_tokenizer_path}"
    inputs = []
    for i, n in enumerate((150, 400, 90, 260, 120)):
        docs = make_docs(n, seed=20 + i)
        if i % 2:  # generated documents in some shards: origins to merge
            docs = [{**d, "recipe": "qa", "generator": f"gen@00000000000{i}"} for d in docs]
        inputs.append(write_jsonl(root / f"in-{i}.jsonl", docs, raw_lines=[b'{"text": ""}'] if i == 2 else []))
    groups = [inputs[0:1], inputs[1:2], inputs[2:3], inputs[3:5]]
    prefixes = []
    for i, group in enumerate(groups):
        tok(group, root / "shards" / f"s-{i}", spec)
        prefixes.append(root / "shards" / f"s-{i}")
    tok(inputs, root / "whole", spec)
    return root, prefixes


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def read(prefix):
    from data_prep.indexed import megatron_indexed

    dataset = megatron_indexed().IndexedDataset(str(prefix))  # megatron-core's own view: document_indices too
    docs = [np.array(dataset[i]) for i in range(len(dataset))]  # copies: the reader's memory map goes with it
    return docs, np.array(dataset.sequence_lengths), np.array(dataset.document_indices), dataset.index.dtype


def test_merge_round_trips_through_megatron_core(tmp_path, parts):
    root, prefixes = parts
    out = tmp_path / "merged"
    code, output = cli("merge", root / "shards" / "s-*", "--output", out)
    assert code == 0, output
    assert "merged 4 datasets" in output
    # megatron-core reads back the concatenation of the parts, document by document
    merged_docs, lengths, doc_index, dtype = read(out)
    expected = [doc for prefix in prefixes for doc in read(prefix)[0]]
    assert len(merged_docs) == len(expected) and all(np.array_equal(a, b) for a, b in zip(merged_docs, expected))
    assert lengths.tolist() == [len(d) for d in expected]
    assert doc_index.tolist() == list(range(len(expected) + 1)) and dtype == read(prefixes[0])[3]
    # ... and exactly what one tokenize of all the inputs writes
    for suffix in (".bin", ".idx"):
        assert sha256_file(f"{out}{suffix}") == sha256_file(f"{root / 'whole'}{suffix}")
    with gzip.open(f"{out}.doc_ids.tsv.gz", "rt") as a, gzip.open(f"{root / 'whole'}.doc_ids.tsv.gz", "rt") as b:
        assert a.read() == b.read()
    merged, whole = (json.loads(open(f"{p}.manifest.json").read()) for p in (out, root / "whole"))
    shard_manifests = [json.loads(open(f"{p}.manifest.json").read()) for p in prefixes]
    for key in ("documents", "tokens", "dtype", "tokenizer", "inputs", "skipped", "origin"):
        assert merged[key] == whole[key], key
    assert merged["documents"] == sum(m["documents"] for m in shard_manifests)
    assert merged["skipped"]["empty"] == 1 and merged["origin"]["generator"] == {
        "gen@000000000001": 400, "gen@000000000003": 260}
    assert merged["bin_sha256"] == sha256_file(f"{out}.bin") and merged["idx_sha256"] == sha256_file(f"{out}.idx")
    assert merged["doc_ids"]["sha256"] == sha256_file(f"{out}.doc_ids.tsv.gz")
    assert [(m["prefix"], m["manifest_sha256"], m["bin_sha256"], m["tokens"]) for m in merged["merged_from"]] == [
        (str(p), sha256_file(f"{p}.manifest.json"), s["bin_sha256"], s["tokens"])
        for p, s in zip(prefixes, shard_manifests)]
    assert merged["prefix"] == str(out.resolve()) and merged["provenance"]["config"]["parts"] == [str(p) for p in prefixes]
    # a complete dataset for blends
    assert open_tokenized("m", out).tokens == whole["tokens"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_merge_keeps_the_order_given_and_takes_lists(tmp_path, parts):
    root, prefixes = parts
    listing = tmp_path / "parts.txt"
    listing.write_text(f"{prefixes[2]}\n{prefixes[0]}\n")
    manifest = merge([str(listing), str(prefixes[1])], str(tmp_path / "m"), show_progress=False)
    assert [m["prefix"] for m in manifest["merged_from"]] == [str(prefixes[i]) for i in (2, 0, 1)]
    expected = [doc for i in (2, 0, 1) for doc in read(prefixes[i])[0]]
    merged = read(tmp_path / "m")[0]
    assert all(np.array_equal(a, b) for a, b in zip(merged, expected)) and len(merged) == len(expected)
    with gzip.open(tmp_path / "m.doc_ids.tsv.gz", "rt") as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle][1:]
    # each document maps back to its input file (the manifest's inputs, in merged order) and line
    assert rows[0][:3] == ["0", "0", "1"] and rows[-1][0] == str(len(expected) - 1)
    assert manifest["inputs"][int(rows[-1][1])]["path"] == str(root / "in-1.jsonl")


def test_merge_refuses_by_name_and_writes_nothing(tmp_path, parts, ranks_path):
    root, prefixes = parts
    other = tmp_path / "other"
    tok([write_jsonl(tmp_path / "o.jsonl", make_docs(30))], other, f"tiktoken:{ranks_path}")
    code, output = cli("merge", prefixes[0], other, prefixes[1], "--output", tmp_path / "m")
    assert code == 1 and f"dataset {str(other)!r} was tokenized with 'tiktoken:{ranks_path}'" in output
    assert "merged datasets need one tokenizer" in output
    code, output = cli("merge", prefixes[0], prefixes[1], "--output", prefixes[1])
    assert code == 1 and "is one of the datasets to merge" in output
    code, output = cli("merge", prefixes[0], prefixes[0], "--output", tmp_path / "m")
    assert code == 1 and f"{str(prefixes[0])!r} is given twice" in output
    code, output = cli("merge", tmp_path / "nothing-*", "--output", tmp_path / "m")
    assert code == 1 and "no tokenized dataset matches" in output
    assert not list(tmp_path.glob("m*")) and not list(tmp_path.glob(".tmp-*"))
    assert sha256_file(f"{prefixes[1]}.bin") == json.loads(open(f"{prefixes[1]}.manifest.json").read())["bin_sha256"]


def test_a_failed_merge_leaves_nothing_complete_looking(tmp_path, parts, monkeypatch):
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    root, prefixes = parts
    out = tmp_path / "m"
    merge([str(p) for p in prefixes[:2]], str(out), show_progress=False)  # an earlier merge in place
    original = IndexedDatasetBuilder.add_index
    calls = []

    def failing(self, prefix):
        calls.append(prefix)
        if len(calls) == 3:
            raise OSError("disk full")
        original(self, prefix)

    monkeypatch.setattr(IndexedDatasetBuilder, "add_index", failing)
    with pytest.raises(OSError, match="disk full"):
        merge([str(p) for p in prefixes], str(out), show_progress=False)
    assert not (tmp_path / "m.manifest.json").exists() and not list(tmp_path.glob(".tmp-*"))
    with pytest.raises(FileNotFoundError, match="no manifest"):
        open_tokenized("m", out)


def test_merge_help_has_an_example():
    code, output = cli("merge", "--help")
    assert code == 0 and "Example" in output and "add_index" in output


@pytest.mark.parametrize("corrupt", [".bin", ".idx"])
def test_a_corrupt_part_is_refused_unless_no_verify(tmp_path, parts, corrupt):
    """Parts were checked by size only: a corrupt part was merged under a new, self-consistent sha256."""
    import shutil

    copies = []
    for prefix in parts[1][:2]:
        for suffix in (".bin", ".idx", ".manifest.json", ".doc_ids.tsv.gz"):
            shutil.copy(f"{prefix}{suffix}", tmp_path / f"{prefix.name}{suffix}")
        copies.append(tmp_path / prefix.name)
    target = tmp_path / f"{copies[1].name}{corrupt}"
    data = bytearray(target.read_bytes())
    data[-2] ^= 0xFF  # same size, other bytes
    target.write_bytes(bytes(data))
    result = CliRunner().invoke(main, ["merge", *map(str, copies), "--output", str(tmp_path / "m"), "--no-progress"])
    assert result.exit_code == 1 and f"{copies[1]}{corrupt} has sha256" in result.output
    assert not list(tmp_path.glob("m.*"))
    result = CliRunner().invoke(main, ["merge", *map(str, copies), "--output", str(tmp_path / "m"), "--no-progress",
                                       "--no-verify", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["parts_verified"] is False
    assert json.loads((tmp_path / "m.manifest.json").read_text())["parts_verified"] is False
