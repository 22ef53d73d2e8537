"""`generation concept-graph`: the global concept graph of SynthLLM level 3, a streaming reduce over
the concept-extraction outputs of all shards (`generation run --recipe synthllm-concepts`).

Nodes are concepts; an edge joins two shared concepts (in --min-docs documents or more) that occur
in the same document, weighted by the number of documents they share. One "document" is one
extraction record: a source chunk. A document's concepts are the model's (each kept only when it
is grounded in the text) and the text's own key phrases (YAKE), one per canonical key
(generation/synthllm/concept_keys.py: canonicalised here, not at extraction, so improving the keys never
means running the model again). Level 3 walks concept -> document -> concept on this incidence,
so one concept that two documents share is enough to combine them.

It streams, in two passes, so memory is bounded by the graph (its vocabulary and its kept
edges), never by the corpus:
  pass 1 reads every record once: canonical keys, counts each concept's documents (and surface
         forms), appends the document's text to `texts.bin` and its row (concept ids, mention
         offsets, text offset) to a temporary table on disk;
  then   only concepts in more than `max_docs` / `max_doc_fraction` of the documents (overly common,
         the fraction rounded up and never below `min_docs`) are pruned: a concept of one document
         is a walk's end, not noise; ids are renumbered by key, so the graph does not depend on
         the order of its inputs; a graph without one shared concept left (no walk start) is refused;
  pass 2 reads the temporary table in batches, writes `documents.parquet` with the final ids, and
         counts the pairs of kept concepts per document as int64 keys: each buffer of keys is
         pre-reduced (`np.unique`) and cut into key ranges on disk, and each range is reduced once
         at the end (generation/synthllm/pair_counts.py), so build time grows linearly with the
         documents; memory ~ 16 bytes per distinct kept edge (the output) plus one range.

Output (OUTPUT/):
  nodes.parquet      concept_id int32, concept string (the most frequent surface form), key string, documents
                     int64, llm_documents int64, text_documents int64, kept bool, shared bool (documents >=
                     min_docs), pruned string (common|null)
  edges.parquet      source int32, target int32 (source < target, kept shared concepts only), weight int64
  documents.parquet  doc_id int64, id string, source_id string, chunk int32, concept_ids list<int32>
                     (every concept of the document, pruned ones too), concept_offsets list<int32> (each
                     concept's first mention in the text, -1 unknown), text_offset int64, text_bytes int64
  texts.bin          the documents' texts (UTF-8), back to back: levels 2 and 3 quote them as references
  graph.json         kind synthscale.concept_graph: inputs with sha256, options, counts (pruned ones
                     too), files with sha256, graph_sha256, provenance. Written last: a build that
                     was stopped leaves no graph.json, and a rerun starts over.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from synthscale.errors import SynthscaleError
from synthscale.files import sha256_file, write_json_atomic
from synthscale.provenance import provenance

from generation.corpus.outputs import OutputError, find_manifests
from generation.synthllm import concept_keys
from generation.synthllm.pair_counts import PairCounter

GRAPH_KIND = "synthscale.concept_graph"
GRAPH_VERSION = 2
GRAPH_FILES = ("nodes.parquet", "edges.parquet", "documents.parquet", "texts.bin")
BATCH_ROWS = 20_000


class ConceptGraphError(SynthscaleError):
    """Inputs or options that cannot make a graph; the message names the file or the value."""


def concept_files(sources: list[str]) -> list[Path]:
    """The data files of concept-extraction outputs: directories (read through their manifests:
    every shard present and complete) or JSONL files given directly."""
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_file():
            files.append(path)
            continue
        try:
            manifests = find_manifests([source])
        except OutputError as exc:
            raise ConceptGraphError(str(exc)) from None
        counts = {m["shard"]["count"] for _, m in manifests if "shard" in m}
        indices = sorted(m["shard"]["index"] for _, m in manifests if "shard" in m)
        if len(counts) > 1 or (counts and indices != list(range(counts.pop()))):
            raise ConceptGraphError(f"{source}: the shards present are {indices}: run every --shard I/N first")
        for mpath, manifest in manifests:
            if manifest.get("recipe_spec") and not any(s.get("parse") == "concepts"
                                                       for s in manifest["recipe_spec"]["steps"]):
                raise ConceptGraphError(f"{mpath}: recipe {manifest['recipe']!r} does not extract concepts "
                                        "(use the output of `generation run --recipe synthllm-concepts`)")
            if not manifest.get("complete"):
                raise ConceptGraphError(f"{mpath}: not complete: rerun its `generation run` command to finish it")
            files.extend(mpath.parent / f["path"] for f in manifest["files"])
    if not files:
        raise ConceptGraphError("no concept files in " + ", ".join(sources))
    return sorted(set(files))


def _records(paths: list[Path], hashes: dict) -> Iterator[tuple[Path, int, dict]]:
    """(path, line, record) of every record; each file's sha256 is computed as it is read."""
    for path in paths:
        digest, size, n = hashlib.sha256(), 0, 0
        with open(path, "rb") as handle:
            for lineno, raw in enumerate(handle, start=1):
                digest.update(raw)
                size += len(raw)
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except ValueError as exc:
                    raise ConceptGraphError(f"{path}:{lineno}: malformed JSON: {exc}") from None
                if not isinstance(record, dict) or not isinstance(record.get("concepts"), list):
                    raise ConceptGraphError(f"{path}:{lineno}: no `concepts` list: not a concept-extraction record")
                if not isinstance(record.get("document"), str):
                    raise ConceptGraphError(f"{path}:{lineno}: no `document` text")
                n += 1
                yield path, lineno, record
        hashes[str(path)] = {"path": str(Path(path).resolve()), "bytes": size, "sha256": digest.hexdigest(),
                             "documents": n}


def _progress(enabled: bool | None, total: int | None, desc: str):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="doc", desc=desc, dynamic_ncols=True, file=sys.stderr)


def common_limit(n_docs: int, min_docs: int, max_docs: int | None, max_doc_fraction: float | None) -> int | None:
    """The most documents a concept may be in before it is pruned as common: the fraction of the
    documents rounded up, `max_docs` if lower, never below `min_docs` (a shared concept is kept)."""
    limit = max_docs
    if max_doc_fraction is not None:
        fraction_limit = math.ceil(max_doc_fraction * n_docs - 1e-9)
        limit = fraction_limit if limit is None else min(limit, fraction_limit)
    return None if limit is None else max(limit, min_docs)


def build_graph(sources: list[str], output: str | os.PathLike, min_docs: int = 2, max_docs: int | None = None,
                max_doc_fraction: float | None = 0.5, progress: bool | None = None,
                log: Callable[[str], None] | None = None, concept_sources: tuple[str, ...] = ("llm", "text")) -> dict:
    """Build the graph of `sources` (concept output directories or files) into `output`; returns
    graph.json. `min_docs`: the documents a concept needs to be shared (a walk start, with edges);
    `concept_sources`: the model's concepts ("llm"), the text's key phrases ("text"), or both."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if min_docs < 1:
        raise ConceptGraphError(f"--min-docs must be at least 1, got {min_docs}")
    if max_docs is not None and max_docs < min_docs:
        raise ConceptGraphError(f"--max-docs {max_docs} is below --min-docs {min_docs}: every concept would be pruned")
    if max_doc_fraction is not None and not 0 < max_doc_fraction <= 1:
        raise ConceptGraphError(f"--max-doc-fraction must be in (0, 1], got {max_doc_fraction}")
    if not concept_sources or set(concept_sources) - set(concept_keys.SOURCES):
        raise ConceptGraphError(f"--concept-sources: one or both of {', '.join(concept_keys.SOURCES)}, "
                                f"got {','.join(concept_sources) or 'none'}")
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    t0 = time.monotonic()
    paths = concept_files(sources)
    out = Path(output)
    work = out / ".partial"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (out / "graph.json").unlink(missing_ok=True)

    # ---- pass 1: vocabulary and document counts; texts and provisional rows to disk
    vocab: dict[str, int] = {}  # canonical key -> provisional id
    doc_counts: list[int] = []
    surfaces: list[dict[str, int]] = []  # provisional id -> {surface form: documents}
    by_source: dict[str, list[int]] = {"llm": [], "text": []}  # provisional id -> documents where the source found it
    mention_counts: dict[str, int] = {}
    hashes: dict[str, dict] = {}
    rows = {"id": [], "source_id": [], "chunk": [], "concept_ids": [], "concept_offsets": [], "text_offset": [],
            "text_bytes": []}
    schema = pa.schema([("id", pa.string()), ("source_id", pa.string()), ("chunk", pa.int32()),
                        ("concept_ids", pa.list_(pa.int32())), ("concept_offsets", pa.list_(pa.int32())),
                        ("text_offset", pa.int64()), ("text_bytes", pa.int64())])
    tmp_writer = pq.ParquetWriter(work / "documents.tmp.parquet", schema)
    offset, n_docs, n_mentions = 0, 0, 0
    bar = _progress(progress, None, "concept-graph pass 1")
    with open(work / "texts.bin", "wb") as texts:
        for _path, _line, record in _records(paths, hashes):
            ids: list[int] = []
            offsets: list[int] = []
            for mention in concept_keys.document_mentions(record, concept_sources, mention_counts):  # one per key
                cid = vocab.get(mention.key)
                if cid is None:
                    cid = vocab[mention.key] = len(doc_counts)
                    doc_counts.append(0)
                    surfaces.append({})
                    by_source["llm"].append(0)
                    by_source["text"].append(0)
                doc_counts[cid] += 1
                surfaces[cid][mention.surface] = surfaces[cid].get(mention.surface, 0) + 1
                for source in ("llm", "text"):
                    by_source[source][cid] += mention.source in (source, "both")
                ids.append(cid)
                offsets.append(mention.offset)
            n_mentions += len(ids)
            data = record["document"].encode("utf-8")
            texts.write(data)
            for key, value in (("id", str(record.get("id"))), ("source_id", str(record.get("source_id"))),
                               ("chunk", int(record.get("chunk") or 0)), ("concept_ids", ids),
                               ("concept_offsets", offsets), ("text_offset", offset), ("text_bytes", len(data))):
                rows[key].append(value)
            offset += len(data)
            n_docs += 1
            if len(rows["id"]) >= BATCH_ROWS:
                tmp_writer.write_table(pa.table(rows, schema=schema))
                rows = {k: [] for k in rows}
            if bar is not None:
                bar.update(1)
            elif n_docs % 100_000 == 0:
                log(f"concept-graph pass 1: {n_docs:,} documents, {len(vocab):,} concepts")
        if rows["id"]:
            tmp_writer.write_table(pa.table(rows, schema=schema))
    tmp_writer.close()
    if bar is not None:
        bar.close()
    if n_docs == 0:
        raise ConceptGraphError("the concept files hold no documents")

    # ---- pruning and final ids (sorted by key); names: the most frequent surface forms
    counts = np.asarray(doc_counts, dtype=np.int64)
    keys = np.empty(len(vocab), dtype=object)
    for key, cid in vocab.items():
        keys[cid] = key
    del vocab
    order = np.argsort(keys.astype(str), kind="stable")
    final = np.empty(len(order), dtype=np.int32)
    final[order] = np.arange(len(order), dtype=np.int32)
    keys, counts = keys[order], counts[order]
    names = [min(surfaces[cid].items(), key=lambda kv: (-kv[1], kv[0]))[0] for cid in order.tolist()]
    llm_docs = np.asarray(by_source["llm"], dtype=np.int64)[order]
    text_docs = np.asarray(by_source["text"], dtype=np.int64)[order]
    del surfaces, by_source
    limit = common_limit(n_docs, min_docs, max_docs, max_doc_fraction)
    common = counts > limit if limit is not None else np.zeros(len(counts), bool)
    kept = ~common
    shared = counts >= min_docs
    walk_starts = int((kept & shared).sum())
    if walk_starts == 0:
        shutil.rmtree(work)
        raise ConceptGraphError(
            f"no walk start: of {len(keys):,} concepts in {n_docs:,} documents, {int(shared.sum()):,} are in "
            f"{min_docs}+ documents (--min-docs) and {int((shared & common).sum()):,} of those were pruned as "
            f"common (in more than {limit} documents); level 3 needs one shared concept: use more documents, "
            "another concept source, or a higher --max-doc-fraction")

    # ---- pass 2: final documents table, pairs of kept shared concepts
    edged = kept & shared
    pairs = PairCounter(work / "pairs")
    doc_schema = pa.schema([("doc_id", pa.int64())] + list(schema))
    writer = pq.ParquetWriter(work / "documents.parquet", doc_schema)
    doc_id = 0
    bar = _progress(progress, n_docs, "concept-graph pass 2")
    for batch in pq.ParquetFile(work / "documents.tmp.parquet").iter_batches(batch_size=BATCH_ROWS):
        lists = batch.column("concept_ids")
        flat = final[lists.values.to_numpy(zero_copy_only=False)] if len(lists.values) else np.zeros(0, np.int32)
        offsets = lists.offsets.to_numpy()
        for r in range(len(batch)):
            ids = flat[offsets[r]:offsets[r + 1]]
            pairs.add(np.unique(ids[edged[ids]]))
        new_lists = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, pa.int32()))
        n = len(batch)
        writer.write_batch(pa.record_batch(
            [pa.array(np.arange(doc_id, doc_id + n, dtype=np.int64)), batch.column("id"), batch.column("source_id"),
             batch.column("chunk"), new_lists, batch.column("concept_offsets"), batch.column("text_offset"),
             batch.column("text_bytes")],
            schema=doc_schema))
        doc_id += n
        if bar is not None:
            bar.update(n)
    writer.close()
    if bar is not None:
        bar.close()
    pairs.flush()
    (work / "documents.tmp.parquet").unlink()

    pq.write_table(pa.table({
        "concept_id": pa.array(np.arange(len(names), dtype=np.int32)),
        "concept": pa.array(names, pa.string()),
        "key": pa.array(list(keys), pa.string()),
        "documents": pa.array(counts),
        "llm_documents": pa.array(llm_docs),
        "text_documents": pa.array(text_docs),
        "kept": pa.array(kept),
        "shared": pa.array(shared),
        "pruned": pa.array([None if k else "common" for k in kept], pa.string()),
    }), work / "nodes.parquet")
    pq.write_table(pa.table({
        "source": pa.array((pairs.keys >> 32).astype(np.int32)),
        "target": pa.array((pairs.keys & 0xFFFFFFFF).astype(np.int32)),
        "weight": pa.array(pairs.counts.astype(np.int64)),
    }), work / "edges.parquet")

    files = []
    for name in GRAPH_FILES:
        os.replace(work / name, out / name)
        files.append({"path": name, "bytes": (out / name).stat().st_size, "sha256": sha256_file(out / name)})
    shutil.rmtree(work)
    options = {"min_docs": min_docs, "max_docs": max_docs, "max_doc_fraction": max_doc_fraction,
               "max_docs_effective": limit, "concept_sources": list(concept_sources),
               "canonicalisation": concept_keys.describe()}
    degree = np.bincount(np.concatenate(((pairs.keys >> 32), pairs.keys & 0xFFFFFFFF)).astype(np.int64),
                         minlength=len(names)) if len(pairs.keys) else np.zeros(len(names), np.int64)
    inputs = [hashes[str(p)] for p in paths]
    graph_sha256 = hashlib.sha256(json.dumps({"files": [[f["path"], f["sha256"]] for f in files],
                                              "options": options}, sort_keys=True).encode()).hexdigest()
    manifest = {
        "kind": GRAPH_KIND,
        "version": GRAPH_VERSION,
        "graph_sha256": graph_sha256,
        "options": options,
        "counts": {
            "documents": n_docs,
            "concept_mentions": int(n_mentions),
            "concepts": int(len(names)),
            "kept": int(kept.sum()),
            "shared": int(shared.sum()),
            "shared_share": round(float(shared.mean()), 4),
            "walk_starts": walk_starts,
            "pruned_common": int(common.sum()),
            "sources": concept_keys.source_shares(mention_counts, llm_docs, text_docs),
            "edges": int(len(pairs.keys)),
            "edge_weight_total": int(pairs.counts.sum()),
            "isolated_shared": int((edged & (degree == 0)).sum()),
        },
        "inputs": inputs,
        "files": files,
        "elapsed_s": round(time.monotonic() - t0, 3),
        "provenance": provenance(config={"sources": [str(s) for s in sources], **options}),
    }
    write_json_atomic(out / "graph.json", manifest)
    return manifest
