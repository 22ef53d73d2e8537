"""Output files of one worker (one `--shard i/n`) and the commit log that makes them resumable.

Layout of an output directory DIR (TAG is `part-IIIII-of-NNNNN`):

    DIR/TAG-SSSSS.jsonl            output documents (`id`, `text`, ...): what `data_prep tokenize` reads
    DIR/intermediate/TAG.jsonl     outputs of intermediate steps (the textbook's outlines)
    DIR/failures/TAG.jsonl         one record per failed request or bad input line, with its reason
    DIR/state/TAG/commits.jsonl    the commit log
    DIR/state/TAG/run.json         what the run was started with (checked on resume)
    DIR/manifest.json              (one worker) or DIR/manifest.TAG.json (n workers; `generation merge`)

Every file but the log is append-only. A commit fsyncs the data files, then appends one line to
the log with their sizes and the keys completed since the previous commit, and fsyncs the log.
On restart the log is replayed: a torn last line is dropped, each file is cut back to its
committed size (whatever was written after the last commit is discarded, and redone), and the
completed keys are skipped. So a kill at any moment, SIGKILL included, loses nothing that was
committed and duplicates nothing. Creating a file fsyncs its directory before any commit names it.

A committed file that is missing, shorter than its committed size, or whose committed tail is not
a complete JSON line (NUL bytes from a crash, a torn overwrite) is refused, naming the file:
nothing is extended or guessed at. `open(repair=...)` (`generation run --repair`) instead keeps
every intact line, and reopens exactly the keys whose documents (or failure records) were lost,
so the run generates them again (generation/run/store_recovery.py).

A data file that a manifest has listed is never appended to again: a store reopened after its
manifest was written starts a new data file, so a merged or tokenized corpus keeps its sha256.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

from synthscale.errors import SynthscaleError

from generation.corpus.outputs import manifest_name, shard_tag
from generation.run.store_recovery import find_damage, fsync_dir, repair_store


def data_file_name(tag: str, seq: int) -> str:
    return f"{tag}-{seq:05d}.jsonl"


def _mkdir_durable(path: Path) -> None:
    """mkdir -p, fsyncing the parent of every folder it creates (else a crash may lose the folder)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
        fsync_dir(folder.parent)


def dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


class RunLockedError(SynthscaleError):
    pass


class StoreDamagedError(SynthscaleError):
    """A committed file is missing, shorter than committed, or its committed tail is corrupt."""


@dataclass
class Replayed:
    """What the commit log says was done."""

    commits: int = 0
    status: dict[str, str] = field(default_factory=dict)  # key -> ok | filtered | failed
    failure_reason: dict[str, str] = field(default_factory=dict)  # key -> reason (for failed keys)
    retryable: set[str] = field(default_factory=set)  # failed keys that may be retried
    sources_done: set[str] = field(default_factory=set)
    counters: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0
    data_seq: int = 0
    data_offset: int = 0
    data_docs: int = 0  # documents in the current data file
    inter_offset: int = 0
    fail_offset: int = 0
    files: dict[str, int] = field(default_factory=dict)  # data file name -> documents
    sizes: dict[str, int] = field(default_factory=dict)  # data file name -> committed bytes (logs since v2)
    sources_counted: set[str] = field(default_factory=set)  # sources ever finished (counted once)
    repairs: list[dict] = field(default_factory=list)  # what each --repair found and reopened


class ShardStore:
    """Append-only output of one worker with a commit log. Not thread safe (one writer)."""

    def __init__(self, root: str | os.PathLike, index: int, count: int, docs_per_file: int = 100_000):
        self.root = Path(root)
        self.index, self.shard_count = index, count
        self.tag = shard_tag(index, count)
        self.docs_per_file = max(1, int(docs_per_file))
        self.state_dir = self.root / "state" / self.tag
        self.log_path = self.state_dir / "commits.jsonl"
        self.run_path = self.state_dir / "run.json"
        self.inter_path = self.root / "intermediate" / f"{self.tag}.jsonl"
        self.fail_path = self.root / "failures" / f"{self.tag}.jsonl"
        self.manifest_path = self.root / manifest_name(index, count)
        self._lock_handle: IO | None = None
        self._data: IO[bytes] | None = None  # opened on the first document (a new file only when needed)
        self._inter: IO[bytes] | None = None
        self._fail: IO[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.replayed = Replayed()
        # pending (uncommitted) work
        self._pending_status: list[tuple[str, str]] = []
        self._pending_failed: list[list] = []
        self._pending_sources: list[str] = []
        self._pending_counters: Counter = Counter()
        self._dirty_data: set[int] = set()
        self._sizes: dict[str, int] = {}

    # ----------------------------------------------------------------- open / recover
    def open(self, repair: Callable[[str], str | None] | None = None) -> Replayed:
        """Lock, replay the log and check the committed files. `repair` (key -> the id of the
        document that key writes, None for keys that write none) turns a refusal of damaged
        files into their repair: the keys whose output was lost are reopened."""
        for directory in (self.root, self.state_dir, self.inter_path.parent, self.fail_path.parent):
            _mkdir_durable(directory)
        self._lock_handle = open(self.state_dir / "lock", "a+")
        try:
            fcntl.flock(self._lock_handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_handle.close()
            self._lock_handle = None
            raise RunLockedError(
                f"another `generation run` holds {self.state_dir}: one process per shard and output directory"
            ) from None
        try:
            self.replayed = self._replay()
            self._remove_uncommitted_files()
            damage = find_damage(self)
            if damage and repair is None:
                more = f" (and {len(damage) - 1} more)" if len(damage) > 1 else ""
                raise StoreDamagedError(f"{damage[0]}{more}: committed output was lost after its commit; rerun "
                                        "with --repair to keep every intact line and generate the lost keys again")
            if damage:
                repair_store(self, damage, repair)
                self.replayed = self._replay()
            self._cut_back_uncommitted()
        except BaseException:
            self.close()
            raise
        r = self.replayed
        self._data_seq, self._data_docs = r.data_seq, r.data_docs
        self._files = dict(r.files)
        self._sizes = dict(r.sizes)
        if r.data_offset > 0 and self.manifest_path.exists():
            self._data_seq, self._data_docs = r.data_seq + 1, 0  # listed by a manifest: never appended to
        self._inter = self._open_append(self.inter_path)
        self._fail = self._open_append(self.fail_path)
        self._log = self._open_append(self.log_path)
        return r

    def _open_append(self, path: Path) -> IO[bytes]:
        """Open for appending; a file created here is made durable in its directory at once."""
        created = not path.exists()
        handle = open(path, "ab")
        if created:
            fsync_dir(path.parent)
        return handle

    def _replay(self) -> Replayed:
        r = Replayed()
        if not self.log_path.exists():
            return r
        good_end = 0
        with open(self.log_path, "rb") as handle:
            raw = handle.read()
        position = 0
        lines = raw.splitlines(keepends=True)
        for number, line in enumerate(lines, start=1):
            try:
                rec = json.loads(line) if line.endswith(b"\n") else None
            except ValueError:
                rec = None
            if rec is None:
                if number < len(lines):
                    raise StoreDamagedError(f"{self.log_path}: line {number} of {len(lines)} is not a complete "
                                            "commit record, and commits follow it: the log is corrupt")
                break  # a torn last line: the commit it began never happened
            position += len(line)
            good_end = position
            _apply(r, rec)
        if good_end != len(raw):
            with open(self.log_path, "r+b") as handle:
                handle.truncate(good_end)
                handle.flush()
                os.fsync(handle.fileno())
        return r

    def _remove_uncommitted_files(self) -> None:
        """Data files opened after the last commit: nothing in them is committed."""
        r = self.replayed
        pattern = re.compile(re.escape(self.tag) + r"-(\d{5})\.jsonl$")
        removed = False
        for path in self.root.iterdir():
            match = pattern.fullmatch(path.name)
            if match and int(match.group(1)) > r.data_seq and path.name not in r.files:
                path.unlink()
                removed = True
        if removed:
            fsync_dir(self.root)

    def _cut_back_uncommitted(self) -> None:
        """Bytes written after the last commit are discarded (and redone)."""
        r = self.replayed
        for path, offset in (
            (self.root / data_file_name(self.tag, r.data_seq), r.data_offset),
            (self.inter_path, r.inter_offset),
            (self.fail_path, r.fail_offset),
        ):
            if path.exists() and path.stat().st_size > offset:
                with open(path, "r+b") as handle:
                    handle.truncate(offset)
                    handle.flush()
                    os.fsync(handle.fileno())

    # ----------------------------------------------------------------- writing
    def write_document(self, record: dict) -> None:
        if self._data is None:
            self._open_data()
        elif self._data_docs >= self.docs_per_file:
            self._roll()
        assert self._data is not None
        self._data.write(dumps(record).encode("utf-8"))
        self._data_docs += 1
        self._files[data_file_name(self.tag, self._data_seq)] = self._data_docs
        self._dirty_data.add(self._data_seq)

    def _open_data(self) -> None:
        name = data_file_name(self.tag, self._data_seq)
        self._data = self._open_append(self.root / name)
        self._files.setdefault(name, self._data_docs)

    def _roll(self) -> None:
        assert self._data is not None
        self._data.flush()
        os.fsync(self._data.fileno())
        self._sizes[data_file_name(self.tag, self._data_seq)] = self._data.tell()
        self._data.close()
        self._data_seq += 1
        self._data_docs = 0
        self._open_data()

    def write_intermediate(self, record: dict) -> None:
        assert self._inter is not None
        self._inter.write(dumps(record).encode("utf-8"))

    def write_failure(self, record: dict) -> None:
        assert self._fail is not None
        self._fail.write(dumps(record).encode("utf-8"))

    def mark(self, key: str, status: str) -> None:
        self._pending_status.append((key, status))

    def mark_failed(self, key: str, reason: str, retryable: bool) -> None:
        self._pending_status.append((key, "failed"))
        self._pending_failed.append([key, reason, bool(retryable)])

    def source_done(self, source_id: str) -> None:
        self._pending_sources.append(source_id)

    def count(self, name: str, n: int | float = 1) -> None:
        self._pending_counters[name] += n

    @property
    def pending(self) -> int:
        return len(self._pending_status) + len(self._pending_sources)

    def commit(self, elapsed_s: float) -> bool:
        """Make everything written since the last commit durable. Returns False if nothing to do."""
        if not self._pending_status and not self._pending_sources and not self._pending_counters:
            return False
        assert self._inter and self._fail and self._log
        for handle in (self._data, self._inter, self._fail):
            if handle is not None:
                handle.flush()
                os.fsync(handle.fileno())
        r = self.replayed
        if self._data is not None:
            data = [self._data_seq, self._data.tell(), self._data_docs]
            self._sizes[data_file_name(self.tag, self._data_seq)] = data[1]
        else:  # no document since the store was opened: the current file is still the last commit's
            data = [r.data_seq, r.data_offset, r.data_docs]
        dirty = sorted(self._dirty_data | ({self._data_seq} if self._data is not None else set()))
        names = [data_file_name(self.tag, s) for s in dirty]
        record = {
            "commit": r.commits + 1,
            "data": data,
            "intermediate": self._inter.tell(),
            "failures": self._fail.tell(),
            "files": {name: self._files[name] for name in names},
            "sizes": {name: self._sizes[name] for name in names},
            "status": self._pending_status,
            "failed": self._pending_failed,
            "sources_done": self._pending_sources,
            "counters": dict(self._pending_counters),
            "elapsed_s": round(elapsed_s, 6),
        }
        self.append_commit(record)
        self._pending_status, self._pending_failed, self._pending_sources = [], [], []
        self._pending_counters = Counter()
        self._dirty_data = set()
        return True

    def append_commit(self, record: dict) -> None:
        """Append one record to the log, durably, and fold it into the replayed view."""
        handle = self._log if self._log is not None else open(self.log_path, "ab")
        try:
            handle.write(dumps(record).encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            if handle is not self._log:
                handle.close()
        _apply(self.replayed, record)

    def read_intermediate(self) -> list[dict]:
        """Committed intermediate records (the file is cut back to its committed size on open)."""
        if not self.inter_path.exists():
            return []
        out = []
        with open(self.inter_path, "rb") as handle:
            for line in handle:
                out.append(json.loads(line))
        return out

    def data_files(self) -> list[Path]:
        return [self.root / name for name in sorted(self.replayed.files)]

    def close(self) -> None:
        for handle in (self._data, self._inter, self._fail, self._log):
            if handle is not None:
                handle.close()
        self._data = self._inter = self._fail = self._log = None
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle.fileno(), fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None


def _apply(r: Replayed, rec: dict) -> None:
    """Fold one commit record into the replayed view (the log's replay, and each new commit)."""
    r.commits += 1
    for key in rec.get("reopened", []):  # a repair: their output was lost, they are to do again
        r.status.pop(key, None)
        r.failure_reason.pop(key, None)
        r.retryable.discard(key)
    r.sources_done.difference_update(rec.get("sources_reopened", []))
    for name in rec.get("files_removed", []):
        r.files.pop(name, None)
        r.sizes.pop(name, None)
    if "repair" in rec:
        r.repairs.append(rec["repair"])
    for key, status in rec.get("status", []):
        r.status[key] = status
        if status != "failed":
            r.failure_reason.pop(key, None)
            r.retryable.discard(key)
    for key, reason, retryable in rec.get("failed", []):
        r.failure_reason[key] = reason
        if retryable:
            r.retryable.add(key)
        else:
            r.retryable.discard(key)
    r.sources_done.update(rec.get("sources_done", []))
    r.sources_counted.update(rec.get("sources_done", []))
    r.counters.update(rec.get("counters", {}))
    r.elapsed_s += float(rec.get("elapsed_s", 0.0))
    r.data_seq, r.data_offset, r.data_docs = rec["data"]
    r.inter_offset = rec["intermediate"]
    r.fail_offset = rec["failures"]
    r.files.update(rec.get("files", {}))
    r.sizes.update(rec.get("sizes", {}))
