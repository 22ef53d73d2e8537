"""Which generator wrote a corpus: a name and a hash of its weights, recorded everywhere downstream.

Every output document carries `generator` as the plain string `"<name>@<sha256[:12]>"` when the
model is a local folder (else just the name, e.g. a model served by an OpenAI-compatible server),
and the manifest carries `generator: {id, name, path, sha256, sha256_from}`.

The hash (`model_sha256`) is a sha256 over the model's `config.json`, the files that decide what
it writes besides its weights (the tokenizer, the chat template, the generation config: another
template or EOS token is another generator) and its weight files (`*.safetensors`, `*.bin`), each
as (file name, size, sha256 of its bytes), in that order. A folder written by `generation
convert-gguf` records that hash in its `synthscale.convert.json`; it is taken from there (after
checking that it covers the same files, still there with their sizes), so a run does not read the
weights again. It is computed once per run otherwise.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from synthscale.files import sha256_file

CONVERT_MANIFEST = "synthscale.convert.json"
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
# Besides config.json and the weights: what turns prompts into tokens and tokens into documents.
BEHAVIOUR_FILES = ("chat_template.jinja", "chat_template.json", "generation_config.json", "special_tokens_map.json",
                   "tokenizer.json", "tokenizer.model", "tokenizer_config.json")


def model_files(folder: str | Path) -> list[Path]:
    """The files the model hash covers: config.json, the tokenizer, chat template and generation
    config files present, then the weights in name order."""
    folder = Path(folder)
    named = [folder / name for name in ("config.json", *BEHAVIOUR_FILES) if (folder / name).is_file()]
    weights = sorted({p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern) if p.is_file()})
    return named + weights


def model_sha256(folder: str | Path, file_hashes: dict[str, str] | None = None) -> str:
    """sha256 over (name, size, sha256) of every file `model_files` lists.
    `file_hashes` (name -> sha256) saves reading files whose hash is already known."""
    files = model_files(folder)
    if not _has_weights(files):
        raise FileNotFoundError(f"{folder}: no model weights (*.safetensors or *.bin) to hash")
    digest = hashlib.sha256()
    for path in files:
        known = (file_hashes or {}).get(path.name)
        entry = [path.name, path.stat().st_size, known or sha256_file(path)]
        digest.update((json.dumps(entry) + "\n").encode("utf-8"))
    return digest.hexdigest()


def _has_weights(files: list[Path]) -> bool:
    return any(p.name.endswith(tuple(w[1:] for w in WEIGHT_PATTERNS)) for p in files)


def _from_convert_manifest(folder: Path) -> tuple[str | None, str | None]:
    """(model_sha256, name) from a converted folder's manifest, when it covers the files
    `model_files` lists now (an older conversion hashed the weights only) and they are intact."""
    path = folder / CONVERT_MANIFEST
    if not path.is_file():
        return None, None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("model_files") != [p.name for p in model_files(folder)]:
            return None, None
        for entry in manifest["files"]:
            if (folder / entry["path"]).stat().st_size != entry["bytes"]:
                return None, None
        return str(manifest["model_sha256"]), manifest.get("name")
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def generator_identity(model: str, name: str | None = None) -> dict:
    """`{id, name, path, sha256, sha256_from}` of the generator `model` (a local folder, or a name).

    name: `name` if given, else the converted model's name, else the folder's name, else `model`.
    """
    folder = Path(model).expanduser()
    if not folder.is_dir():
        label = name or model
        return {"id": label, "name": label, "path": None, "sha256": None, "sha256_from": None}
    folder = folder.resolve()
    sha, converted_name = _from_convert_manifest(folder)
    source = CONVERT_MANIFEST
    label = name or converted_name or folder.name
    if sha is None:
        if not _has_weights(model_files(folder)):  # nothing to hash
            return {"id": label, "name": label, "path": str(folder), "sha256": None, "sha256_from": None}
        sha, source = model_sha256(folder), "computed"
    return {"id": f"{label}@{sha[:12]}", "name": label, "path": str(folder), "sha256": sha, "sha256_from": source}
