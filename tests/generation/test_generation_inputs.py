"""Input reading, bad records, and --shard partitions."""

from __future__ import annotations

import gzip
import json

import pytest

from generation.inputs import iter_documents, parse_shard

from genhelpers import write_jsonl


def test_shards_partition_the_input(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": f"a{i}", "text": f"doc {i}"} for i in range(7)])
    b = tmp_path / "b.jsonl.gz"
    with gzip.open(b, "wt", encoding="utf-8") as handle:
        for i in range(6):
            handle.write(json.dumps({"text": f"doc b{i}"}) + "\n\n")
    everything = [(d.gindex, d.source_id) for d in iter_documents([a, b])]
    assert len(everything) == 13 and [g for g, _ in everything] == list(range(13))
    assert everything[7][1] == "b.jsonl.gz:1" and everything[8][1] == "b.jsonl.gz:3"
    for n in (1, 2, 3, 5):
        parts = [[(d.gindex, d.source_id) for d in iter_documents([a, b], shard=(i, n))] for i in range(n)]
        assert sorted(sum(parts, [])) == everything
        assert all(len(p) in (13 // n, 13 // n + 1) for p in parts)
        again = [[(d.gindex, d.source_id) for d in iter_documents([a, b], shard=(i, n))] for i in range(n)]
        assert again == parts


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
