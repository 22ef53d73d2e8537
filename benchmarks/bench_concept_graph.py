"""Benchmark: `generation concept-graph` (the streaming reduce of SynthLLM level 3) on concept lists
generated here (no LLM): build time and peak memory for 10k and 100k documents (or --docs).

The pool is shaped like `generation concepts` output (part-*.jsonl records with `id`, `text`,
`concepts`, `document`, `source_id`, `chunk`, `recipe`, split in --shards files): each document
has 5-15 concepts drawn from a Zipf-like vocabulary that grows with the pool (docs / 2 concepts),
and a 400-character text. Each build runs in a fresh child process; its peak resident memory
(ru_maxrss) is reported with the same child's baseline (Python + numpy + pyarrow imported)
subtracted, so the figure is what the build itself adds.

    python benchmarks/bench_concept_graph.py [--docs 10000,100000] [--shards 4] [--min-docs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_pool(folder: Path, docs: int, shards: int, seed: int = 0) -> int:
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = max(1000, docs // 2)
    weights = 1.0 / np.arange(1, vocab + 1) ** 0.9
    weights /= weights.sum()
    names = [f"concept {i:07d}" for i in range(vocab)]
    filler = ("the river carries trade between the mountain city and the ocean market while scholars record "
              "its history in the language of the empire ") * 4
    handles = [open(folder / f"part-{s:05d}-of-{shards:05d}-00000.jsonl", "w", encoding="utf-8") for s in range(shards)]
    mentions = 0
    sizes = rng.integers(5, 16, size=docs)
    draws = rng.choice(vocab, size=int(sizes.sum()), p=weights)
    at = 0
    for d in range(docs):
        concepts = list(dict.fromkeys(names[c] for c in draws[at:at + sizes[d]]))
        at += sizes[d]
        mentions += len(concepts)
        record = {"id": f"synthllm-concepts:doc{d}:0", "text": "\n".join(concepts), "source_id": f"doc{d}",
                  "chunk": 0, "n_chunks": 1, "recipe": "synthllm-concepts", "step": "concepts",
                  "concepts": concepts, "document": filler[:400], "prompt_version": "synthllm/1",
                  "generator": "bench"}
        handles[d % shards].write(json.dumps(record) + "\n")
    for handle in handles:
        handle.close()
    return mentions


def child(folder: str, output: str, min_docs: int, max_doc_fraction: float) -> None:
    import numpy  # noqa: F401  (the baseline: what any build imports)
    import pyarrow.parquet  # noqa: F401

    from generation.concept_graph import build_graph

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    files = sorted(str(p) for p in Path(folder).glob("part-*.jsonl"))
    t0 = time.perf_counter()
    manifest = build_graph(files, output, min_docs=min_docs, max_doc_fraction=max_doc_fraction, progress=False,
                           log=lambda line: None)
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"elapsed_s": elapsed, "baseline_kib": baseline, "peak_kib": peak, "counts": manifest["counts"],
                      "bytes": {f["path"]: f["bytes"] for f in manifest["files"]}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", default="10000,100000", help="comma-separated pool sizes")
    parser.add_argument("--shards", type=int, default=4, help="concept files per pool (as n extraction shards)")
    parser.add_argument("--min-docs", type=int, default=2)
    parser.add_argument("--max-doc-fraction", type=float, default=0.05)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.min_docs, args.max_doc_fraction)
        return
    print(f"concept-graph build, {os.cpu_count()} CPUs, min_docs={args.min_docs}, "
          f"max_doc_fraction={args.max_doc_fraction}, {args.shards} input files per pool")
    print(f"{'documents':>10} {'mentions':>10} {'concepts':>9} {'kept':>8} {'edges':>10} {'input MB':>9} "
          f"{'build s':>8} {'docs/s':>9} {'peak MiB':>9} {'(+base)':>8}")
    for docs in (int(x) for x in args.docs.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-concept-graph-") as tmp:
            pool = Path(tmp) / "concepts"
            pool.mkdir()
            mentions = write_pool(pool, docs, args.shards)
            size = sum(p.stat().st_size for p in pool.glob("*.jsonl")) / 1e6
            done = subprocess.run([sys.executable, __file__, "--child", str(pool), str(Path(tmp) / "graph"),
                                   "--min-docs", str(args.min_docs), "--max-doc-fraction", str(args.max_doc_fraction)],
                                  capture_output=True, text=True, check=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            c = r["counts"]
            peak = (r["peak_kib"] - r["baseline_kib"]) / 1024
            print(f"{docs:>10,} {mentions:>10,} {c['concepts']:>9,} {c['kept']:>8,} {c['edges']:>10,} {size:>9.1f} "
                  f"{r['elapsed_s']:>8.2f} {docs / r['elapsed_s']:>9,.0f} {peak:>9.1f} {r['baseline_kib'] / 1024:>8.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
