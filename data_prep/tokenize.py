"""`data_prep tokenize`: documents -> megatron-core .bin/.idx + manifest, streamed.

The main process reads raw lines in batches; batches are parsed and encoded either
in-process (one worker) or by a pool of worker processes (several), and come back in
order to be appended by megatron-core's `IndexedDatasetBuilder`. Memory stays flat:
only a few batches are in flight at any time. All outputs are written to temporary
files and renamed into place at the end, the manifest last, so an interrupted run
leaves nothing that looks complete.
"""

from __future__ import annotations

import array
import gzip
import itertools
import multiprocessing as mp
import sys
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from data_prep.indexed import megatron_indexed
from data_prep.records import (
    ORIGIN_KEYS,
    SKIP_REASONS,
    InvalidInputError,
    RecordError,
    iter_raw_records,
    parse_record,
)
from data_prep.tokenizer_spec import Tokenizer, load_tokenizer
from synthscale.errors import SynthscaleError
from synthscale.files import atomic_paths, describe_file, expand_inputs, sha256_file, write_json_atomic
from synthscale.provenance import provenance

MANIFEST_KIND = "synthscale.tokenized"
BATCH_DOCS = 256
IN_FLIGHT = 4  # batches read ahead per worker


@dataclass(frozen=True)
class TokenizeConfig:
    inputs: tuple[str, ...]
    output_prefix: str
    tokenizer: str
    text_key: str = "text"
    workers: int = 1
    skip_invalid: bool = False
    show_progress: bool = True

    def __post_init__(self):
        if not self.inputs:
            raise SynthscaleError("inputs: give at least one JSONL or Parquet file (or glob)")
        if self.workers < 1:
            raise SynthscaleError(f"workers: must be at least 1, got {self.workers}")
        if not self.text_key:
            raise SynthscaleError("text_key: must not be empty")
        if Path(self.output_prefix).suffix in (".bin", ".idx"):
            raise SynthscaleError(
                f"output_prefix: give the prefix without .bin/.idx, got {self.output_prefix!r}"
            )


@dataclass
class InputAccount:
    """What happened to one input file."""

    path: str
    bytes: int
    sha256: str
    documents: int = 0
    tokens: int = 0
    with_id: int = 0
    skipped: dict = field(default_factory=dict)
    origin: dict = field(default_factory=lambda: {key: {} for key in ORIGIN_KEYS})

    def count_origin(self, origin: tuple) -> None:
        for key, value in zip(ORIGIN_KEYS, origin):
            if value is not None:
                self.origin[key][value] = self.origin[key].get(value, 0) + 1


def output_paths(prefix: str | Path) -> dict[str, Path]:
    prefix = str(prefix)
    return {
        "bin": Path(prefix + ".bin"),
        "idx": Path(prefix + ".idx"),
        "doc_ids": Path(prefix + ".doc_ids.tsv.gz"),
        "manifest": Path(prefix + ".manifest.json"),
    }


# --- worker side -----------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(tokenizer: Tokenizer | str, text_key: str, dtype_name: str) -> None:
    """Set the process's encoder; a spec string is loaded (spawned workers), an object reused."""
    _WORKER["tokenizer"] = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    _WORKER["text_key"] = text_key
    _WORKER["dtype"] = np.dtype(dtype_name)


def _encode_batch(batch: tuple[int, list[tuple[int, object]]]):
    """Parse and encode one batch: (input index, tokens, lengths, docs, errors)."""
    input_index, records = batch
    tokenizer: Tokenizer = _WORKER["tokenizer"]
    text_key = _WORKER["text_key"]
    pieces: list[list[int]] = []
    docs: list[tuple[int, str | None, tuple]] = []  # (line, id, origin) of each encoded document
    errors: list[tuple[int, str, str]] = []  # (line, reason, detail)
    for line_no, payload in records:
        try:
            doc_id, text, origin = parse_record(payload, text_key)
        except RecordError as err:
            errors.append((line_no, err.reason, err.detail))
            continue
        ids = tokenizer.encode(text)
        ids.append(tokenizer.eod_id)
        pieces.append(ids)
        docs.append((line_no, doc_id, origin))
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    buffer = array.array(_WORKER["dtype"].char)  # list -> typed buffer: the fastest route here
    for piece in pieces:
        buffer.fromlist(piece)
    return input_index, np.frombuffer(buffer, dtype=_WORKER["dtype"]), lengths, docs, errors


# --- main side -------------------------------------------------------------------------


def _batches(paths: list[Path], text_key: str) -> Iterator[tuple[int, list]]:
    for index, path in enumerate(paths):
        records = iter_raw_records(path, text_key)
        while chunk := list(itertools.islice(records, BATCH_DOCS)):
            yield index, chunk


def _encoded_batches(config: TokenizeConfig, tokenizer: Tokenizer, paths: list[Path], dtype: np.dtype):
    batches = _batches(paths, config.text_key)
    _init_worker(tokenizer, config.text_key, dtype.name)
    if config.workers == 1:
        yield from map(_encode_batch, batches)
        return
    if "fork" in mp.get_all_start_methods():  # workers inherit the loaded tokenizer
        pool = mp.get_context("fork").Pool(config.workers)
    else:  # spawned workers load it again from its spec
        pool = mp.get_context("spawn").Pool(config.workers, initializer=_init_worker,
                                            initargs=(config.tokenizer, config.text_key, dtype.name))
    with pool:
        # At most IN_FLIGHT batches per worker are read ahead (Pool.imap would read the whole
        # input into its queue), and results come back in input order.
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.apply_async(_encode_batch, (batch,)))
            if len(pending) >= IN_FLIGHT * config.workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _progress(config: TokenizeConfig):
    from tqdm import tqdm

    return tqdm(
        unit="doc",
        desc=f"tokenize -> {Path(config.output_prefix).name}",
        disable=not (config.show_progress and sys.stderr.isatty()),
        dynamic_ncols=True,
    )


def _remove_stale(paths: dict[str, Path]) -> None:
    """An old manifest goes first, so an old .bin/.idx never pairs with a new one."""
    paths["manifest"].unlink(missing_ok=True)
    for stale in paths["manifest"].parent.glob(f".tmp-{paths['bin'].stem}.*"):
        stale.unlink(missing_ok=True)


def tokenize(config: TokenizeConfig) -> dict:
    """Run tokenization; return the manifest (also written to PREFIX.manifest.json)."""
    paths_in = expand_inputs(list(config.inputs))
    tokenizer = load_tokenizer(config.tokenizer)
    megatron = megatron_indexed()  # after the checks above: a bad input fails without the import's cost
    dtype_class = megatron.DType.optimal_dtype(tokenizer.vocab_size)  # np.uint16 or np.int32
    dtype = np.dtype(dtype_class)
    accounts = [InputAccount(**describe_file(p)) for p in paths_in]
    out = output_paths(config.output_prefix)
    out["bin"].parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)

    n_docs = n_tokens = 0
    with atomic_paths(out["bin"], out["idx"], out["doc_ids"]) as (tmp_bin, tmp_idx, tmp_ids):
        builder = megatron.IndexedDatasetBuilder(str(tmp_bin), dtype=dtype_class)
        with gzip.open(tmp_ids, "wt", encoding="utf-8", compresslevel=1) as ids_file, _progress(
            config
        ) as bar:
            ids_file.write("doc_index\tinput\tline\tid\n")
            for input_index, tokens, lengths, docs, errors in _encoded_batches(config, tokenizer, paths_in, dtype):
                account = accounts[input_index]
                for line_no, reason, detail in errors:
                    if not config.skip_invalid and reason != "empty":
                        raise InvalidInputError(account.path, line_no, RecordError(reason, detail))
                    account.skipped[reason] = account.skipped.get(reason, 0) + 1
                offset = 0
                for (line_no, doc_id, origin), length in zip(docs, lengths.tolist()):
                    builder.add_document(tokens[offset : offset + length], [length])
                    offset += length
                    ids_file.write(f"{n_docs}\t{input_index}\t{line_no}\t{'' if doc_id is None else doc_id}\n")
                    n_docs += 1
                    account.with_id += doc_id is not None
                    account.count_origin(origin)
                account.documents += len(docs)
                account.tokens += offset
                n_tokens += offset
                bar.update(len(docs) + len(errors))
                bar.set_postfix(tokens=f"{n_tokens:,}", refresh=False)
        builder.finalize(str(tmp_idx))
        if n_docs == 0:
            raise SynthscaleError(
                f"no documents to write: every record of {', '.join(a.path for a in accounts)} was skipped"
            )
        hashes = {"bin_sha256": sha256_file(tmp_bin), "idx_sha256": sha256_file(tmp_idx)}
    manifest = _manifest(config, out, tokenizer, dtype, accounts, n_docs, n_tokens, hashes)
    write_json_atomic(out["manifest"], manifest)
    return manifest


def _manifest(config, out, tokenizer, dtype, accounts, n_docs, n_tokens, hashes) -> dict:
    skipped = Counter({reason: 0 for reason in SKIP_REASONS})
    origin: dict[str, Counter] = {key: Counter() for key in ORIGIN_KEYS}
    for account in accounts:
        skipped.update(account.skipped)
        for key in ORIGIN_KEYS:
            origin[key].update(account.origin[key])
    return {
        "kind": MANIFEST_KIND,
        "version": 1,
        "prefix": str(Path(config.output_prefix).resolve()),
        "documents": n_docs,
        "tokens": n_tokens,
        "dtype": dtype.name,
        "tokenizer": tokenizer.describe(),
        "inputs": [asdict(a) for a in accounts],
        "skipped": dict(skipped),
        # documents per value of the records' `recipe` and `generator` fields (synthetic corpora)
        "origin": {key: dict(sorted(counts.items())) for key, counts in origin.items()},
        "doc_ids": {"path": str(out["doc_ids"].resolve()), "sha256": sha256_file(out["doc_ids"])},
        **hashes,
        "provenance": provenance(config=asdict(config)),
    }
