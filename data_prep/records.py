"""Reading documents: JSONL (plain, .gz, .zst) and Parquet, one record at a time.

Reading is split in two so that parsing can run in worker processes:
`iter_raw_records` streams (line number, payload) cheaply in the main process, and
`parse_record` turns a payload into (id, text, origin) or raises `RecordError` with a reason.
`origin` holds the record's `recipe` and `generator` fields (what `generation run` writes on
every synthetic document), so a tokenized dataset can say what made its documents.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from synthscale.errors import SynthscaleError
from synthscale.files import open_binary

# Why a record was skipped; the manifest counts each.
SKIP_REASONS = ("empty", "malformed_json", "missing_text_key", "text_not_string", "invalid_utf8")
# Record fields that say what made a document (written by `generation run`), counted per value.
ORIGIN_KEYS = ("recipe", "generator")


class RecordError(ValueError):
    """A record that cannot become a document; `reason` is one of SKIP_REASONS (internal: the
    tokenizer skips the record or raises InvalidInputError, which names the file and line)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class InvalidInputError(SynthscaleError):
    """A bad record, located: the message names the file and the line."""

    def __init__(self, path: str, line: int, error: RecordError):
        super().__init__(f"{path}:{line}: {error.reason.replace('_', ' ')}: {error.detail}")
        self.path, self.line, self.reason = path, line, error.reason


def is_parquet(path: str | Path) -> bool:
    return str(path).endswith(".parquet")


def iter_raw_records(path: str | Path, text_key: str = "text") -> Iterator[tuple[int, object]]:
    """Yield (line number from 1, payload): raw bytes for JSONL, a dict for Parquet rows."""
    if is_parquet(path):
        yield from _iter_parquet_rows(path, text_key)
        return
    with open_binary(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if raw.strip():
                yield line_no, raw


def _iter_parquet_rows(path, text_key: str) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(str(path))
    names = parquet.schema_arrow.names
    if text_key not in names:
        raise InvalidInputError(
            str(path), 0, RecordError("missing_text_key", f"no column {text_key!r} (columns: {names})")
        )
    wanted = ["id", *ORIGIN_KEYS]
    columns = [text_key] + [c for c in wanted if c in names and c != text_key]
    row_no = 0
    for batch in parquet.iter_batches(columns=columns, batch_size=1024):
        for row in batch.to_pylist():
            row_no += 1
            yield row_no, row


def parse_record(payload: object, text_key: str) -> tuple[str | None, str, tuple[str | None, ...]]:
    """(id or None, text, origin) of one record; raises RecordError for anything unusable.

    `origin` has one entry per ORIGIN_KEYS: the field's value when it is a string, else None.
    """
    if isinstance(payload, bytes):
        try:
            decoded = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecordError("invalid_utf8", f"byte {exc.start} is not UTF-8") from None
        try:
            record = json.loads(decoded)
        except json.JSONDecodeError as exc:
            raise RecordError("malformed_json", exc.msg + f" at column {exc.colno}") from None
        if not isinstance(record, dict):
            raise RecordError("malformed_json", f"expected an object, got {type(record).__name__}")
    else:
        record = payload  # a Parquet row
    if text_key not in record or record[text_key] is None:
        raise RecordError("missing_text_key", f"no {text_key!r} field")
    text = record[text_key]
    if not isinstance(text, str):
        raise RecordError("text_not_string", f"{text_key!r} is {type(text).__name__}, not a string")
    if not text.strip():
        raise RecordError("empty", f"{text_key!r} is empty")
    doc_id = record.get("id")
    origin = tuple(value if isinstance(value := record.get(key), str) else None for key in ORIGIN_KEYS)
    return (None if doc_id is None else str(doc_id)), text, origin
