"""The commit log: committed work survives, uncommitted work and torn lines are discarded."""

from __future__ import annotations

import json

import pytest

from generation.store import RunLockedError, ShardStore


def lines(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_commit_and_replay(tmp_path):
    store = ShardStore(tmp_path, 0, 1)
    assert store.open().commits == 0
    store.write_document({"id": "a", "text": "A"})
    store.mark("ka", "ok")
    store.write_failure({"key": "kb", "reason": "x"})
    store.mark_failed("kb", "server_error", True)
    store.write_intermediate({"key": "kc", "text": "outline"})
    store.mark("kc", "ok")
    store.source_done("s1")
    store.count("documents")
    assert store.commit(1.5)
    store.close()

    again = ShardStore(tmp_path, 0, 1)
    r = again.open()
    assert r.commits == 1
    assert r.status == {"ka": "ok", "kb": "failed", "kc": "ok"}
    assert r.failure_reason == {"kb": "server_error"} and r.retryable == {"kb"}
    assert r.sources_done == {"s1"} and r.counters["documents"] == 1 and r.elapsed_s == 1.5
    assert [d["id"] for d in lines(tmp_path / "part-00000-of-00001-00000.jsonl")] == ["a"]
    assert again.read_intermediate() == [{"key": "kc", "text": "outline"}]
    again.close()


def test_uncommitted_writes_and_torn_lines_are_cut_back(tmp_path):
    store = ShardStore(tmp_path, 0, 1)
    store.open()
    store.write_document({"id": "a", "text": "A"})
    store.mark("ka", "ok")
    store.commit(0.1)
    # written but never committed (the process dies here) ...
    store.write_document({"id": "b", "text": "B"})
    store.mark("kb", "ok")
    store.write_failure({"key": "kz"})
    store._data.flush()
    store._fail.flush()
    store.close()
    data = tmp_path / "part-00000-of-00001-00000.jsonl"
    with open(data, "ab") as handle:  # ... and a torn half line
        handle.write(b'{"id": "c", "te')
    with open(tmp_path / "state/part-00000-of-00001/commits.jsonl", "ab") as handle:
        handle.write(b'{"commit": 2, "data": [0, 99')

    again = ShardStore(tmp_path, 0, 1)
    r = again.open()
    assert r.commits == 1 and set(r.status) == {"ka"}
    assert [d["id"] for d in lines(data)] == ["a"]
    assert (tmp_path / "failures/part-00000-of-00001.jsonl").read_bytes() == b""
    assert (tmp_path / "state/part-00000-of-00001/commits.jsonl").read_bytes().count(b"\n") == 1
    again.write_document({"id": "b", "text": "B"})
    again.mark("kb", "ok")
    again.commit(0.1)
    again.close()
    assert [d["id"] for d in lines(data)] == ["a", "b"]


def test_files_roll_over_and_uncommitted_new_files_are_removed(tmp_path):
    store = ShardStore(tmp_path, 1, 3, docs_per_file=2)
    store.open()
    for i in range(5):
        store.write_document({"id": str(i), "text": "t"})
        store.mark(str(i), "ok")
    store.commit(0.0)
    names = sorted(p.name for p in tmp_path.glob("*.jsonl"))
    assert names == ["part-00001-of-00003-00000.jsonl", "part-00001-of-00003-00001.jsonl",
                     "part-00001-of-00003-00002.jsonl"]
    for i in range(5, 8):  # rolls to file 3, never committed
        store.write_document({"id": str(i), "text": "t"})
    store._data.flush()
    store.close()
    assert (tmp_path / "part-00001-of-00003-00003.jsonl").exists()
    again = ShardStore(tmp_path, 1, 3, docs_per_file=2)
    r = again.open()
    assert not (tmp_path / "part-00001-of-00003-00003.jsonl").exists()
    assert r.files == {"part-00001-of-00003-00000.jsonl": 2, "part-00001-of-00003-00001.jsonl": 2,
                       "part-00001-of-00003-00002.jsonl": 1}
    ids = [d["id"] for p in sorted(tmp_path.glob("*.jsonl")) for d in lines(p)]
    assert ids == ["0", "1", "2", "3", "4"]
    again.close()


def test_one_writer_per_shard(tmp_path):
    first = ShardStore(tmp_path, 0, 2)
    first.open()
    with pytest.raises(RunLockedError):
        ShardStore(tmp_path, 0, 2).open()
    ShardStore(tmp_path, 1, 2).open()  # another shard is fine
    first.close()
    ShardStore(tmp_path, 0, 2).open()
