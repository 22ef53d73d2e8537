"""Reading source documents (JSONL, plain/.gz/.zst): each `--shard i/n` reads only its own slice.

The inputs, in order, are one run of bytes of their on-disk sizes; shard i owns the byte range
[i*T/n, (i+1)*T/n) of that run (T: the total). A plain file's line belongs to the shard whose
range holds the line's first byte: the shard seeks there and stops at its range's end. A
compressed file cannot be entered in the middle: the k shards whose ranges overlap it each
decompress it and take every k-th line (parsing only those). So every line is read by exactly one
shard, the shards together read each plain byte once, and a shard's memory does not grow with
the input.

Identity: a record's `id`, or else `PATH:LINE` with PATH relative to the inputs' common root
(two `train.jsonl` in two folders do not collide). Its `gindex`, which picks the textbook
audience, is derived from that id, so it is the same in any shard. A line number is counted
only when a record needs one (no id, or a bad record): the newlines before the shard's range are
counted then, once.

Duplicate ids are checked within the shard's slice, exactly, in fixed memory: a first pass over
the slice puts every id in a Bloom filter sized for the slice (rbloom), collecting the ids it may
have seen before; only those few are tracked exactly while reading. (The same id in two shards'
slices gives the same document ids in both: `generation merge` refuses them.)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from synthscale.errors import SynthscaleError
from synthscale.files import open_binary, sha256_file

SLICING = "byte-ranges/1"  # recorded in the run's fingerprint: how inputs are split into shards
COMPRESSED = (".gz", ".zst", ".zstd")
BLOOM_FALSE_POSITIVES = 1e-4  # of the first pass's filter: only its candidates are tracked exactly
_BLOCK = 1 << 22


@dataclass
class SourceDoc:
    gindex: int  # a stable integer of the record, the same in any shard (picks the textbook audience)
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


def stable_index(source_id: str) -> int:
    """A record's `gindex`: from its id only, so every shard (and a rerun) agrees on it."""
    return int.from_bytes(hashlib.sha256(source_id.encode("utf-8")).digest()[:4], "big")


@dataclass(frozen=True)
class Slice:
    """What one shard reads of one input file."""

    path: str
    name: str  # relative to the inputs' common root: fallback ids and failure records
    size: int
    start: int = 0  # plain file: lines whose first byte lies in [start, end)
    end: int = 0
    every: int = 1  # compressed file: lines number j with j % every == offset
    offset: int = 0

    @property
    def compressed(self) -> bool:
        return self.path.endswith(COMPRESSED)

    def describe(self) -> dict:
        if self.compressed:
            return {"lines": f"every {self.every}th from {self.offset}"} if self.every > 1 else {"whole": True}
        return {"start": self.start, "end": self.end}


def common_root(paths: list[Path]) -> Path:
    folders = [str(Path(p).resolve().parent) for p in paths]
    return Path(os.path.commonpath(folders)) if folders else Path(".")


def plan_slices(paths: list[Path], shard: tuple[int, int] = (0, 1)) -> list[Slice]:
    """This shard's slice of every input it reads (files it has no part of are left out)."""
    index, count = shard
    root = common_root(paths)
    sizes = [os.stat(p).st_size for p in paths]
    total = sum(sizes)
    bounds = [i * total // count for i in range(count + 1)]
    mine_start, mine_end = bounds[index], bounds[index + 1]
    out: list[Slice] = []
    offset = 0
    for path, size in zip(paths, sizes):
        name = os.path.relpath(Path(path).resolve(), root)
        a, b = offset, offset + size
        offset = b
        if size == 0:
            continue
        if str(path).endswith(COMPRESSED):
            owners = [i for i in range(count) if bounds[i] < b and a < bounds[i + 1]]
            if index in owners:
                out.append(Slice(str(path), name, size, 0, size, len(owners), owners.index(index)))
        elif mine_start < b and a < mine_end:
            out.append(Slice(str(path), name, size, max(mine_start, a) - a, min(mine_end, b) - a))
    return out


def _first_line_start(handle, start: int) -> int:
    """The first line that starts at or after byte `start` (a line begun before belongs to the
    shard before)."""
    if start == 0:
        return 0
    handle.seek(start - 1)
    if handle.read(1) == b"\n":
        return start
    return start + len(handle.readline())


def _raw_lines(piece: Slice) -> Iterator[tuple[int, int, bytes]]:
    """(line index, byte offset in the file, raw line) of the slice's lines; the line index
    counts from the file's first line (compressed) or the slice's first line (plain)."""
    if piece.compressed:
        with open_binary(piece.path, "rb") as handle:
            for j, raw in enumerate(handle):
                if j % piece.every == piece.offset:
                    yield j, -1, raw
        return
    with open(piece.path, "rb") as handle:
        position = _first_line_start(handle, piece.start)
        handle.seek(position)
        j = 0
        while position < piece.end:
            raw = handle.readline()
            if not raw:
                break
            yield j, position, raw
            position += len(raw)
            j += 1


def _newlines_before(path: str, offset: int) -> int:
    count = 0
    with open(path, "rb") as handle:
        left = offset
        while left > 0:
            block = handle.read(min(_BLOCK, left))
            if not block:
                break
            count += block.count(b"\n")
            left -= len(block)
    return count


class _LineNumbers:
    """1-based line numbers of a slice's lines, counted only when first needed."""

    def __init__(self, piece: Slice):
        self.piece = piece
        self.before: int | None = 0 if piece.compressed or piece.start == 0 else None

    def of(self, j: int) -> int:
        if self.before is None:  # the newlines before the slice's first line, counted once
            with open(self.piece.path, "rb") as handle:
                first = _first_line_start(handle, self.piece.start)
            self.before = _newlines_before(self.piece.path, first)
        return self.before + j + 1


def _record_id(raw: bytes, id_key: str) -> str | None:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError too: the read reports it
        return None
    value = obj.get(id_key) if isinstance(obj, dict) else None
    return None if value is None or value == "" else str(value)


@dataclass
class SliceScan:
    """One pass over a shard's slice: what it holds (sha256 per file) and the ids that may occur
    more than once in it (an exact superset of the repeated ones)."""

    inputs: list[dict] = field(default_factory=list)  # {path, bytes, slice, sha256 of the slice}
    candidates: set[str] = field(default_factory=set)
    records: int = 0
    bloom_bits: int = 0


def scan_slices(paths: list[Path], shard: tuple[int, int] = (0, 1), id_key: str = "id") -> SliceScan:
    """The first pass: each file's slice hashed, and every record's id (or fallback id) through a
    Bloom filter sized for the slice; ids the filter may have seen before are the candidates.
    Memory: the filter (fixed when the pass starts) and the candidates (false positives, about
    1e-4 of the ids, and true repeats)."""
    from rbloom import Bloom

    slices = plan_slices(paths, shard)
    expected = max(1000, int(sum(_estimate_records(s) for s in slices) * 1.25))
    seen = Bloom(expected, BLOOM_FALSE_POSITIVES)
    found = SliceScan(bloom_bits=seen.size_in_bits)
    for piece in slices:
        lines = _LineNumbers(piece)
        digest = hashlib.sha256()
        whole = piece.compressed  # a compressed file is read whole: its own sha256
        for j, _position, raw in _raw_lines(piece):
            if not whole:
                digest.update(raw)
            if not raw.strip():
                continue
            found.records += 1
            key = _record_id(raw, id_key)
            if key is None:
                key = f"{piece.name}:{lines.of(j)}"
            if key in seen:
                found.candidates.add(key)
            else:
                seen.add(key)
        found.inputs.append({"path": str(Path(piece.path).resolve()), "bytes": piece.size, "slice": piece.describe(),
                             "sha256": sha256_file(piece.path) if whole else digest.hexdigest()})
    return found


def _estimate_records(piece: Slice) -> int:
    """Records in a slice, from the mean line length of its first MiB."""
    with open_binary(piece.path, "rb") as handle:
        if not piece.compressed:
            handle.seek(piece.start)
        sample = handle.read(1 << 20)
    lines = max(1, sample.count(b"\n"))
    span = (piece.end - piece.start) if not piece.compressed else piece.size * 4  # text compresses ~4x
    return int(span / max(1, len(sample) / lines) / piece.every) + 1


def iter_documents(
    paths: list[Path],
    text_key: str = "text",
    id_key: str = "id",
    shard: tuple[int, int] = (0, 1),
    counts: dict | None = None,
    candidates: set[str] | None = None,
) -> Iterator[SourceDoc]:
    """Yield this shard's records of `paths`, reading only its slice. `candidates` (from
    `scan_slices`; scanned here when None) are the ids tracked for duplicates.

    `counts`, when given, is filled with {path: {"records": n, "in_shard": n}}.
    """
    slices = plan_slices(paths, shard)
    if candidates is None:
        candidates = scan_slices(paths, shard, id_key).candidates
    seen: set[str] = set()
    for piece in slices:
        per_file = {"records": 0, "in_shard": 0}
        if counts is not None:
            counts[piece.path] = per_file
        lines = _LineNumbers(piece)
        for j, _position, raw in _raw_lines(piece):
            if not raw.strip():
                continue
            per_file["records"] += 1
            per_file["in_shard"] += 1
            yield from _document(piece, lines, j, raw, text_key, id_key, candidates, seen)


def _document(piece: Slice, lines: _LineNumbers, j: int, raw: bytes, text_key: str, id_key: str,
              candidates: set[str], seen: set[str]) -> Iterator[SourceDoc]:
    def fallback() -> tuple[str, int]:
        number = lines.of(j)
        return f"{piece.name}:{number}", number

    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        source_id, number = fallback()
        yield SourceDoc(stable_index(source_id), piece.path, number, source_id, None, "invalid_utf8", str(exc))
        return
    try:
        obj = json.loads(line)
    except ValueError as exc:
        source_id, number = fallback()
        yield SourceDoc(stable_index(source_id), piece.path, number, source_id, None, "malformed_json", str(exc))
        return
    if not isinstance(obj, dict):
        source_id, number = fallback()
        yield SourceDoc(stable_index(source_id), piece.path, number, source_id, None, "malformed_json",
                        "not a JSON object")
        return
    raw_id = obj.get(id_key)
    number = 0
    if raw_id is None or raw_id == "":
        source_id, number = fallback()
    else:
        source_id = str(raw_id)
    if source_id in candidates:
        if source_id in seen:
            number = number or lines.of(j)
            yield SourceDoc(stable_index(source_id), piece.path, number, f"{source_id}@{piece.name}:{number}", None,
                            "duplicate_id", f"id {source_id!r} appeared earlier in the input")
            return
        seen.add(source_id)

    def bad(error: str, detail: str) -> SourceDoc:
        return SourceDoc(stable_index(source_id), piece.path, number or lines.of(j), source_id, None,
                         error, detail)

    if text_key not in obj:
        yield bad("missing_text", f"no key {text_key!r}")
        return
    text = obj[text_key]
    if not isinstance(text, str):
        yield bad("text_not_string", type(text).__name__)
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates written as \\ud800 escapes
        yield bad("invalid_utf8", str(exc))
        return
    if not text.strip():
        yield bad("empty_text", "")
        return
    yield SourceDoc(stable_index(source_id), piece.path, number, source_id, text)


def describe_inputs(paths: list[Path], cache: dict | None = None) -> list[dict]:
    """{path, bytes, sha256} per input (whole files: a concept graph's); `cache` (path -> previous
    description with mtime_ns) avoids rehashing unchanged files on resume."""
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
