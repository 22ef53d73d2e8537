"""The generator's identity downstream: every document's `generator` is "<name>@<sha256[:12]>" for a
local model, the manifest names it with its path and hash, and a resumed run refuses changed weights."""

from __future__ import annotations

import json
import shutil

import pytest

from generation.models.identity import CONVERT_MANIFEST, generator_identity, model_sha256
from generation.run.config import ConfigMismatchError, RunConfig
from generation.run.loop import run
from study.tiny_llama import sample_text
from synthscale.files import sha256_file

from genhelpers import EchoBackend, read_outputs, write_jsonl


def test_model_hash_covers_config_and_weights(tiny_model, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    digest = model_sha256(model)
    identity = generator_identity(str(model))
    assert identity == {"id": f"m@{digest[:12]}", "name": "m", "path": str(model.resolve()), "sha256": digest,
                        "sha256_from": "computed"}
    assert generator_identity(str(model), "tiny")["id"] == f"tiny@{digest[:12]}"
    config = json.loads((model / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5
    (model / "config.json").write_text(json.dumps(config))
    assert model_sha256(model) != digest
    # a name that is no local folder (a served model) has no hash
    assert generator_identity("meta-llama/Meta-Llama-3-8B-Instruct") == {
        "id": "meta-llama/Meta-Llama-3-8B-Instruct", "name": "meta-llama/Meta-Llama-3-8B-Instruct", "path": None,
        "sha256": None, "sha256_from": None}


@pytest.mark.parametrize("name, change", [
    ("chat_template.jinja", "{{ messages[0]['content'] }}"),  # another chat template
    ("tokenizer_config.json", None),  # e.g. another eos_token or template inside it
    ("tokenizer.json", None),
    ("generation_config.json", '{"eos_token_id": [2, 7]}'),  # another EOS token
])
def test_model_hash_covers_the_tokenizer_template_and_generation_config(tiny_model, tmp_path, name, change):
    """Two generators with other chat templates or EOS tokens used to share one id."""
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    digest = model_sha256(model)
    path = model / name
    if change is None:
        data = json.loads(path.read_text())
        data["synthscale_test_change"] = 1
        change = json.dumps(data)
    path.write_text(change)
    assert model_sha256(model) != digest
    assert generator_identity(str(model))["id"] != f"m@{digest[:12]}"


def test_convert_manifest_hash_is_used_only_while_its_files_are_intact(tiny_model, tmp_path):
    from generation.models.identity import model_files

    model = tmp_path / "converted"
    shutil.copytree(tiny_model, model)
    files = [{"path": p.name, "bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in sorted(model.iterdir())]
    (model / CONVERT_MANIFEST).write_text(json.dumps({"name": "Tiny-Instruct", "model_sha256": "ab" * 32,
                                                      "files": files, "model_files": ["config.json"]}))
    identity = generator_identity(str(model))  # an older conversion: its hash covered fewer files
    assert identity["sha256_from"] == "computed" and identity["sha256"] == model_sha256(model)
    (model / CONVERT_MANIFEST).write_text(json.dumps({"name": "Tiny-Instruct", "model_sha256": "ab" * 32, "files": files,
                                                      "model_files": [p.name for p in model_files(model)]}))
    identity = generator_identity(str(model))
    assert identity["id"] == "Tiny-Instruct@" + "ab" * 6 and identity["sha256_from"] == CONVERT_MANIFEST
    with open(model / "model.safetensors", "ab") as handle:  # the weights changed after the conversion
        handle.write(b"\0")
    identity = generator_identity(str(model))
    assert identity["sha256_from"] == "computed" and identity["sha256"] == model_sha256(model)


def test_documents_and_manifest_name_the_generator(tiny_model, tiny_tokenizer, tmp_path):
    model = tmp_path / "SmolThing"
    shutil.copytree(tiny_model, model)
    digest = model_sha256(model)
    write_jsonl(tmp_path / "in.jsonl", [{"id": f"d{i}", "text": sample_text(40, seed=i)} for i in range(5)])
    config = RunConfig(recipe="qa", inputs=[str(tmp_path / "in.jsonl")], output=str(tmp_path / "out"),
                       model=str(model), filters={"min_tokens": 1}, quiet=True)
    manifest = run(config, EchoBackend(tiny_tokenizer))
    records = read_outputs(tmp_path / "out")
    assert len(records) == 5
    assert {r["generator"] for r in records} == {f"SmolThing@{digest[:12]}"}
    assert all(isinstance(r["generator"], str) and isinstance(r["recipe"], str) for r in records)
    assert manifest["generator"] == {"id": f"SmolThing@{digest[:12]}", "name": "SmolThing",
                                     "path": str(model.resolve()), "sha256": digest, "sha256_from": "computed"}
    assert manifest["fingerprint"]["generator_sha256"] == digest
    # other weights under the same path: resuming into this output is refused
    with open(model / "model.safetensors", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ConfigMismatchError, match="generator_sha256"):
        run(config, EchoBackend(tiny_tokenizer))
