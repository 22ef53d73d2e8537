"""Reading source documents (JSONL, plain/.gz/.zst) with a global position for each record,
so that `--shard i/n` takes a deterministic slice and every record has a stable identity."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from synthscale.errors import SynthscaleError
from synthscale.files import open_binary, sha256_file


@dataclass
class SourceDoc:
    gindex: int  # position among all non-blank records of all inputs, in order
    path: str
    line: int  # 1-based line number in its file
    source_id: str
    text: str | None  # None when the record is bad (see error)
    error: str | None = None  # invalid_utf8, malformed_json, missing_text, text_not_string, empty_text, duplicate_id
    detail: str = ""
    values: dict | None = None  # prompt placeholders, for sources that are not split into chunks (concept graph)
    extra: dict | None = None  # fields copied into the output record (concept ids, source documents, ...)


def parse_shard(spec: str | None) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n. None -> (0, 1)."""
    if spec is None or spec == "":
        return 0, 1
    try:
        left, right = str(spec).split("/")
        index, count = int(left), int(right)
    except ValueError:
        raise SynthscaleError(f"--shard: expected I/N such as 0/4, got {spec!r}") from None
    if count < 1 or not 0 <= index < count:
        raise SynthscaleError(f"--shard: need 0 <= I < N, got {spec!r}")
    return index, count


def in_shard(gindex: int, index: int, count: int) -> bool:
    return gindex % count == index


def iter_documents(
    paths: list[Path],
    text_key: str = "text",
    id_key: str = "id",
    shard: tuple[int, int] = (0, 1),
    counts: dict | None = None,
) -> Iterator[SourceDoc]:
    """Yield this shard's records of `paths` in order. Every worker reads all records (cheap next
    to generation) so positions, and the detection of duplicate ids, do not depend on the shard.

    `counts`, when given, is filled with {path: {"records": n, "in_shard": m}}.
    """
    index, count = shard
    gindex = -1
    seen_ids: set[str] = set()
    for path in paths:
        name = Path(path).name
        per_file = {"records": 0, "in_shard": 0}
        if counts is not None:
            counts[str(path)] = per_file
        with open_binary(path, "rb") as handle:
            for lineno, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                gindex += 1
                per_file["records"] += 1
                mine = in_shard(gindex, index, count)
                fallback_id = f"{name}:{lineno}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    if mine:
                        per_file["in_shard"] += 1
                        yield SourceDoc(gindex, str(path), lineno, fallback_id, None, "invalid_utf8", str(exc))
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    if mine:
                        per_file["in_shard"] += 1
                        yield SourceDoc(gindex, str(path), lineno, fallback_id, None, "malformed_json", str(exc))
                    continue
                if not isinstance(obj, dict):
                    if mine:
                        per_file["in_shard"] += 1
                        yield SourceDoc(gindex, str(path), lineno, fallback_id, None, "malformed_json", "not a JSON object")
                    continue
                raw_id = obj.get(id_key)
                source_id = fallback_id if raw_id is None or raw_id == "" else str(raw_id)
                duplicate = source_id in seen_ids
                seen_ids.add(source_id)
                if not mine:
                    continue
                per_file["in_shard"] += 1
                if duplicate:
                    yield SourceDoc(gindex, str(path), lineno, f"{source_id}@{name}:{lineno}", None, "duplicate_id",
                                    f"id {source_id!r} appeared earlier in the input")
                    continue
                if text_key not in obj:
                    yield SourceDoc(gindex, str(path), lineno, source_id, None, "missing_text", f"no key {text_key!r}")
                    continue
                text = obj[text_key]
                if not isinstance(text, str):
                    yield SourceDoc(gindex, str(path), lineno, source_id, None, "text_not_string", type(text).__name__)
                    continue
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as exc:  # lone surrogates written as \\ud800 escapes
                    yield SourceDoc(gindex, str(path), lineno, source_id, None, "invalid_utf8", str(exc))
                    continue
                if not text.strip():
                    yield SourceDoc(gindex, str(path), lineno, source_id, None, "empty_text", "")
                    continue
                yield SourceDoc(gindex, str(path), lineno, source_id, text)


def describe_inputs(paths: list[Path], cache: dict | None = None) -> list[dict]:
    """{path, bytes, sha256} per input; `cache` (path -> previous description with mtime_ns)
    avoids rehashing unchanged files on resume."""
    out = []
    for path in paths:
        resolved = str(Path(path).resolve())
        stat = os.stat(path)
        old = (cache or {}).get(resolved)
        if old and old.get("bytes") == stat.st_size and old.get("mtime_ns") == stat.st_mtime_ns:
            digest = old["sha256"]
        else:
            digest = sha256_file(path)
        out.append({"path": resolved, "bytes": stat.st_size, "sha256": digest, "mtime_ns": stat.st_mtime_ns})
    return out
