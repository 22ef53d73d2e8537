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
committed and duplicates nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from synthscale.errors import SynthscaleError


def shard_tag(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}"


def data_file_name(tag: str, seq: int) -> str:
    return f"{tag}-{seq:05d}.jsonl"


def manifest_name(index: int, count: int) -> str:
    return "manifest.json" if count == 1 else f"manifest.{shard_tag(index, count)}.json"


def _fsync_dir(path: Path) -> None:
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


def dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


class RunLockedError(SynthscaleError):
    pass


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
        self._lock_handle: IO | None = None
        self._data: IO[bytes] | None = None
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

    # ----------------------------------------------------------------- open / recover
    def open(self) -> Replayed:
        for directory in (self.root, self.state_dir, self.inter_path.parent, self.fail_path.parent):
            directory.mkdir(parents=True, exist_ok=True)
        self._lock_handle = open(self.state_dir / "lock", "a+")
        try:
            fcntl.flock(self._lock_handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_handle.close()
            self._lock_handle = None
            raise RunLockedError(
                f"another `generation run` holds {self.state_dir}: one process per shard and output directory"
            ) from None
        self.replayed = self._replay()
        self._recover_files()
        r = self.replayed
        self._data = open(self.root / data_file_name(self.tag, r.data_seq), "ab")
        self._data_seq = r.data_seq
        self._data_docs = r.data_docs
        self._files = dict(r.files)
        self._files.setdefault(data_file_name(self.tag, r.data_seq), r.data_docs)
        self._inter = open(self.inter_path, "ab")
        self._fail = open(self.fail_path, "ab")
        self._log = open(self.log_path, "ab")
        return r

    def _replay(self) -> Replayed:
        r = Replayed()
        if not self.log_path.exists():
            return r
        good_end = 0
        with open(self.log_path, "rb") as handle:
            raw = handle.read()
        position = 0
        for line in raw.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn last line
            try:
                rec = json.loads(line)
            except ValueError:
                break
            position += len(line)
            good_end = position
            r.commits += 1
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
            r.counters.update(rec.get("counters", {}))
            r.elapsed_s += float(rec.get("elapsed_s", 0.0))
            r.data_seq, r.data_offset, r.data_docs = rec["data"]
            r.inter_offset = rec["intermediate"]
            r.fail_offset = rec["failures"]
            r.files.update(rec.get("files", {}))
        if good_end != len(raw):
            with open(self.log_path, "r+b") as handle:
                handle.truncate(good_end)
                handle.flush()
                os.fsync(handle.fileno())
        return r

    def _recover_files(self) -> None:
        r = self.replayed
        pattern = re.compile(re.escape(self.tag) + r"-(\d{5})\.jsonl$")
        for path in self.root.iterdir():
            match = pattern.fullmatch(path.name)
            if match and int(match.group(1)) > r.data_seq:
                path.unlink()  # opened after the last commit: nothing in it is committed
        for path, offset in (
            (self.root / data_file_name(self.tag, r.data_seq), r.data_offset),
            (self.inter_path, r.inter_offset),
            (self.fail_path, r.fail_offset),
        ):
            if path.exists() and path.stat().st_size != offset:
                with open(path, "r+b") as handle:
                    handle.truncate(offset)
                    handle.flush()
                    os.fsync(handle.fileno())
        _fsync_dir(self.root)

    # ----------------------------------------------------------------- writing
    def write_document(self, record: dict) -> None:
        assert self._data is not None
        if self._data_docs >= self.docs_per_file:
            self._roll()
        self._data.write(dumps(record).encode("utf-8"))
        self._data_docs += 1
        self._files[data_file_name(self.tag, self._data_seq)] = self._data_docs
        self._dirty_data.add(self._data_seq)

    def _roll(self) -> None:
        assert self._data is not None
        self._data.flush()
        os.fsync(self._data.fileno())
        self._data.close()
        self._data_seq += 1
        self._data_docs = 0
        self._data = open(self.root / data_file_name(self.tag, self._data_seq), "ab")
        self._files[data_file_name(self.tag, self._data_seq)] = 0

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
        assert self._data and self._inter and self._fail and self._log
        for handle in (self._data, self._inter, self._fail):
            handle.flush()
            os.fsync(handle.fileno())
        record = {
            "commit": self.replayed.commits + 1,
            "data": [self._data_seq, self._data.tell(), self._data_docs],
            "intermediate": self._inter.tell(),
            "failures": self._fail.tell(),
            "files": {data_file_name(self.tag, s): self._files[data_file_name(self.tag, s)] for s in sorted(self._dirty_data | {self._data_seq})},
            "status": self._pending_status,
            "failed": self._pending_failed,
            "sources_done": self._pending_sources,
            "counters": dict(self._pending_counters),
            "elapsed_s": round(elapsed_s, 6),
        }
        self._log.write(dumps(record).encode("utf-8"))
        self._log.flush()
        os.fsync(self._log.fileno())
        # fold into the replayed view, so it always reflects the durable state
        r = self.replayed
        r.commits += 1
        for key, status in self._pending_status:
            r.status[key] = status
            if status != "failed":
                r.failure_reason.pop(key, None)
                r.retryable.discard(key)
        for key, reason, retryable in self._pending_failed:
            r.failure_reason[key] = reason
            (r.retryable.add if retryable else r.retryable.discard)(key)
        r.sources_done.update(self._pending_sources)
        r.counters.update(self._pending_counters)
        r.elapsed_s += elapsed_s
        r.data_seq, r.data_offset, r.data_docs = record["data"]
        r.inter_offset, r.fail_offset = record["intermediate"], record["failures"]
        r.files.update(record["files"])
        self._pending_status, self._pending_failed, self._pending_sources = [], [], []
        self._pending_counters = Counter()
        self._dirty_data = set()
        return True

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
