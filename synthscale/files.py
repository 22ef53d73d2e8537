"""The one file-system layer: input expansion, compressed text, hashing, atomic outputs."""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from synthscale.errors import MissingInputError, SynthscaleError


def expand_inputs(patterns: list[str] | tuple[str, ...]) -> list[Path]:
    """Expand paths and globs in order, without duplicates. Errors name the pattern."""
    out: list[Path] = []
    seen: set[Path] = set()
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise MissingInputError(f"no input matches {pattern!r}")
        for match in matches:
            path = Path(match)
            if not path.is_file():
                raise MissingInputError(f"input {str(path)!r} does not exist or is not a file")
            resolved = path.resolve()
            if resolved not in seen:
                seen.add(resolved)
                out.append(path)
    return out


def open_binary(path: str | os.PathLike, mode: str = "rb") -> IO[bytes]:
    """Open plain, .gz or .zst files as a binary stream (read or write)."""
    path = str(path)
    if path.endswith(".gz"):
        return gzip.open(path, mode)  # type: ignore[return-value]
    if path.endswith(".zst"):
        import zstandard

        if "r" in mode:  # buffered, so lines can be iterated
            return io.BufferedReader(zstandard.open(path, "rb"))
        return zstandard.open(path, "wb")
    return open(path, mode)


def open_text(path: str | os.PathLike, mode: str = "r") -> IO[str]:
    """Text view of `open_binary`, UTF-8."""
    raw = open_binary(path, "rb" if "r" in mode else "wb")
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def describe_file(path: str | os.PathLike) -> dict:
    """{path, bytes, sha256}: how artefacts name their inputs."""
    path = Path(path)
    return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


@contextlib.contextmanager
def atomic_paths(*targets: str | os.PathLike) -> Iterator[list[Path]]:
    """Yield temporary paths beside `targets`; rename them all into place only on success.

    On any exception (or a kill) the targets are untouched and the temporaries removed
    (a SIGKILL leaves only `.tmp-*` files, never a complete-looking target).
    """
    temps: list[Path] = []
    try:
        for target in targets:
            target = Path(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".tmp-{target.name}.", dir=target.parent)
            os.close(fd)
            temps.append(Path(name))
        yield temps
        mode = 0o666 & ~_umask()  # mkstemp makes 0600 files; give what open() would have
        for temp, target in zip(temps, targets):
            if temp.exists():
                os.chmod(temp, mode)
            os.replace(temp, target)
    finally:
        for temp in temps:
            if temp.exists():
                temp.unlink()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_json_atomic(path: str | os.PathLike, obj: object) -> None:
    with atomic_paths(path) as (temp,):
        temp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_paths(path) as (temp,):
        temp.write_text(text, encoding="utf-8")


def read_manifest(path: str | os.PathLike, where: str, what: str = "manifest") -> tuple[Path, dict]:
    """A stage's manifest: `path` is its folder (holding manifest.json) or the file itself.

    Returns (the manifest's path, its JSON). A missing file or one that is not a JSON object is a
    SynthscaleError whose message starts with `where`."""

    path = Path(path)
    manifest_path = path / "manifest.json" if path.is_dir() else path
    if not manifest_path.is_file():
        raise MissingInputError(f"{where}: no {what} at {str(manifest_path)!r}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SynthscaleError(f"{where}: {manifest_path} is not JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise SynthscaleError(f"{where}: {manifest_path} is not a {what} (a JSON object)")
    return manifest_path, manifest
