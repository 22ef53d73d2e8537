"""Benchmark: how `generation run --shard i/n` reads its input, 1 shard against 8.

A JSONL input of --docs documents (each with an id and ~300 characters of text) is written once.
Each worker's reading runs in a fresh child process: the slice scan (sha256 of the slice and the
Bloom-filter pass for duplicate ids, what `check_run_file` does) then the read itself
(`iter_documents`, every record parsed into a SourceDoc). Reported per worker: seconds, seconds
per million input documents (of the whole input) and peak resident memory above the child's
baseline. Side by side, the reader before issue 16 (kept below as `every_record_reader`: every
worker parsed every record and kept every id in a Python set).

    python benchmarks/bench_generation_inputs.py [--docs 1000000] [--shards 1,8]
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


def write_input(path: Path, docs: int) -> None:
    words = ("the river carries trade between the mountain city and the ocean market while scholars record its "
             "history in the language of the empire").split()
    with open(path, "w", encoding="utf-8") as handle:
        for d in range(docs):
            text = " ".join(words[(d + k) % len(words)] for k in range(50))
            handle.write(json.dumps({"id": f"doc-{d:09d}", "text": text}) + "\n")


def every_record_reader(path: Path, index: int, count: int):
    """The reader before issue 16 (for comparison only): parse every record, keep every id."""
    seen: set[str] = set()
    gindex = -1
    with open(path, "rb") as handle:
        for raw in handle:
            if not raw.strip():
                continue
            gindex += 1
            obj = json.loads(raw.decode("utf-8"))
            source_id = str(obj.get("id"))
            duplicate = source_id in seen
            seen.add(source_id)
            if gindex % count != index or duplicate:
                continue
            yield obj["text"]


def child(path: str, index: int, count: int, method: str) -> None:
    from generation.corpus.documents import iter_documents, scan_slices

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if method == "slices":
        scan = scan_slices([Path(path)], (index, count))
        read = sum(1 for doc in iter_documents([Path(path)], shard=(index, count), candidates=scan.candidates)
                   if doc.text is not None)
    else:
        read = sum(1 for _ in every_record_reader(Path(path), index, count))
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"elapsed_s": elapsed, "peak_kib": peak, "baseline_kib": baseline, "documents": read}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--shards", default="1,8")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]), args.child[3])
        return
    with tempfile.TemporaryDirectory(prefix="bench-inputs-") as tmp:
        path = Path(tmp) / "input.jsonl"
        write_input(path, args.docs)
        size = path.stat().st_size / 2**20
        print(f"generation input reading, {os.cpu_count()} CPUs, {args.docs:,} documents ({size:,.0f} MiB JSONL); "
              "each worker in its own process, one after another")
        print(f"{'reader':>14} {'shards':>6} {'worker':>6} {'docs':>9} {'seconds':>8} {'s / M input docs':>16} "
              f"{'peak MiB':>9}")
        for method in ("slices", "every-record"):
            for count in (int(x) for x in args.shards.split(",")):
                times, peaks = [], []
                for index in range(count):
                    done = subprocess.run([sys.executable, __file__, "--child", str(path), str(index), str(count),
                                           "slices" if method == "slices" else "all"],
                                          capture_output=True, text=True, check=True)
                    r = json.loads(done.stdout.strip().splitlines()[-1])
                    peak = (r["peak_kib"] - r["baseline_kib"]) / 1024
                    times.append(r["elapsed_s"])
                    peaks.append(peak)
                    if index in (0, count - 1):
                        print(f"{method:>14} {count:>6} {index:>6} {r['documents']:>9,} {r['elapsed_s']:>8.2f} "
                              f"{r['elapsed_s'] / args.docs * 1e6:>16.2f} {peak:>9.1f}", flush=True)
                print(f"{method:>14} {count:>6} {'all':>6} {'':>9} {sum(times):>8.2f} "
                      f"{sum(times) / args.docs * 1e6:>16.2f} {max(peaks):>9.1f}  (sum of workers; largest peak)",
                      flush=True)


if __name__ == "__main__":
    main()
