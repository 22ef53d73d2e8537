"""Bodies of the in-process vLLM engine tests (test_generation_vllm.py), run by engine_worker.py
in a process of its own. Each takes the engine (`llm`), the model path and a tmp_path."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from generation.engine.vllm_engine import VLLMBackend
from generation.run.config import RunConfig
from generation.run.loop import run
from generation.run.merge import merge
from study.tiny_llama import sample_text

from genhelpers import read_jsonl, read_outputs, write_jsonl

# The random model writes gibberish: keep whatever it writes, except empty answers.
# A random tiny model's text repeats itself: the repetition filter is off too, so every output is kept.
LENIENT = {"min_tokens": 1, "drop_truncated": False, "max_target_factor": 0, "drop_repetitive": False}


def make_inputs(path: Path, n: int = 8, long: bool = True) -> list[dict]:
    records = [{"id": f"doc{i}", "text": sample_text(90, seed=i)} for i in range(n)]
    if long:  # a source of ~4 chunks of at most 150 tokens
        records.append({"id": "long", "text": "\n\n".join(sample_text(90, seed=50 + i) for i in range(4))})
    write_jsonl(path, records)
    return records


def cfg(tmp_path: Path, recipe: str, out: str, **kw) -> RunConfig:
    base = dict(recipe=recipe, inputs=[str(tmp_path / "in.jsonl")], output=str(tmp_path / out),
                model="tiny-llama", filters=dict(LENIENT), max_new_tokens={"*": 24}, chunk_tokens=150,
                commit_every=16, quiet=True)
    base.update(kw)
    return RunConfig(**base)


def statuses(out_dir: Path) -> dict[str, str]:
    """key -> ok/filtered/failed, from the commit logs."""
    status = {}
    for log in out_dir.glob("state/*/commits.jsonl"):
        for line in log.read_text().splitlines():
            for key, state in json.loads(line)["status"]:
                status[key] = state
    return status


def every_recipe_end_to_end(llm, model, tmp_path, recipe):
    tmp_path, backend = Path(tmp_path), VLLMBackend.from_llm(llm, model)
    make_inputs(tmp_path / "in.jsonl")
    manifest = run(cfg(tmp_path, recipe, "out"), backend)
    out = read_outputs(tmp_path / "out")
    assert manifest["complete"] and manifest["counts"]["failed"] == 0
    assert manifest["counts"]["sources"] == 9
    n_long = manifest["counts"]["chunks"] - 8
    assert n_long >= 3  # the long source was chunked
    ids = [r["id"] for r in out]
    assert len(ids) == len(set(ids)) == manifest["counts"]["documents"]
    per_chunk = 10 if recipe == "textbook" else 1
    final_keys = [k for k, s in statuses(tmp_path / "out").items() if json.loads(k)[3] not in ("outline",)]
    # every (source, chunk, recipe[, chapter]) has exactly one outcome; nearly all are documents
    assert len(final_keys) == len(set(final_keys))
    kept = manifest["counts"]["documents"]
    filtered = manifest["filters"]["by_step"]
    assert kept + sum(sum(v.values()) for k, v in filtered.items() if k != "outline") == len(final_keys)
    assert kept >= 0.8 * (8 + n_long) * per_chunk
    for record in out:
        assert record["recipe"] == recipe and record["text"].strip()
        assert record["generator"] == "tiny-llama" and record["prompt_version"] == "paper/1"
        assert 0 < record["generated_tokens"] <= 24
        assert record["sampling"]["max_tokens"] == 24 and record["sampling"]["temperature"] == 0.7
        assert record["prompt_tokens"] > record["source_tokens"] > 0
        assert record["source_tokens"] <= 150
        assert record["output_tokens"] == record["generated_tokens"]  # nothing stripped from gibberish
    assert manifest["throughput"]["generated_tokens_per_s"] > 0
    assert manifest["engine"]["backend"] == "vllm" and manifest["engine"]["max_model_len"] == 1024


def textbook_ten_chapters_per_outline(llm, model, tmp_path):
    tmp_path, backend = Path(tmp_path), VLLMBackend.from_llm(llm, model)
    make_inputs(tmp_path / "in.jsonl", n=8, long=False)
    manifest = run(cfg(tmp_path, "textbook", "out", filters={**LENIENT, "min_tokens": 0}), backend)
    outlines = read_jsonl(tmp_path / "out" / manifest["intermediate_file"])
    assert len(outlines) + manifest["filters"]["by_step"].get("outline", {}).get("empty", 0) == 8
    status = statuses(tmp_path / "out")
    chapters = Counter()
    for key, state in status.items():
        source, chunk, recipe, step, k = json.loads(key)
        if step == "chapter":
            chapters[source] += 1
            assert 1 <= k <= 10
    assert {o["source_id"] for o in outlines} == set(chapters)
    assert set(chapters.values()) == {10}
    out = read_outputs(tmp_path / "out")
    for record in out:
        assert record["book_id"] == f"textbook:{record['source_id']}:0" and 1 <= record["chapter"] <= 10
    audiences = {o["source_id"]: o["audience"] for o in outlines}
    assert set(audiences.values()) <= {"grade school students", "college students", "field experts", "general public"}
    # the audience is a function of the source id alone (sha256, first 4 bytes, round robin over the four),
    # so every shard and rerun agrees: computed here from hashlib, not from the project's own helper
    order = ["grade school students", "college students", "field experts", "general public"]
    for source_id, audience in audiences.items():
        index = int.from_bytes(hashlib.sha256(source_id.encode("utf-8")).digest()[:4], "big")
        assert audience == order[index % 4], source_id


def seeds_reproduce_in_any_batch(llm, model, tmp_path):
    tmp_path, backend = Path(tmp_path), VLLMBackend.from_llm(llm, model)
    make_inputs(tmp_path / "in.jsonl")
    run(cfg(tmp_path, "hq", "a"), backend)
    run(cfg(tmp_path, "hq", "b"), VLLMBackend.from_llm(llm, model, max_inflight=1))
    a = {(r["id"], r["text"]) for r in read_outputs(tmp_path / "a")}
    b = {(r["id"], r["text"]) for r in read_outputs(tmp_path / "b")}
    assert a == b and len(a) >= 9
    run(cfg(tmp_path, "hq", "c", seed=1), backend)
    c = {(r["id"], r["text"]) for r in read_outputs(tmp_path / "c")}
    assert len(a & c) <= 1  # another run seed, other samples


def failures_are_recorded_and_the_run_goes_on(llm, model, tmp_path):
    tmp_path, backend = Path(tmp_path), VLLMBackend.from_llm(llm, model)
    records = [{"id": f"doc{i}", "text": sample_text(60, seed=i)} for i in range(4)]
    with open(tmp_path / "in.jsonl", "wb") as handle:
        for i, record in enumerate(records):
            handle.write(json.dumps(record).encode() + b"\n")
            if i == 1:
                handle.write(b'{"id": "bad-utf8", "text": "caf\xe9"}\n')
                handle.write(b'{"id": "cut", "te\n')
        # far longer than the engine's 1,024-token context, in one chunk
        handle.write(json.dumps({"id": "huge", "text": sample_text(2500, seed=7)}).encode() + b"\n")
    manifest = run(cfg(tmp_path, "hq", "out", chunk_tokens=4000), backend)
    assert manifest["complete"]
    assert sorted(r["source_id"] for r in read_outputs(tmp_path / "out")) == ["doc0", "doc1", "doc2", "doc3"]
    failures = read_jsonl(tmp_path / "out" / "failures" / "part-00000-of-00001.jsonl")
    assert {(f["source_id"], f["reason"]) for f in failures} == {
        ("in.jsonl:3", "invalid_utf8"), ("in.jsonl:4", "malformed_json"), ("huge", "prompt_too_long")}
    assert manifest["failures"]["by_reason"] == {"invalid_utf8": 1, "malformed_json": 1, "prompt_too_long": 1}
    assert all(f["detail"] for f in failures)


def shards_partition_the_input_and_give_the_same_texts(llm, model, tmp_path):
    tmp_path, backend = Path(tmp_path), VLLMBackend.from_llm(llm, model)
    make_inputs(tmp_path / "in.jsonl", n=10)
    run(cfg(tmp_path, "qa", "whole"), backend)
    whole = {(r["id"], r["text"]) for r in read_outputs(tmp_path / "whole")}
    sources = []
    for i in range(3):
        manifest = run(cfg(tmp_path, "qa", "sharded", shard=(i, 3)), backend)
        assert manifest["shard"] == {"index": i, "count": 3, "tag": f"part-{i:05d}-of-00003"}
        sources.append({r["source_id"] for r in read_jsonl(tmp_path / "sharded" / f"part-{i:05d}-of-00003-00000.jsonl")})
    assert sum(len(s) for s in sources) == len(set.union(*sources)) == 11
    merged = merge([str(tmp_path / "sharded")])
    assert merged["counts"]["sources"] == 11
    assert {(r["id"], r["text"]) for r in read_outputs(tmp_path / "sharded")} == whole


def hq_run(llm, model, tmp_path, out, max_new_tokens=24, chunk_tokens=150, n=None):
    """A plain hq run into tmp_path/out (of tmp_path/in.jsonl, or of n made-up documents)."""
    tmp_path = Path(tmp_path)
    if n is not None:
        make_inputs(tmp_path / "in.jsonl", n=n, long=False)
    run(cfg(tmp_path, "hq", out, max_new_tokens={"*": max_new_tokens}, chunk_tokens=chunk_tokens),
        VLLMBackend.from_llm(llm, model))
