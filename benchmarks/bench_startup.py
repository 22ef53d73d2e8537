"""Start-up time of every stage's command line, and of a one-document `data_prep tokenize`.

For each repository root given (default: this checkout), in a fresh process each time:
  - `python -m STAGE --help` for data_prep, generation, recipes, analysis and study, and
    `python -m STAGE SUB --help` for every subcommand the stage's help lists (target: < 0.3 s);
  - `python -m data_prep tokenize` of a one-line JSONL file with a tiny tiktoken ranks file
    (target: < 1.5 s);
  - with --import-chain, what the tokenize pays for: `python -c pass`, `import numpy`,
    `import torch`, `import megatron.core`, `import megatron.core.datasets.indexed_dataset`.
Medians of --repeats runs: wall time (the process's start to its exit; the targets are wall
times) and CPU time (user + system, which a loaded machine inflates less). With two roots the
table shows them side by side, e.g. the tree before a change against the one after:

    python benchmarks/bench_startup.py --root /tmp/before11 --root . [--repeats 10] [--import-chain]

Each root runs with cwd=ROOT and PYTHONPATH=ROOT, so its own packages are imported (not an
installed copy); --python picks the interpreter (default: this one).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("data_prep", "generation", "recipes", "analysis", "study")
HELP_TARGET_S = 0.3
TOKENIZE_TARGET_S = 1.5
IMPORT_CHAIN = {
    "python -c pass": "pass",
    "import numpy": "import numpy",
    "import torch": "import torch",
    "import megatron.core": "import warnings; warnings.simplefilter('ignore'); import megatron.core",
    "import ...indexed_dataset": "import warnings; warnings.simplefilter('ignore'); "
                                 "import megatron.core.datasets.indexed_dataset",
}


def timed(python: str, args: list[str], root: Path, repeats: int) -> tuple[float | None, float | None, str]:
    """Median wall and CPU (user + system) seconds of `python ARGS` in ROOT; on failure None, None, the error."""
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONWARNINGS": "ignore"}
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run([python, *args], cwd=root, env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            return None, None, (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
    return statistics.median(walls), statistics.median(cpus), ""


def subcommands(python: str, stage: str, root: Path) -> list[str]:
    """The subcommands a stage's --help lists (click's 'Commands:' section)."""
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([python, "-m", stage, "--help"], cwd=root, env=env, capture_output=True, text=True).stdout
    names, listing = [], False
    for line in out.splitlines():
        if line.strip() == "Commands:":
            listing = True
        elif listing and (match := re.match(r"^  (\S+)", line)):
            names.append(match.group(1))
        elif listing and line and not line.startswith(" "):
            listing = False
    return names


def tokenize_fixture(folder: Path) -> list[str]:
    """A one-line JSONL file and a 261-rank tiktoken file; the tokenize arguments (output in FOLDER)."""
    ranks = {bytes([i]): i for i in range(256)}
    for merge in (b"th", b"the", b" the", b"in", b"ing"):
        ranks[merge] = len(ranks)
    (folder / "ranks.tiktoken").write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks.items()))
    (folder / "one.jsonl").write_text(json.dumps({"id": "1", "text": "the model learns language from text"}) + "\n")
    return ["-m", "data_prep", "tokenize", str(folder / "one.jsonl"), "--output", str(folder / "out" / "one"),
            "--tokenizer", f"tiktoken:{folder / 'ranks.tiktoken'}", "--no-progress"]


def measure(python: str, root: Path, repeats: int, import_chain: bool, folder: Path) -> dict[str, tuple]:
    rows: dict[str, tuple] = {}
    for stage in STAGES:
        rows[f"{stage} --help"] = timed(python, ["-m", stage, "--help"], root, repeats)
        for sub in subcommands(python, stage, root):
            rows[f"{stage} {sub} --help"] = timed(python, ["-m", stage, sub, "--help"], root, repeats)
        print(f"  {root}: {stage} done", file=sys.stderr, flush=True)
    rows["data_prep tokenize (1 document)"] = timed(python, tokenize_fixture(folder), root, repeats)
    if import_chain:
        for label, code in IMPORT_CHAIN.items():
            rows[label] = timed(python, ["-c", code], root, repeats)
    return rows


def target(label: str) -> float | None:
    if label.endswith("--help"):
        return HELP_TARGET_S
    if label.startswith("data_prep tokenize"):
        return TOKENIZE_TARGET_S
    return None


def print_table(results: dict[str, dict[str, tuple]], repeats: int) -> None:
    roots = list(results)
    labels = list(dict.fromkeys(label for rows in results.values() for label in rows))
    width = max(map(len, labels)) + 2
    print(f"\nmedian seconds of {repeats} runs each, wall (CPU: user + system) (target: --help < {HELP_TARGET_S} s, "
          f"one-document tokenize < {TOKENIZE_TARGET_S} s, wall)")
    for i, root in enumerate(roots):
        print(f"  [{i + 1}] {root}")
    print("".join([f"{'command':<{width}}", *(f"{f'[{i + 1}] wall (cpu)':>18}" for i in range(len(roots))), "  target"]))
    failures = []
    for label in labels:
        cells = []
        for number, root in enumerate(roots, 1):
            wall, cpu, error = results[root].get(label, (None, None, "absent"))
            cells.append(f"{wall:>10.3f} ({cpu:5.2f})" if wall is not None else f"{'-':>18}")
            if error and error != "absent":
                failures.append(f"[{number}] {label}: {error}")
        limit = target(label)
        last = results[roots[-1]].get(label, (None,))[0]
        verdict = "" if limit is None or last is None else (f"  < {limit}: " + ("yes" if last < limit else "NO"))
        print("".join([f"{label:<{width}}", *cells, verdict]))
    for failure in failures:
        print(f"failed: {failure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", action="append", type=Path,
                        help="Repository root to measure (repeat to compare) [default: this checkout].")
    parser.add_argument("--python", default=sys.executable, help="Interpreter [default: this one].")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--import-chain", action="store_true",
                        help="Also time the imports a tokenize pays for (python, numpy, torch, megatron-core).")
    parser.add_argument("--json-file", help="Also write the medians to this JSON file.")
    args = parser.parse_args()
    roots = [r.resolve() for r in (args.root or [Path(__file__).resolve().parents[1]])]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        for root in roots:
            folder = Path(tmp) / str(len(results))
            folder.mkdir()
            results[str(root)] = measure(args.python, root, args.repeats, args.import_chain, folder)
    print_table(results, args.repeats)
    if args.json_file:
        document = {"repeats": args.repeats, "seconds": "[wall, cpu] medians",
                    "results": {root: {label: list(row[:2]) for label, row in rows.items()}
                                for root, rows in results.items()}}
        Path(args.json_file).write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
