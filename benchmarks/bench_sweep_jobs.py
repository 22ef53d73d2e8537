"""`recipes sweep --jobs 2` against `--jobs 1` on the demo's shapes: runs per minute, side by side.

The same plan (the demo's three CPU shapes x two budgets on one blend, the demo's batch of
4 x 128 tokens, one torch thread per run; megatron-core, one rank per run, each trained in a
worker process of the sweep) is swept from scratch into fresh folders, alternating
`--jobs 1` and `--jobs 2`; the figures are medians over the repeats, and the losses of the two
are checked to be identical. Text: /work/shared/data when present, else generated text.

    .venv/bin/python benchmarks/bench_sweep_jobs.py [--repeats 2] [--budgets 26K,36K]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from click.testing import CliRunner

from bench_data import demo_blend

warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")

SHAPES = "tiny-2xs,tiny-xs,tiny-s"


def sweep(root: Path, blend: Path, evals: Path, budgets: str, jobs: int) -> tuple[float, dict]:
    from recipes.cli import main as recipes

    output = root / f"runs-{jobs}-{time.monotonic_ns()}"
    args = ["sweep", "--sizes", SHAPES, "--tokens", budgets, "--blends", str(blend), "--eval", f"eval={evals}",
            "--seq-length", "128", "--global-batch-size", "4", "--micro-batch-size", "4", "--peak-lr", "2e-3",
            "--eval-max-tokens", "16K", "--jobs", str(jobs), "--threads", "1", "--output", str(output)]
    started = time.perf_counter()
    result = CliRunner().invoke(recipes, args)
    seconds = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    losses = {p.parent.name: json.loads(p.read_text())["loss"] for p in output.glob("*/results.json")}
    return seconds, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--budgets", default="26K,36K")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        blend, evals = demo_blend(root)
        times: dict[int, list[float]] = {1: [], 2: []}
        reference = None
        for _ in range(args.repeats):
            for jobs in (1, 2):
                seconds, losses = sweep(root, blend, evals, args.budgets, jobs)
                times[jobs].append(seconds)
                reference = reference or losses
                assert losses == reference, "--jobs 2 changed a loss"
        runs = len(reference)
        per_minute = {jobs: runs / statistics.median(t) * 60 for jobs, t in times.items()}
        print(f"sweep of {runs} runs ({SHAPES} x {args.budgets}), median of {args.repeats}:")
        for jobs, t in times.items():
            print(f"  --jobs {jobs}: {statistics.median(t):6.1f} s  ({per_minute[jobs]:.2f} runs/min; all: "
                  + ", ".join(f"{x:.1f}" for x in t) + ")")
        print(f"  speed-up of --jobs 2: {per_minute[2] / per_minute[1]:.2f}x; losses identical: yes")


if __name__ == "__main__":
    main()
