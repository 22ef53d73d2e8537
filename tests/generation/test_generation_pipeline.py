"""The pipeline's bookkeeping with a deterministic stand-in engine (fast): keys, chapters,
resume after a crash, failures, filters in the manifest, shards and merge. The same behaviours
run against the real vLLM engine and server in test_generation_vllm.py."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from generation.run.config import RunConfig
from generation.run.loop import run
from generation.run.merge import MergeError, merge
from study.tiny_llama import sample_text
from generation.run.work_plan import request_seed

from genhelpers import EchoBackend, read_jsonl, read_outputs, write_jsonl


def docs(n, words=60, prefix="d"):
    return [{"id": f"{prefix}{i}", "text": sample_text(words, seed=i)} for i in range(n)]


def config(tmp_path, recipe="hq", out="out", **kw):
    base = dict(recipe=recipe, inputs=[str(tmp_path / "in.jsonl")], output=str(tmp_path / out), model="echo",
                filters={"min_tokens": 1}, commit_every=5, commit_seconds=3600, quiet=True,
                max_new_tokens={"*": 64})
    base.update(kw)
    return RunConfig(**base)


def keys_of(records):
    return [(r["source_id"], r["chunk"], r["recipe"], r.get("chapter")) for r in records]


def committed_keys(out_dir) -> set[str]:
    """The keys the commit logs on disk record as done: what a resumed run must not submit again."""
    keys = set()
    for log in Path(out_dir).glob("state/*/commits.jsonl"):
        for line in log.read_text(encoding="utf-8").splitlines():
            keys.update(key for key, _status in json.loads(line)["status"])
    return keys


def test_hq_end_to_end_with_chunking(tmp_path, tiny_tokenizer):
    records = docs(6)
    records.append({"id": "long", "text": "\n\n".join(sample_text(80, seed=100 + i) for i in range(6))})
    write_jsonl(tmp_path / "in.jsonl", records)
    manifest = run(config(tmp_path, chunk_tokens=200), EchoBackend(tiny_tokenizer))
    out = read_outputs(tmp_path / "out")
    long_chunks = sorted(r["chunk"] for r in out if r["source_id"] == "long")
    assert len(long_chunks) >= 3 and long_chunks == list(range(len(long_chunks)))
    assert all(r["n_chunks"] == len(long_chunks) for r in out if r["source_id"] == "long")
    assert len(out) == 6 + len(long_chunks) == manifest["counts"]["documents"]
    assert len(set(keys_of(out))) == len(out)
    first = out[0]
    assert set(first) >= {"id", "text", "source_id", "chunk", "recipe", "prompt_version", "generator", "sampling",
                          "source_tokens", "prompt_tokens", "output_tokens"}
    assert first["sampling"]["temperature"] == 0.7 and first["sampling"]["top_p"] == 0.95
    assert first["prompt_version"] == "paper/1" and first["generator"] == "echo"
    assert manifest["complete"] and manifest["counts"]["sources"] == 7
    assert manifest["counts"]["chunks"] == 6 + len(long_chunks)
    assert manifest["files"][0]["documents"] == len(out)
    assert manifest["inputs"][0]["sha256"] and manifest["inputs"][0]["records"] == 7
    # seeds come from (source, chunk, recipe, step, run seed) only
    for r in out:
        assert r["sampling"]["seed"] == request_seed(0, r["source_id"], r["chunk"], "hq", "article", None)


def test_textbook_has_ten_chapters_per_outline_linked_to_the_book(tmp_path, tiny_tokenizer):
    write_jsonl(tmp_path / "in.jsonl", docs(8))
    backend = EchoBackend(tiny_tokenizer)
    manifest = run(config(tmp_path, recipe="textbook"), backend)
    out = read_outputs(tmp_path / "out")
    assert len(out) == 80
    books = Counter(r["book_id"] for r in out)
    assert len(books) == 8 and set(books.values()) == {10}
    for book in books:
        assert sorted(r["chapter"] for r in out if r["book_id"] == book) == list(range(1, 11))
    # each book's audience is picked from its source id, so every shard picks the same one
    from generation.corpus.documents import stable_index
    from generation.text.recipe_files import get_recipe

    textbook = get_recipe("textbook")
    assert all(r["audience"] == textbook.audience_for(stable_index(r["source_id"])) for r in out)
    assert set(r["audience"] for r in out) <= set(textbook.audiences)
    outlines = read_jsonl(tmp_path / "out" / manifest["intermediate_file"])
    assert len(outlines) == 8
    # each chapter prompt carries its book's outline, chapter number and audience
    by_book = {json.loads(o["key"])[0]: o for o in outlines}
    chapter_requests = [r for r in backend.submitted if json.loads(r.key)[3] == "chapter"]
    assert len(chapter_requests) == 80
    for request in chapter_requests:
        source, _, _, _, k = json.loads(request.key)
        content = request.messages[-1]["content"]
        assert f"Outline: {by_book[source]['text']} \n" in content
        assert f"write Chapter {k} of the textbook" in content
        assert f"audiences are {by_book[source]['audience']}." in content
    assert manifest["counts"]["intermediate"] == {"outline": 8}


@pytest.mark.parametrize("recipe", ["hq", "textbook"])
def test_crash_and_resume_neither_loses_nor_duplicates(tmp_path, tiny_tokenizer, recipe):
    write_jsonl(tmp_path / "in.jsonl", docs(12))
    backend = EchoBackend(tiny_tokenizer)
    reference = run(config(tmp_path, recipe=recipe, out="ref"), backend)
    expected = {(r["id"], r["text"]) for r in read_outputs(tmp_path / "ref")}
    # crash three times, each time part way through what is left
    for crash_after in (backend.polls // 4, backend.polls // 4, backend.polls // 4):
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(config(tmp_path, recipe=recipe, out="killed"), EchoBackend(tiny_tokenizer, crash_after_polls=crash_after))
        partial = [r["id"] for r in read_outputs(tmp_path / "killed")]
        assert len(partial) == len(set(partial)) and len(partial) < len(expected)
    every_key = {r.key for r in backend.submitted}
    committed = committed_keys(tmp_path / "killed")
    assert committed and committed < every_key  # the crashes came after some commits, before the end
    resumed = EchoBackend(tiny_tokenizer)
    manifest = run(config(tmp_path, recipe=recipe, out="killed"), resumed)
    submitted = [r.key for r in resumed.submitted]  # the resumed run redoes exactly what was not committed
    assert len(submitted) == len(set(submitted)) and set(submitted) == every_key - committed
    got = [(r["id"], r["text"]) for r in read_outputs(tmp_path / "killed")]
    assert len(got) == len(set(got)) and set(got) == expected
    assert manifest["counts"]["documents"] == reference["counts"]["documents"] == len(expected)
    assert manifest["counts"]["sources"] == 12
    # a rerun of a finished job does nothing
    backend = EchoBackend(tiny_tokenizer)
    again = run(config(tmp_path, recipe=recipe, out="killed"), backend)
    assert backend.submitted == [] and again["counts"] == manifest["counts"]


def test_failures_are_recorded_and_the_run_goes_on(tmp_path, tiny_tokenizer):
    records = docs(5)
    lines = [json.dumps(r) for r in records]
    lines.insert(2, '{"id": "broken", "text": ')
    lines.insert(4, '{"id": "empty", "text": ""}')
    with open(tmp_path / "in.jsonl", "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
        handle.write('{"id": "huge", "text": "' + sample_text(3000, seed=9).replace("\n", " ") + '"}\n')
    with open(tmp_path / "in.jsonl", "ab") as handle:
        handle.write(b'{"id": "latin1", "text": "caf\xe9"}\n')
    backend = EchoBackend(tiny_tokenizer, max_model_len=1024, fail_keys=['"d3"'])
    manifest = run(config(tmp_path, chunk_tokens=4000), backend)
    out = read_outputs(tmp_path / "out")
    assert sorted(r["source_id"] for r in out) == ["d0", "d1", "d2", "d4"]
    failures = read_jsonl(tmp_path / "out" / manifest["failures_file"])
    reasons = {f["source_id"]: f["reason"] for f in failures}
    assert reasons == {"in.jsonl:3": "malformed_json", "empty": "empty_text", "d3": "server_error",
                       "huge": "prompt_too_long", "in.jsonl:9": "invalid_utf8"}
    assert manifest["failures"]["by_reason"] == {"empty_text": 1, "invalid_utf8": 1, "malformed_json": 1,
                                                 "prompt_too_long": 1, "server_error": 1}
    assert manifest["complete"] and manifest["counts"]["failed"] == 5
    # a rerun does not repeat failures; --retry-failed retries the transient one only
    backend = EchoBackend(tiny_tokenizer, max_model_len=1024)
    run(config(tmp_path, chunk_tokens=4000), backend)
    assert backend.submitted == []
    backend = EchoBackend(tiny_tokenizer, max_model_len=1024)
    manifest = run(config(tmp_path, chunk_tokens=4000, retry_failed=True), backend)
    assert [json.loads(r.key)[0] for r in backend.submitted] == ["d3"]
    assert sorted(r["source_id"] for r in read_outputs(tmp_path / "out")) == ["d0", "d1", "d2", "d3", "d4"]
    assert manifest["failures"]["by_reason"] == {"empty_text": 1, "invalid_utf8": 1, "malformed_json": 1,
                                                 "prompt_too_long": 1}
    assert manifest["counts"]["sources"] == 9


def test_filter_counts_reach_the_manifest(tmp_path, tiny_tokenizer):
    write_jsonl(tmp_path / "in.jsonl", docs(4))
    manifest = run(config(tmp_path, filters={"min_tokens": 10_000}), EchoBackend(tiny_tokenizer))
    assert manifest["counts"]["documents"] == 0
    assert manifest["filters"]["dropped"] == {"too_short": 4}
    manifest = run(config(tmp_path, out="o2", filters={"min_tokens": 1}),
                   EchoBackend(tiny_tokenizer, finish_reason="length"))
    assert manifest["filters"]["dropped"] == {"truncated": 4}
    assert manifest["filters"]["config"]["article"]["min_tokens"] == 1


def test_a_changed_setting_is_refused_on_resume(tmp_path, tiny_tokenizer):
    from generation.run.config import ConfigMismatchError

    write_jsonl(tmp_path / "in.jsonl", docs(2))
    run(config(tmp_path), EchoBackend(tiny_tokenizer))
    with pytest.raises(ConfigMismatchError, match="seed"):
        run(config(tmp_path, seed=1), EchoBackend(tiny_tokenizer))
    with pytest.raises(ConfigMismatchError, match="recipe"):
        run(config(tmp_path, recipe="qa"), EchoBackend(tiny_tokenizer))
    write_jsonl(tmp_path / "in.jsonl", docs(3))
    with pytest.raises(ConfigMismatchError, match="inputs"):
        run(config(tmp_path), EchoBackend(tiny_tokenizer))


def test_shards_partition_and_merge(tmp_path, tiny_tokenizer):
    write_jsonl(tmp_path / "in.jsonl", docs(11))
    run(config(tmp_path, out="whole"), EchoBackend(tiny_tokenizer))
    whole = {(r["id"], r["text"]) for r in read_outputs(tmp_path / "whole")}
    parts = []
    for i in range(3):
        run(config(tmp_path, out="sharded", shard=(i, 3)), EchoBackend(tiny_tokenizer))
        parts.append({r["id"] for r in read_jsonl(tmp_path / "sharded" / f"part-{i:05d}-of-00003-00000.jsonl")})
    assert sum(len(p) for p in parts) == 11 and set.union(*parts) == {i for i, _ in whole}
    merged = merge([str(tmp_path / "sharded")])
    assert merged["counts"]["documents"] == 11 and len(merged["shards"]) == 3
    assert {(r["id"], r["text"]) for r in read_outputs(tmp_path / "sharded")} == whole
    assert json.loads((tmp_path / "sharded" / "manifest.json").read_text())["merged"] is True


def test_merge_refuses_missing_incomplete_or_mismatched_shards(tmp_path, tiny_tokenizer):
    write_jsonl(tmp_path / "in.jsonl", docs(6))
    run(config(tmp_path, out="a", shard=(0, 2)), EchoBackend(tiny_tokenizer))
    with pytest.raises(MergeError, match="shard 1/2 is missing"):
        merge([str(tmp_path / "a")])
    run(config(tmp_path, out="b", shard=(1, 2), seed=5), EchoBackend(tiny_tokenizer))
    with pytest.raises(MergeError, match="other settings"):
        merge([str(tmp_path / "a"), str(tmp_path / "b")], output=str(tmp_path / "m"))
    run(config(tmp_path, out="c", shard=(1, 2), limit=1), EchoBackend(tiny_tokenizer))
    with pytest.raises(MergeError, match="not complete"):
        merge([str(tmp_path / "a"), str(tmp_path / "c")], output=str(tmp_path / "m"))
    run(config(tmp_path, out="c", shard=(1, 2)), EchoBackend(tiny_tokenizer))
    merged = merge([str(tmp_path / "a"), str(tmp_path / "c")], output=str(tmp_path / "m"))
    assert merged["counts"]["documents"] == 6
    # c's trial run wrote a manifest: its continuation went to a new file, the trial's file stays as listed
    assert sorted(p.name for p in (tmp_path / "m").glob("*.jsonl")) == [
        "part-00000-of-00002-00000.jsonl", "part-00001-of-00002-00000.jsonl", "part-00001-of-00002-00001.jsonl"]
    # tampering is caught
    with open(tmp_path / "a" / "part-00000-of-00002-00000.jsonl", "a") as handle:
        handle.write('{"id": "x", "text": "y"}\n')
    with pytest.raises(MergeError, match="size or sha256"):
        merge([str(tmp_path / "a"), str(tmp_path / "c")], output=str(tmp_path / "m2"))


def test_a_lost_data_file_is_refused_then_repaired_key_for_key(tmp_path, tiny_tokenizer):
    from generation.run.store import StoreDamagedError

    write_jsonl(tmp_path / "in.jsonl", docs(8))
    run(config(tmp_path, docs_per_file=3), EchoBackend(tiny_tokenizer))
    expected = {(r["id"], r["text"]) for r in read_outputs(tmp_path / "out")}
    lost_file = tmp_path / "out" / "part-00000-of-00001-00001.jsonl"
    lost = {r["id"] for r in read_jsonl(lost_file)}
    lost_file.unlink()
    with pytest.raises(StoreDamagedError, match="part-00000-of-00001-00001.jsonl: missing"):
        run(config(tmp_path, docs_per_file=3), EchoBackend(tiny_tokenizer))
    backend = EchoBackend(tiny_tokenizer)
    manifest = run(config(tmp_path, docs_per_file=3, repair=True), backend)
    assert {f"hq:{json.loads(r.key)[0]}:0" for r in backend.submitted} == lost  # exactly the lost keys
    got = [(r["id"], r["text"]) for r in read_outputs(tmp_path / "out")]
    assert len(got) == len(set(got)) and set(got) == expected
    assert manifest["counts"]["documents"] == 8 and manifest["counts"]["sources"] == 8
    assert sum(f["documents"] for f in manifest["files"]) == 8
    assert manifest["repairs"][0]["documents_lost"] == 3


def test_a_merged_corpus_is_not_changed_by_a_later_run_of_its_shard(tmp_path, tiny_tokenizer):
    from synthscale.files import sha256_file

    write_jsonl(tmp_path / "in.jsonl", docs(6))
    run(config(tmp_path, out="w0", shard=(0, 2)), EchoBackend(tiny_tokenizer, fail_keys=['"d2"']))
    run(config(tmp_path, out="w1", shard=(1, 2)), EchoBackend(tiny_tokenizer))
    merged = merge([str(tmp_path / "w0"), str(tmp_path / "w1")], output=str(tmp_path / "merged"))
    run(config(tmp_path, out="w0", shard=(0, 2), retry_failed=True), EchoBackend(tiny_tokenizer))
    for f in merged["files"]:  # hard links to the shard's files: still what the merge recorded
        assert sha256_file(tmp_path / "merged" / f["path"]) == f["sha256"]
    assert "d2" in {r["source_id"] for r in read_outputs(tmp_path / "w0")}
