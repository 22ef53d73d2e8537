"""Benchmark: `generation concept-graph` (the streaming reduce of SynthLLM level 3) on concept lists
generated here (no LLM): build time and peak memory for 10k and 100k documents (or --docs).

The pool is shaped like `generation concepts` output (part-*.jsonl records with `id`, `text`,
`concepts`, `document`, `source_id`, `chunk`, `recipe`, split in --shards files): each document
has 5-15 concepts drawn from a Zipf-like vocabulary that grows with the pool (docs / 2 concepts),
and a 400-character text that mentions them (concepts not found in their text are dropped). Each build runs in a fresh child process; its peak resident memory
(ru_maxrss) is reported with the same child's baseline (Python + numpy + pyarrow imported)
subtracted, so the figure is what the build itself adds.

    python benchmarks/bench_concept_graph.py [--docs 10000,100000] [--shards 4] [--min-docs 2]

`--reduce-only` times the pair count alone (the reduce issue 16 is about) on the same concept
lists, for the range-partitioned counter (generation/synthllm/pair_counts.py `PairCounter`) and, side by side,
the counter it replaced (kept below as `ResortingCounter`: it merged every buffer into the whole
table counted so far, re-sorting it). Each in a fresh child process, with its peak memory.

    python benchmarks/bench_concept_graph.py --reduce-only --docs 100000,1000000
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from generation.synthllm.pair_counts import PAIR_BUFFER, PairCounter, sum_by_key  # noqa: E402


def write_pool(folder: Path, docs: int, shards: int, seed: int = 0) -> int:

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
                  "concepts": concepts, "document": filler[:400] + " " + ", ".join(concepts) + ".",
                  "prompt_version": "synthllm/1",
                  "generator": "bench"}
        handles[d % shards].write(json.dumps(record) + "\n")
    for handle in handles:
        handle.close()
    return mentions


def child(folder: str, output: str, min_docs: int, max_doc_fraction: float) -> None:
    import numpy  # noqa: F401  (the baseline: what any build imports)
    import pyarrow.parquet  # noqa: F401

    from generation.synthllm.graph_build import build_graph

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    files = sorted(str(p) for p in Path(folder).glob("part-*.jsonl"))
    t0 = time.perf_counter()
    manifest = build_graph(files, output, min_docs=min_docs, max_doc_fraction=max_doc_fraction, progress=False,
                           log=lambda line: None)
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"elapsed_s": elapsed, "baseline_kib": baseline, "peak_kib": peak, "counts": manifest["counts"],
                      "bytes": {f["path"]: f["bytes"] for f in manifest["files"]}}))


def concept_lists(docs: int, seed: int = 0) -> list:
    """The concept ids of each document, drawn as write_pool draws them."""

    rng = np.random.default_rng(seed)
    vocab = max(1000, docs // 2)
    weights = 1.0 / np.arange(1, vocab + 1) ** 0.9
    weights /= weights.sum()
    sizes = rng.integers(5, 16, size=docs)
    draws = rng.choice(vocab, size=int(sizes.sum()), p=weights).astype(np.int32)
    bounds = np.concatenate(([0], np.cumsum(sizes)))
    return [np.unique(draws[bounds[d]:bounds[d + 1]]) for d in range(docs)]


class ResortingCounter(PairCounter):
    """The pair counter before issue 16 (for comparison only): the same pair keys (`add`), but each
    full buffer is merged into the whole table counted so far, which is re-sorted every time."""

    def __init__(self, buffer: int = PAIR_BUFFER):
        super().__init__(Path(tempfile.gettempdir()), buffer)  # the folder is never written: nothing spills

    def _spill(self) -> None:
        if not self._pending:
            return
        uniq, cnt = np.unique(np.concatenate(self._pending), return_counts=True)
        self._pending, self._n = [], 0
        self.keys, self.counts = sum_by_key(np.concatenate((self.keys, uniq)), np.concatenate((self.counts, cnt)))

    def flush(self) -> None:
        self._spill()


def reduce_child(docs: int, method: str, folder: str) -> None:
    import pyarrow  # noqa: F401  (imported by any build before it counts pairs)

    lists = concept_lists(docs)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    counter = PairCounter(Path(folder) / "pairs") if method == "ranges" else ResortingCounter()
    for ids in lists:
        counter.add(ids)
    counter.flush()
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"elapsed_s": elapsed, "baseline_kib": baseline, "peak_kib": peak, "edges": int(len(counter.keys)),
                      "weight": int(counter.counts.sum()), "pairs_sha": __import__("hashlib").sha256(
                          counter.keys.tobytes() + counter.counts.astype("int64").tobytes()).hexdigest()[:12]}))


def reduce_only(sizes: list[int]) -> None:
    print(f"concept-graph pair count alone, {os.cpu_count()} CPUs (peak MiB: above the child's baseline with the "
          "concept lists in memory)")
    print(f"{'documents':>10} {'method':>10} {'edges':>11} {'seconds':>8} {'docs/s':>9} {'peak MiB':>9} {'result':>13}")
    for docs in sizes:
        for method in ("ranges", "resorting"):
            with tempfile.TemporaryDirectory(prefix="bench-pairs-") as tmp:
                done = subprocess.run([sys.executable, __file__, "--reduce-child", str(docs), method, tmp],
                                      capture_output=True, text=True, check=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{docs:>10,} {method:>10} {r['edges']:>11,} {r['elapsed_s']:>8.1f} {docs / r['elapsed_s']:>9,.0f} "
                  f"{(r['peak_kib'] - r['baseline_kib']) / 1024:>9.1f} {r['pairs_sha']:>13}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", default="10000,100000", help="comma-separated pool sizes")
    parser.add_argument("--shards", type=int, default=4, help="concept files per pool (as n extraction shards)")
    parser.add_argument("--min-docs", type=int, default=2)
    parser.add_argument("--max-doc-fraction", type=float, default=0.05)
    parser.add_argument("--reduce-only", action="store_true", help="time the pair count alone, old and new")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--reduce-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reduce_child:
        reduce_child(int(args.reduce_child[0]), args.reduce_child[1], args.reduce_child[2])
        return
    if args.reduce_only:
        reduce_only([int(x) for x in args.docs.split(",")])
        return
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
