"""Checking a shard's committed files on open, and `generation run --repair`.

`find_damage` compares every file the commit log names with what the log says was committed:
a file that is missing, shorter than its committed size, longer while no longer being written, or
whose committed tail is not a complete JSON line (NUL bytes left by a crash, a torn overwrite) is
damage. `ShardStore.open` refuses damage, naming the file; it never extends a file or keeps keys
whose output is gone.

`repair_store` keeps every intact line of each damaged file (rewritten atomically beside it,
so a hard link to the old file is left as it was), then reopens exactly the keys whose output was
lost: final-step keys whose document id no longer occurs in any data file, and (when the
failures file was damaged) failed keys whose failure record is gone. One commit record says so
(`repair`, `reopened`, `sources_reopened`); the documents counters are corrected to what the
files hold, and new documents go to a new data file. The run then generates the reopened keys
again, with their own seeds.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

TAIL_WINDOW = 1 << 20  # bytes before a committed size that are checked on every open


class RecoverableStore(Protocol):
    """What recovery reads and writes of a shard's store: a `ShardStore` (generation/run/store.py),
    which uses this module when it opens, so this module names what it needs, not the class."""

    root: Path
    tag: str
    inter_path: Path
    fail_path: Path
    replayed: Any  # the store's `Replayed`: its commit log, replayed

    def append_commit(self, record: dict) -> None: ...


def fsync_dir(path: Path) -> None:
    """fsync a directory, so a file created or renamed in it survives a crash (best effort: some
    file systems refuse to open or fsync a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Damage:
    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def _tail_problem(path: Path, committed: int) -> str | None:
    """Whether the last committed bytes end in a complete JSON line, without NUL bytes."""
    start = max(0, committed - TAIL_WINDOW)
    with open(path, "rb") as handle:
        handle.seek(start)
        window = handle.read(committed - start)
    nul = window.find(b"\x00")
    if nul >= 0:
        return f"NUL bytes at byte {start + nul:,}, inside its {committed:,} committed bytes"
    if not window.endswith(b"\n"):
        return f"its committed {committed:,} bytes do not end with a complete line"
    cut = window.rfind(b"\n", 0, len(window) - 1)
    if cut < 0 and start > 0:
        return None  # one line longer than the window: not checked here
    try:
        ok = isinstance(json.loads(window[cut + 1:]), dict)
    except ValueError:
        ok = False
    return None if ok else f"its last committed line (at byte {start + cut + 1:,}) is not a JSON record"


def committed_files(store: RecoverableStore) -> list[tuple[Path, int | None]]:
    """(path, committed bytes) of every file `store`'s commit log names; None where an older log
    did not record the size of a data file that is no longer the current one."""
    r = store.replayed
    out: list[tuple[Path, int | None]] = []
    current = f"{store.tag}-{r.data_seq:05d}.jsonl"
    for name in sorted(r.files):
        out.append((store.root / name, r.data_offset if name == current else r.sizes.get(name)))
    if current not in r.files and r.data_offset:
        out.append((store.root / current, r.data_offset))
    return out + [(store.inter_path, r.inter_offset), (store.fail_path, r.fail_offset)]


def find_damage(store: RecoverableStore) -> list[Damage]:
    """Every committed file of `store` that does not hold what its commit log says."""
    r = store.replayed
    current = store.root / f"{store.tag}-{r.data_seq:05d}.jsonl"
    found: list[Damage] = []
    for path, committed in committed_files(store):
        if committed is None:  # an older log: only whether the file is there
            if not path.exists() and r.files.get(path.name, 0) > 0:
                found.append(Damage(path, f"missing (the commit log records {r.files[path.name]:,} documents in it)"))
            continue
        if committed == 0:
            continue
        if not path.exists():
            found.append(Damage(path, f"missing (the commit log records {committed:,} committed bytes)"))
            continue
        size = path.stat().st_size
        if size < committed:
            found.append(Damage(path, f"holds {size:,} bytes, {committed:,} were committed"))
        elif size > committed and path.parent == store.root and path != current:
            found.append(Damage(path, f"holds {size:,} bytes, {committed:,} were committed, and it was closed"))
        elif (problem := _tail_problem(path, committed)) is not None:
            found.append(Damage(path, problem))
    return found


def _intact_records(path: Path, committed: int | None, keep: Path | None = None) -> tuple[list[dict], int]:
    """The complete JSON records within the committed bytes of `path` (all of it when None),
    and the number of lines dropped. With `keep`, the intact lines are also written there."""
    records: list[dict] = []
    dropped = 0
    if not path.exists():
        if keep is not None:
            keep.write_bytes(b"")
        return records, 0
    limit = path.stat().st_size if committed is None else min(committed, path.stat().st_size)
    out = open(keep, "wb") if keep is not None else None
    try:
        with open(path, "rb") as handle:
            read = 0
            for line in handle:
                if read >= limit:
                    break
                line = line[: limit - read]
                read += len(line)
                record = None
                if line.endswith(b"\n") and b"\x00" not in line:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        record = None
                if not isinstance(record, dict):
                    dropped += bool(line.strip(b"\x00\n "))
                    continue
                records.append(record)
                if out is not None:
                    out.write(line)
        if out is not None:
            out.flush()
            os.fsync(out.fileno())
    finally:
        if out is not None:
            out.close()
    return records, dropped


def _rewrite(path: Path, committed: int | None) -> tuple[list[dict], int, int]:
    """Replace a damaged file by its intact lines (a new file, renamed over it). Returns the
    records kept, the lines dropped and the new size."""
    temporary = path.with_name(f".{path.name}.repair")
    records, dropped = _intact_records(path, committed, temporary)
    os.replace(temporary, path)
    fsync_dir(path.parent)
    return records, dropped, path.stat().st_size


def repair_store(store: RecoverableStore, damage: list[Damage], document_id_of: Callable[[str], str | None]) -> dict:
    """Keep the intact lines of the damaged files and reopen the keys whose output was lost."""
    r = store.replayed
    damaged = {d.path for d in damage}
    files: dict[str, int] = {}
    sizes: dict[str, int] = {}
    removed: list[str] = []
    dropped: dict[str, int] = {}
    ids: set[str] = set()
    documents = tokens = 0
    offsets = {"intermediate": r.inter_offset, "failures": r.fail_offset}
    failure_keys: set[str] | None = None
    for path, committed in committed_files(store):
        if path in damaged:
            records, lost_lines, size = _rewrite(path, committed)
            dropped[str(path.relative_to(store.root))] = lost_lines
        else:
            records, size = _intact_records(path, committed)[0], committed
        if path == store.inter_path:
            offsets["intermediate"] = size
        elif path == store.fail_path:
            offsets["failures"] = size
            if path in damaged:
                failure_keys = {str(rec.get("key")) for rec in records}
        else:
            for rec in records:
                ids.add(str(rec.get("id")))
                tokens += int(rec.get("output_tokens") or 0)
            documents += len(records)
            if path in damaged:
                if records:
                    files[path.name], sizes[path.name] = len(records), size
                else:
                    path.unlink(missing_ok=True)
                    removed.append(path.name)
    lost = sorted(key for key, state in r.status.items()
                  if state == "ok" and (doc := document_id_of(key)) is not None and doc not in ids)
    lost_failed = sorted(key for key, state in r.status.items()
                         if state == "failed" and failure_keys is not None and key not in failure_keys)
    reopened = lost + lost_failed
    seqs = [int(name[-11:-6]) for name in r.files] + [r.data_seq]
    summary = {
        "time": time.time(),
        "damaged": [str(d) for d in damage],
        "lines_dropped": dropped,
        "documents_kept": documents,
        "documents_lost": len(lost),
        "failures_lost": len(lost_failed),
        "sources_reopened": len({json.loads(k)[0] for k in reopened}),
    }
    store.append_commit({
        "commit": r.commits + 1,
        "repair": summary,
        "data": [max(seqs) + 1, 0, 0],  # what comes next goes to a new file
        "intermediate": offsets["intermediate"],
        "failures": offsets["failures"],
        "files": files,
        "sizes": sizes,
        "files_removed": removed,
        "reopened": reopened,
        "sources_reopened": sorted({json.loads(k)[0] for k in reopened}),
        "status": [], "failed": [], "sources_done": [],
        "counters": {"documents": documents - int(r.counters.get("documents", 0)),
                     "document_tokens": tokens - int(r.counters.get("document_tokens", 0))},
        "elapsed_s": 0.0,
    })
    return summary
