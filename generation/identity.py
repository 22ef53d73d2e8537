"""Which generator wrote a corpus: a name and a hash of its weights, recorded everywhere downstream.

Every output document carries `generator` as the plain string `"<name>@<sha256[:12]>"` when the
model is a local folder (else just the name, e.g. a model served by an OpenAI-compatible server),
and the manifest carries `generator: {id, name, path, sha256, sha256_from}`.

The hash (`model_sha256`) is a sha256 over the model's `config.json` and weight files
(`*.safetensors`, `*.bin`), each as (file name, size, sha256 of its bytes), in name order. A folder
written by `generation convert-gguf` records that hash in its `synthscale.convert.json`; it is
taken from there (after checking that the files it lists are still there with their sizes), so a
run does not read the weights again. It is computed once per run otherwise.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from synthscale.files import sha256_file

CONVERT_MANIFEST = "synthscale.convert.json"
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


def model_files(folder: str | Path) -> list[Path]:
    """The files the model hash covers: config.json and the weights, in name order."""
    folder = Path(folder)
    files = [folder / "config.json"] if (folder / "config.json").is_file() else []
    weights = sorted({p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern) if p.is_file()})
    return files + weights


def model_sha256(folder: str | Path, file_hashes: dict[str, str] | None = None) -> str:
    """sha256 over (name, size, sha256) of config.json and every weight file of `folder`.
    `file_hashes` (name -> sha256) saves reading files whose hash is already known."""
    files = model_files(folder)
    if not any(p.name != "config.json" for p in files):
        raise FileNotFoundError(f"{folder}: no model weights (*.safetensors or *.bin) to hash")
    digest = hashlib.sha256()
    for path in files:
        known = (file_hashes or {}).get(path.name)
        entry = [path.name, path.stat().st_size, known or sha256_file(path)]
        digest.update((json.dumps(entry) + "\n").encode("utf-8"))
    return digest.hexdigest()


def _from_convert_manifest(folder: Path) -> tuple[str | None, str | None]:
    """(model_sha256, name) from a converted folder's manifest, when its files are intact."""
    path = folder / CONVERT_MANIFEST
    if not path.is_file():
        return None, None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
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
        if not any(p.name != "config.json" for p in model_files(folder)):  # nothing to hash
            return {"id": label, "name": label, "path": str(folder), "sha256": None, "sha256_from": None}
        sha, source = model_sha256(folder), "computed"
    return {"id": f"{label}@{sha[:12]}", "name": label, "path": str(folder), "sha256": sha, "sha256_from": source}
