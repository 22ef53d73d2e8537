"""The synthetic corpora behind a study, as their generation manifests describe them.

`analysis report --corpus NAME=DIR` reads DIR/manifest.json (what `generation run` or
`generation merge` writes: a file, not the generation package) and reports per corpus its
recipe, generator (with its hash) and fidelity: the share of outputs that passed the run's
filters, the mean output length, and the mean share of each source's content words that the
output kept. Two generators of one recipe side by side show whether the generator matters.
"""

from __future__ import annotations

from pathlib import Path

from synthscale.errors import SynthscaleError
from synthscale.files import read_manifest

GENERATION_MANIFEST_KIND = "synthscale.synthetic"


class CorpusError(SynthscaleError):
    """A --corpus that is not a generation output; the message names it."""


def read_corpus(name: str, path: str | Path) -> dict:
    """One corpus's row from its generation manifest (a folder holding manifest.json, or the file)."""
    try:
        manifest_path, manifest = read_manifest(path, f"--corpus {name}={path}", "generation manifest")
    except SynthscaleError as exc:
        raise CorpusError(str(exc)) from None
    if manifest.get("kind") != GENERATION_MANIFEST_KIND:
        raise CorpusError(f"--corpus {name}={path}: {manifest_path} is not a generation manifest "
                          f"(kind {manifest.get('kind')!r}, expected {GENERATION_MANIFEST_KIND!r})")
    generator = manifest.get("generator") or {}
    fidelity = manifest.get("fidelity") or {}
    counts = manifest.get("counts") or {}
    filters = manifest.get("filters") or {}
    return {
        "name": name,
        "manifest": str(manifest_path.resolve()),
        "recipe": manifest.get("recipe"),
        "generator": generator.get("id") if isinstance(generator, dict) else generator,
        "documents": counts.get("documents"),
        "document_tokens": counts.get("document_tokens"),
        "outputs": fidelity.get("outputs"),
        "pass_rate": fidelity.get("pass_rate"),
        "mean_output_tokens": fidelity.get("mean_output_tokens"),
        "source_word_recall": fidelity.get("source_word_recall"),
        "degenerate_share": fidelity.get("degenerate_share"),
        "degenerate_share_kept": fidelity.get("degenerate_share_kept"),
        "dropped": filters.get("dropped") or {},
        "complete": manifest.get("complete"),
        "limit": manifest.get("limit"),
    }


def read_corpora(named: dict[str, str]) -> list[dict]:
    return [read_corpus(name, path) for name, path in named.items()]
