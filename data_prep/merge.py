"""`data_prep merge`: tokenized shards -> one .bin/.idx + manifest, with megatron-core.

The parts go through megatron-core's `IndexedDatasetBuilder.add_index` in the order given,
so the merged dataset reads back as the concatenation of its parts. Its manifest is theirs
merged: inputs (in order, so `PREFIX.doc_ids.tsv.gz` still maps every document back to its
input file and line), summed counts, skips and origins, and `merged_from`, each part with its
sha256s. A tokenize of the parts' inputs in one run writes the same .bin, .idx and doc ids.
Each part's `.bin` and `.idx` are checked against the sha256s its manifest records (the `.bin`
hashed as megatron-core copies it), so a corrupt part is refused, never merged into a new,
self-consistent sha256; `verify=False` (`--no-verify`) skips this and the manifest says so.
Outputs are written to temporary files and renamed into place, the manifest last.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import hashlib
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from data_prep.indexed import megatron_indexed
from data_prep.records import SKIP_REASONS
from data_prep.sources import TokenizedDataset, check_same_tokenizer, open_shards
from data_prep.tokenize import MANIFEST_KIND, output_paths
from synthscale.errors import MissingInputError, SynthscaleError
from synthscale.files import atomic_paths, sha256_file, write_json_atomic
from synthscale.provenance import provenance

DOC_IDS_HEADER = "doc_index\tinput\tline\tid\n"


def open_parts(inputs: list[str]) -> list[TokenizedDataset]:
    """Every part INPUTS name (prefixes, globs, files listing prefixes), each checked complete."""
    parts: list[TokenizedDataset] = []
    for value in inputs:
        _, shards, _ = open_shards(value, value, same_tokenizer=False)  # checked across all parts below
        parts += shards
    seen: set[str] = set()
    for part in parts:
        if part.prefix in seen:
            raise SynthscaleError(f"merge: {part.prefix!r} is given twice")
        seen.add(part.prefix)
    return parts


def _check(parts: list[TokenizedDataset], output: str) -> None:
    if Path(output).suffix in (".bin", ".idx"):
        raise SynthscaleError(f"--output: give the prefix without .bin/.idx, got {output!r}")
    target = str(Path(output).resolve())
    if target in {p.prefix for p in parts}:
        raise SynthscaleError(f"--output {output!r} is one of the datasets to merge: write the merge elsewhere")
    check_same_tokenizer(parts, "dataset", "merged datasets need one tokenizer")
    dtypes = {p.manifest["dtype"] for p in parts}
    if len(dtypes) > 1:
        odd = next(p for p in parts if p.manifest["dtype"] != parts[0].manifest["dtype"])
        raise SynthscaleError(f"dataset {odd.name!r} is {odd.manifest['dtype']}, {parts[0].name!r} is "
                         f"{parts[0].manifest['dtype']}: merged datasets need one dtype")


def _sha256_concat(paths: list[Path], chunk: int = 1 << 22) -> tuple[str, list[str]]:
    """The sha256 of the files end to end, and of each one (one read)."""
    digest, each = hashlib.sha256(), []
    for path in paths:
        part = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
                part.update(block)
        each.append(part.hexdigest())
    return digest.hexdigest(), each


def _verify_parts(parts: list[TokenizedDataset], bin_sha256s: list[str]) -> None:
    """Refuse a part whose .bin or .idx is not what its manifest records, naming it."""
    for part, bin_sha256 in zip(parts, bin_sha256s):
        for suffix, actual in ((".bin", bin_sha256), (".idx", None)):
            recorded = part.manifest.get(f"{suffix[1:]}_sha256")
            if recorded is None:
                raise SynthscaleError(f"merge: {part.manifest_path} records no {suffix[1:]}_sha256 to verify "
                                      f"{part.prefix}{suffix} against (pass --no-verify to merge it unchecked)")
            actual = actual or sha256_file(part.prefix + suffix)
            if actual != recorded:
                raise SynthscaleError(f"merge: {part.prefix}{suffix} has sha256 {actual[:12]}..., its manifest records "
                                      f"{recorded[:12]}...: the part changed or is corrupt, nothing was merged")


def _progress(parts: list[TokenizedDataset], output: str, show: bool):
    from tqdm import tqdm

    total = sum(Path(p.prefix + ".bin").stat().st_size for p in parts)
    return tqdm(total=total, unit="B", unit_scale=True, desc=f"merge -> {Path(output).name}",
                disable=not (show and sys.stderr.isatty()), dynamic_ncols=True)


def _merge_doc_ids(parts: list[TokenizedDataset], target: Path) -> None:
    """Concatenate the parts' doc-id maps, renumbering documents and inputs."""
    documents = inputs = 0
    with gzip.open(target, "wt", encoding="utf-8", compresslevel=1) as out:
        out.write(DOC_IDS_HEADER)
        for part in parts:
            path = output_paths(part.prefix)["doc_ids"]
            if not path.is_file():
                raise MissingInputError(f"dataset {part.name!r}: {str(path)!r} is missing")
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                if handle.readline() != DOC_IDS_HEADER:
                    raise SynthscaleError(f"dataset {part.name!r}: {str(path)!r} is not a doc-id map")
                rows = 0
                while lines := handle.readlines(1 << 22):
                    fields = [line.split("\t", 2) for line in lines]
                    out.write("".join([f"{int(d) + documents}\t{int(i) + inputs}\t{rest}" for d, i, rest in fields]))
                    rows += len(lines)
            if rows != part.manifest["documents"]:
                raise SynthscaleError(f"dataset {part.name!r}: {str(path)!r} maps {rows:,} documents, "
                                 f"its manifest records {part.manifest['documents']:,}")
            documents += part.manifest["documents"]
            inputs += len(part.manifest["inputs"])


@contextlib.contextmanager
def _frozen_heap():
    """add_index calls gc.collect() once a part: with torch and megatron-core loaded (~400k objects)
    that is ~0.2 s a part, minutes for thousands of shards. Frozen objects are not scanned."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def merge(inputs: list[str], output: str, show_progress: bool = True, verify: bool = True) -> dict:
    """Merge tokenized datasets into OUTPUT; return its manifest (also written to OUTPUT.manifest.json).
    `verify`: check each part's .bin/.idx against the sha256s its manifest records."""
    if not inputs:
        raise SynthscaleError("merge: give at least one dataset to merge")
    parts = open_parts(inputs)
    _check(parts, output)
    out = output_paths(output)
    out["bin"].parent.mkdir(parents=True, exist_ok=True)
    out["manifest"].unlink(missing_ok=True)  # an old manifest never pairs with a new .bin/.idx
    dtype = np.dtype(parts[0].manifest["dtype"])
    tokens = sum(p.tokens for p in parts)
    with atomic_paths(out["bin"], out["idx"], out["doc_ids"]) as (tmp_bin, tmp_idx, tmp_ids):
        builder = megatron_indexed().IndexedDatasetBuilder(str(tmp_bin), dtype=dtype.type)
        # The merged .bin is the parts' .bin files end to end: its sha256 is taken from them in a
        # thread while megatron-core copies them (hashlib and file I/O release the GIL).
        with ThreadPoolExecutor(1) as pool:
            bin_sha256 = pool.submit(_sha256_concat, [Path(p.prefix + ".bin") for p in parts])
            with _progress(parts, output, show_progress) as bar, _frozen_heap():
                for part in parts:
                    builder.add_index(part.prefix)
                    bar.update(Path(part.prefix + ".bin").stat().st_size)
            builder.finalize(str(tmp_idx))
            _merge_doc_ids(parts, tmp_ids)
            concatenated, each = bin_sha256.result()
            if verify:
                _verify_parts(parts, each)
            hashes = {"bin_sha256": concatenated, "idx_sha256": sha256_file(tmp_idx)}
        if tmp_bin.stat().st_size != tokens * dtype.itemsize:
            raise SynthscaleError(f"merge: wrote {tmp_bin.stat().st_size:,} bytes, expected {tokens * dtype.itemsize:,} "
                             "(a part changed during the merge?)")
    manifest = merged_manifest(parts, out, hashes, inputs)
    manifest["parts_verified"] = bool(verify)  # whether each part's .bin/.idx matched its manifest's sha256s
    write_json_atomic(out["manifest"], manifest)
    return manifest


def merged_manifest(parts: list[TokenizedDataset], out: dict[str, Path], hashes: dict, given: list[str]) -> dict:
    skipped: Counter = Counter({reason: 0 for reason in SKIP_REASONS})
    origin: dict[str, Counter] = {}
    for part in parts:
        skipped.update(part.manifest.get("skipped") or {})
        for key, counts in (part.manifest.get("origin") or {}).items():
            origin.setdefault(key, Counter()).update(counts)
    first = parts[0].manifest
    return {
        "kind": MANIFEST_KIND,
        "version": 1,
        "prefix": str(Path(str(out["bin"])[: -len(".bin")]).resolve()),
        "documents": sum(p.manifest["documents"] for p in parts),
        "tokens": sum(p.tokens for p in parts),
        "dtype": first["dtype"],
        "tokenizer": first["tokenizer"],
        "inputs": [entry for p in parts for entry in p.manifest["inputs"]],
        "skipped": dict(skipped),
        "origin": {key: dict(sorted(counts.items())) for key, counts in origin.items()},
        "doc_ids": {"path": str(out["doc_ids"].resolve()), "sha256": sha256_file(out["doc_ids"])},
        **hashes,
        "merged_from": [
            {"prefix": p.prefix, "manifest_sha256": sha256_file(p.manifest_path), "documents": p.manifest["documents"],
             "tokens": p.tokens, "inputs": len(p.manifest["inputs"]), "bin_sha256": p.manifest.get("bin_sha256"),
             "idx_sha256": p.manifest.get("idx_sha256")}
            for p in parts
        ],
        "provenance": provenance(config={"merge": list(given), "parts": [p.prefix for p in parts],
                                         "output": str(out["bin"])[: -len(".bin")]}),
    }
