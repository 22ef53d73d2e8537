"""Input reading, bad records, and --shard partitions."""

from __future__ import annotations

import gzip
import json

import pytest

from generation.corpus.documents import iter_documents, parse_shard, plan_slices, stable_index

from genhelpers import write_jsonl


def test_shards_partition_the_input(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": f"a{i}", "text": f"doc {i}"} for i in range(7)])
    b = tmp_path / "b.jsonl.gz"
    with gzip.open(b, "wt", encoding="utf-8") as handle:
        for i in range(6):
            handle.write(json.dumps({"text": f"doc b{i}"}) + "\n\n")
    everything = [(d.source_id, d.line, d.text) for d in iter_documents([a, b])]
    assert len(everything) == 13 and everything[7][0] == "b.jsonl.gz:1" and everything[8][0] == "b.jsonl.gz:3"
    assert [d.gindex for d in iter_documents([a, b])] == [stable_index(i) for i, _, _ in everything]
    for n in (1, 2, 3, 5):
        parts = [[(d.source_id, d.line, d.text) for d in iter_documents([a, b], shard=(i, n))] for i in range(n)]
        assert sorted(sum(parts, [])) == sorted(everything)  # every record once, with the same id and line
        again = [[(d.source_id, d.line, d.text) for d in iter_documents([a, b], shard=(i, n))] for i in range(n)]
        assert again == parts


def test_fallback_ids_are_relative_to_the_inputs_common_root(tmp_path):
    """Id-less records of a/train.jsonl and b/train.jsonl had the same ids: the second file became
    duplicate_id failures."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_jsonl(tmp_path / folder / "train.jsonl", [{"text": f"{folder} {i}"} for i in range(3)])
    got = [(d.source_id, d.error) for d in iter_documents([tmp_path / "a" / "train.jsonl",
                                                            tmp_path / "b" / "train.jsonl"])]
    assert got == [(f"{f}/train.jsonl:{i}", None) for f in ("a", "b") for i in (1, 2, 3)]


def test_a_shard_parses_only_its_own_slice(tmp_path, monkeypatch):
    """Every worker JSON-parsed the whole input (and kept every id): I/O and memory x shards."""
    import generation.corpus.documents as inputs

    path = write_jsonl(tmp_path / "big.jsonl", [{"id": f"d{i}", "text": "word " * (i % 7 + 1)} for i in range(4000)])
    parsed = []
    real = json.loads
    monkeypatch.setattr(inputs.json, "loads", lambda raw, *a, **k: (parsed.append(1), real(raw, *a, **k))[1])
    mine = list(iter_documents([path], shard=(3, 8)))
    assert 400 < len(mine) < 600
    assert len(parsed) <= 2 * len(mine) + 2  # the duplicate scan and the read, of its slice only
    slices = plan_slices([path], (3, 8))
    assert len(slices) == 1 and slices[0].end - slices[0].start <= path.stat().st_size // 8 + 1


def test_line_numbers_and_duplicates_in_a_later_slice(tmp_path):
    rows = [{"id": f"d{i}", "text": "x " * 30} for i in range(200)]
    rows[150] = {"text": "no id here"}
    rows[170] = {"id": "d160", "text": "the same id again"}
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    found = {d.source_id: d for i in range(4) for d in iter_documents([path], shard=(i, 4))}
    assert found["in.jsonl:151"].line == 151 and found["in.jsonl:151"].error is None
    assert found["d160@in.jsonl:171"].error == "duplicate_id" and found["d160"].error is None


def test_bad_records_are_reported_not_raised(tmp_path):
    path = tmp_path / "bad.jsonl"
    with open(path, "wb") as handle:
        handle.write(b'{"id": "ok", "text": "fine"}\n')
        handle.write(b'{"id": "u", "text": "caf\xe9"}\n')
        handle.write(b'{"id": "m", "text": \n')
        handle.write(b'{"id": "n"}\n')
        handle.write(b'{"id": "t", "text": 5}\n')
        handle.write(b'{"id": "e", "text": "  "}\n')
        handle.write(b'{"id": "ok", "text": "again"}\n')
        handle.write(b'{"id": "s", "text": "\\ud800"}\n')
        handle.write(b'[1, 2]\n')
    got = [(d.source_id, d.error) for d in iter_documents([path])]
    assert got == [
        ("ok", None),
        ("bad.jsonl:2", "invalid_utf8"),
        ("bad.jsonl:3", "malformed_json"),
        ("n", "missing_text"),
        ("t", "text_not_string"),
        ("e", "empty_text"),
        ("ok@bad.jsonl:7", "duplicate_id"),
        ("s", "invalid_utf8"),
        ("bad.jsonl:9", "malformed_json"),
    ]


@pytest.mark.parametrize("spec, expected", [(None, (0, 1)), ("0/1", (0, 1)), ("3/4", (3, 4))])
def test_parse_shard(spec, expected):
    assert parse_shard(spec) == expected


@pytest.mark.parametrize("spec", ["4/4", "-1/2", "1", "a/b", "0/0"])
def test_parse_shard_rejects(spec):
    with pytest.raises(ValueError, match="--shard"):
        parse_shard(spec)
