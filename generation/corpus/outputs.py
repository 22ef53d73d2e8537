"""A generation output directory as other readers see it: its manifests' names and kind, and
finding them.

`generation run --shard I/N` writes `manifest.part-IIIII-of-NNNNN.json` (`manifest.json` for a
single worker) of kind `synthscale.synthetic`; `generation merge` combines them and
`generation concept-graph` reads concept-extraction outputs through them. Both find manifests
here, below the run loop that writes them (generation/run/manifest.py), so a reader of outputs
does not depend on the run loop.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from synthscale.errors import SynthscaleError

MANIFEST_KIND = "synthscale.synthetic"
MANIFEST_VERSION = 1
_SHARD_MANIFEST = re.compile(r"manifest\.part-(\d{5})-of-(\d{5})\.json$")


class OutputError(SynthscaleError):
    """A generation output that cannot be read: no manifest, an unreadable one, or another kind."""


def shard_tag(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}"


def manifest_name(index: int, count: int) -> str:
    return "manifest.json" if count == 1 else f"manifest.{shard_tag(index, count)}.json"


def find_manifests(sources: list[str]) -> list[tuple[Path, dict]]:
    """(path, manifest) of each worker's manifest in `sources` (output directories or manifest files);
    a merged manifest found beside shard manifests is skipped."""
    found: list[tuple[Path, dict]] = []
    for source in sources:
        path = Path(source)
        candidates: list[Path]
        if path.is_dir():
            candidates = sorted(p for p in path.iterdir() if _SHARD_MANIFEST.fullmatch(p.name))
            if not candidates and (path / "manifest.json").exists():
                candidates = [path / "manifest.json"]
        elif path.is_file():
            candidates = [path]
        else:
            raise OutputError(f"{source}: no such directory or manifest file")
        if not candidates:
            raise OutputError(f"{source}: no shard manifests (manifest.part-IIIII-of-NNNNN.json) in it")
        for candidate in candidates:
            try:
                manifest = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise OutputError(f"{candidate}: unreadable manifest: {exc}") from None
            if manifest.get("kind") != MANIFEST_KIND:
                raise OutputError(f"{candidate}: not a generation manifest (kind {manifest.get('kind')!r})")
            if "shards" in manifest:
                continue  # an earlier merged manifest in the same directory
            found.append((candidate, manifest))
    return found
