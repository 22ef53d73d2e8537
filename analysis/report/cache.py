"""Reusing a report: a rerun with the same inputs and settings keeps the report instead of refitting.

`inputs_key` digests what a report depends on: the results table (sha256), every option of the
command except where the report goes and how many workers fit it (fits are the same for any
number of workers), the unigram token files (their manifests' sha256, which record the .bin/.idx
sha256, and the files' sizes and modification times, so a large token file is not read again),
the tokenizer file their manifests name, the generation manifests of --corpus, and the code of
the analysis package itself. fits.json records the key; `reusable` says whether the report in a
folder was made from the same key and is complete.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from synthscale.files import sha256_file

REPORT_FILES = ("report.html", "report.md", "fits.json", "summary.txt")
UNKEYED_OPTIONS = ("output", "workers")


def _code_digest() -> str:
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]  # the analysis package
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _token_files(prefix: str) -> list:
    """A unigram set's manifest (its sha256 and the tokenizer file it names) and its .bin/.idx sizes and times."""
    out = []
    manifest = Path(f"{prefix}.manifest.json")
    if manifest.is_file():
        out.append(["manifest", sha256_file(manifest)])
        spec = ((json.loads(manifest.read_text(encoding="utf-8")).get("tokenizer") or {}).get("spec") or "")
        target = Path(spec.partition(":")[2]).expanduser()
        target = target / "tokenizer.json" if target.is_dir() else target
        if target.is_file():
            out.append(["tokenizer", sha256_file(target)])
    for suffix in (".bin", ".idx"):
        path = Path(f"{prefix}{suffix}")
        if path.is_file():
            stat = path.stat()
            out.append([suffix, stat.st_size, stat.st_mtime_ns])
    return out


def _corpus_manifest(folder: str) -> str | None:
    path = Path(folder)
    path = path / "manifest.json" if path.is_dir() else path
    return sha256_file(path) if path.is_file() else None


def inputs_key(results: str | Path, settings: dict) -> str:
    """The sha256 of everything a report depends on (module docstring); `settings` is the command's resolved
    options (unigram_train and corpora as {NAME: PATH})."""
    kept = {k: v for k, v in sorted(settings.items()) if k not in UNKEYED_OPTIONS}
    unigram = {name: _token_files(prefix) for name, prefix in (settings.get("unigram_train") or {}).items()}
    if settings.get("unigram_test"):
        unigram["test"] = _token_files(settings["unigram_test"])
    corpora = {name: _corpus_manifest(folder) for name, folder in (settings.get("corpora") or {}).items()}
    document = {"results": sha256_file(results), "settings": kept, "unigram": unigram, "corpora": corpora,
                "code": _code_digest()}
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def reusable(output: str | Path, key: str) -> bool:
    """Whether OUTPUT holds a complete report made with this key (its figures included)."""
    output = Path(output)
    if not all((output / name).is_file() for name in REPORT_FILES):
        return False
    try:
        document = json.loads((output / "fits.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if document.get("inputs_key") != key:
        return False
    markdown = (output / "report.md").read_text(encoding="utf-8")
    return all((output / link).is_file() for link in _figure_links(markdown))


def _figure_links(markdown: str) -> list[str]:
    return re.findall(r"\]\((figures/[^)]+\.png)\)", markdown)
