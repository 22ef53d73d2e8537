"""The commit log: committed work survives, uncommitted work and torn lines are discarded."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from generation.run.store import RunLockedError, ShardStore, StoreDamagedError
from generation.run.work_plan import document_id, work_key


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


# ---------------------------------------------------------------- damage after a commit (issue 16 §1)
DATA0 = "part-00000-of-00001-00000.jsonl"


def key(i):
    return work_key(f"s{i}", 0, "hq", "article")


def doc_of(k):
    source_id, chunk, recipe, _step, kk = json.loads(k)
    return document_id(recipe, source_id, chunk, kk)


def _committed_store(tmp_path, n=4, docs_per_file=100):
    store = ShardStore(tmp_path, 0, 1, docs_per_file=docs_per_file)
    store.open()
    for i in range(n):
        store.write_document({"id": doc_of(key(i)), "text": f"text {i}", "output_tokens": 2})
        store.mark(key(i), "ok")
        store.count("documents")
        store.count("document_tokens", 2)
    store.commit(0.1)
    store.close()
    return tmp_path / DATA0


@pytest.mark.parametrize("damage", ["truncate", "delete", "nul_tail", "garbage_tail"])
def test_damaged_committed_file_is_refused_naming_it(tmp_path, damage):
    """A file shorter than committed was extended with NUL bytes and its keys kept as done; a
    deleted one was recreated empty. Both, and a corrupt tail, are now refused, naming the file."""
    data = _committed_store(tmp_path)
    raw = data.read_bytes()
    if damage == "truncate":
        data.write_bytes(raw[:-23])
    elif damage == "delete":
        data.unlink()
    elif damage == "nul_tail":
        data.write_bytes(raw[:-10] + b"\x00" * 10)
    else:
        data.write_bytes(raw[:-12] + b'xx"broken"}\n')
    with pytest.raises(StoreDamagedError, match=re.escape(str(data))):
        ShardStore(tmp_path, 0, 1).open()
    if damage != "delete":
        assert data.stat().st_size == len(raw) - (23 if damage == "truncate" else 0)  # left as it was
    else:
        assert not data.exists()


def test_damage_of_a_closed_data_file_is_found(tmp_path):
    _committed_store(tmp_path, n=5, docs_per_file=2)  # files 00000, 00001 (closed), 00002 (current)
    closed = tmp_path / "part-00000-of-00001-00001.jsonl"
    closed.write_bytes(closed.read_bytes()[:5])
    with pytest.raises(StoreDamagedError, match=re.escape(str(closed))):
        ShardStore(tmp_path, 0, 1, docs_per_file=2).open()


@pytest.mark.parametrize("damage", ["truncate", "delete", "nul_tail"])
def test_repair_keeps_intact_lines_and_reopens_exactly_the_lost_keys(tmp_path, damage):
    data = _committed_store(tmp_path)
    raw = data.read_bytes()
    linked = tmp_path / "merged-copy.jsonl"
    os.link(data, linked)  # a hard link (as `generation merge` made) is left as it was
    if damage == "truncate":
        data.write_bytes(raw[:-23])  # the last document is cut
    elif damage == "delete":
        data.unlink()
    else:
        data.write_bytes(raw[:-10] + b"\x00" * 10)
    store = ShardStore(tmp_path, 0, 1)
    r = store.open(repair=doc_of)
    kept = [] if damage == "delete" else [doc_of(key(i)) for i in range(3)]
    assert set(r.status) == {key(i) for i in range(4) if doc_of(key(i)) in kept}
    assert r.sources_done == set() and r.sources_counted == set()
    assert r.counters["documents"] == len(kept) and r.counters["document_tokens"] == 2 * len(kept)
    assert r.repairs[0]["documents_lost"] == 4 - len(kept) and r.repairs[0]["damaged"][0].startswith(str(data))
    if kept:
        assert [d["id"] for d in lines(data)] == kept
    else:
        assert not data.exists() and DATA0 not in r.files
    if damage != "delete":
        assert linked.read_bytes() == (raw[:-23] if damage == "truncate" else raw[:-10] + b"\x00" * 10)
    # the lost keys are generated again, into a new file; nothing is refused any more
    for i in range(4):
        if key(i) not in r.status:
            store.write_document({"id": doc_of(key(i)), "text": f"text {i}", "output_tokens": 2})
            store.mark(key(i), "ok")
    store.commit(0.1)
    store.close()
    again = ShardStore(tmp_path, 0, 1)
    r2 = again.open()
    ids = sorted(d["id"] for p in sorted(tmp_path.glob("part-*.jsonl")) for d in lines(p))
    assert ids == sorted(doc_of(key(i)) for i in range(4)) and set(r2.status) == {key(i) for i in range(4)}
    again.close()


def test_a_corrupt_line_inside_the_log_is_refused(tmp_path):
    _committed_store(tmp_path, n=1)
    store = ShardStore(tmp_path, 0, 1)
    store.open()
    store.write_document({"id": "x", "text": "t"})
    store.mark("kx", "ok")
    store.commit(0.1)
    store.close()
    log = tmp_path / "state/part-00000-of-00001/commits.jsonl"
    first, second = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(first[:-5] + b"\x00\x00\x00\x00\n" + second)
    with pytest.raises(StoreDamagedError, match="line 1 of 2"):
        ShardStore(tmp_path, 0, 1).open()


def test_new_files_are_fsynced_in_their_directory_before_a_commit_names_them(tmp_path, monkeypatch):
    import generation.run.store as store_module

    events = []
    real = store_module.fsync_dir
    monkeypatch.setattr(store_module, "fsync_dir", lambda path: (events.append(("dir", Path(path))), real(path)))
    store = ShardStore(tmp_path, 0, 1, docs_per_file=1)
    store.open()
    store.write_document({"id": "a", "text": "A"})
    store.write_document({"id": "b", "text": "B"})  # rolls to file 00001
    events.append(("commit", None))
    store.mark("ka", "ok")
    store.commit(0.1)
    store.close()
    before_commit = events[: events.index(("commit", None))]
    assert before_commit.count(("dir", tmp_path)) >= 2  # one per new data file


def test_a_store_whose_manifest_was_written_appends_to_a_new_file(tmp_path):
    """`generation merge` hard-links data files; a reopened store must never change them."""
    data = _committed_store(tmp_path, n=2)
    (tmp_path / "manifest.json").write_text("{}")
    before = data.read_bytes()
    store = ShardStore(tmp_path, 0, 1)
    store.open()
    store.write_document({"id": "late", "text": "t"})
    store.mark("late", "ok")
    store.commit(0.1)
    store.close()
    assert data.read_bytes() == before
    assert [d["id"] for d in lines(tmp_path / "part-00000-of-00001-00001.jsonl")] == ["late"]
    reopened = ShardStore(tmp_path, 0, 1)  # and nothing is created when nothing is written
    reopened.open()
    reopened.close()
    assert not (tmp_path / "part-00000-of-00001-00002.jsonl").exists()


def test_a_commit_of_finished_sources_or_counts_alone_is_kept(tmp_path):
    """A commit with no key in it (a source whose keys were all done before, a count) is written and
    replayed; with nothing pending there is no commit."""
    store = ShardStore(tmp_path, 0, 1)
    store.open()
    store.source_done("s1")
    assert store.commit(0.5)
    store.count("requests", 3)
    assert store.commit(0.5)
    assert not store.commit(0.5)
    store.close()
    again = ShardStore(tmp_path, 0, 1)
    r = again.open()
    assert r.commits == 2 and r.sources_done == {"s1"} and r.counters["requests"] == 3
    again.close()


def test_a_keys_latest_outcome_wins_on_replay(tmp_path):
    """A key retried after a failure: its last outcome is what the log replays (a success leaves no
    failure to retry again; a failure for good is no longer retryable), and the times add up."""
    store = ShardStore(tmp_path, 0, 1)
    store.open()
    store.mark_failed("k1", "server_error", True)
    store.mark_failed("k2", "timeout", True)
    assert store.commit(0.5)
    store.write_document({"id": "d1", "text": "retried"})
    store.mark("k1", "ok")
    store.mark_failed("k2", "http_400", False)
    assert store.commit(0.25)
    store.close()
    again = ShardStore(tmp_path, 0, 1)
    for replayed in (store.replayed, again.open()):  # as folded in at each commit, and as replayed
        assert replayed.status == {"k1": "ok", "k2": "failed"}
        assert replayed.failure_reason == {"k2": "http_400"} and replayed.retryable == set()
        assert replayed.elapsed_s == 0.75
    again.close()


# ---------------------------------------------------------------- the bytes the store writes (mutation tests)
def test_documents_are_written_as_compact_utf8_json_lines(tmp_path):
    """`data_prep tokenize` and `generation merge` read these files: one compact JSON object a line,
    non-ASCII text kept as UTF-8 (not \\u escapes, which would change the files' sha256 and size)."""
    store = ShardStore(tmp_path, 0, 1)
    store.open()
    store.write_document({"id": "d1", "text": "naïve, café: 数据"})
    store.mark("k1", "ok")
    store.commit(0.1)
    store.close()
    expected = '{"id":"d1","text":"naïve, café: 数据"}\n'.encode("utf-8")
    assert (tmp_path / DATA0).read_bytes() == expected


def test_each_commit_is_numbered_and_records_every_data_files_size(tmp_path):
    """The log's records are numbered 1, 2, 3 in order, and the replayed size of every data file
    (closed ones included) is its size on disk."""
    store = ShardStore(tmp_path, 0, 1, docs_per_file=2)
    store.open()
    for i in range(5):  # files 00000 (2 docs), 00001 (2 docs), 00002 (1 doc); a commit after each doc
        store.write_document({"id": f"d{i}", "text": "x" * (i + 1)})
        store.mark(f"k{i}", "ok")
        store.commit(0.1)
    store.close()
    log = tmp_path / "state" / "part-00000-of-00001" / "commits.jsonl"
    assert [rec["commit"] for rec in lines(log)] == [1, 2, 3, 4, 5]
    again = ShardStore(tmp_path, 0, 1, docs_per_file=2)
    r = again.open()
    on_disk = {p.name: p.stat().st_size for p in tmp_path.glob("part-*.jsonl")}
    assert len(on_disk) == 3 and r.sizes == on_disk
    assert r.files == {p.name: len(lines(p)) for p in tmp_path.glob("part-*.jsonl")}
    again.close()


@pytest.mark.parametrize("log_version", ["v2", "v1"])
def test_a_repair_forgets_a_deleted_files_size_even_in_a_log_without_sizes(tmp_path, log_version):
    """A deleted data file is dropped from the replayed files and sizes; a log written before sizes
    were recorded (v1) is repaired too."""
    data = _committed_store(tmp_path)
    log = tmp_path / "state" / "part-00000-of-00001" / "commits.jsonl"
    if log_version == "v1":
        records = lines(log)
        for rec in records:
            rec.pop("sizes")
        log.write_text("".join(json.dumps(rec) + "\n" for rec in records), encoding="utf-8")
    data.unlink()
    store = ShardStore(tmp_path, 0, 1)
    r = store.open(repair=doc_of)
    assert DATA0 not in r.files and DATA0 not in r.sizes and r.status == {}
    store.close()
    assert set(ShardStore(tmp_path, 0, 1).open().status) == set()


def test_a_failure_whose_record_was_lost_is_reopened_and_no_longer_failed(tmp_path):
    """A failed key whose failure record was cut off the failures file: the repair reopens it, so
    it is neither failed (with its old reason) nor retryable any more: it is simply to do again."""
    store = ShardStore(tmp_path, 0, 1)
    store.open()
    store.write_document({"id": doc_of(key(0)), "text": "t"})
    store.mark(key(0), "ok")
    store.write_failure({"key": key(1), "reason": "server_error"})
    store.mark_failed(key(1), "server_error", True)
    store.commit(0.1)
    store.close()
    store.fail_path.write_bytes(b"")
    again = ShardStore(tmp_path, 0, 1)
    r = again.open(repair=doc_of)
    assert r.status == {key(0): "ok"}
    assert r.failure_reason == {} and r.retryable == set()
    again.close()


def test_intermediate_records_are_read_back_as_utf8_under_a_c_locale(tmp_path):
    """A resumed run on a node whose locale is C (ASCII) reads its committed outlines back intact."""
    import subprocess
    import sys
    script = (
        "import sys\n"
        "from generation.run.store import ShardStore\n"
        "s = ShardStore(sys.argv[1], 0, 1); s.open()\n"
        "text = 'plan \\u2014 \\u00e9tape \\u6570\\u636e'\n"
        "s.write_intermediate({'key': 'k', 'text': text}); s.mark('k', 'ok'); s.commit(0.1); s.close()\n"
        "s = ShardStore(sys.argv[1], 0, 1); s.open(); print(s.read_intermediate()[0]['text'] == text)\n"
    )
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True,
                          text=True, encoding="utf-8", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
