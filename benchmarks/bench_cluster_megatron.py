"""The megatron-core backend on the local Slurm cluster (`make slurm-up`) against running here:
submit-to-results time of a 3-run tiny-xs sweep (`recipes sweep --backend megatron`) at TP=1 and at
TP=2, with `--executor slurm` (a NeMo-Run job array; each task srun + torchrun in this Python
environment) and `--executor local` (one run at a time: TP=1 in a worker process of the sweep, no
torchrun; TP=2 through NeMo-Run's LocalExecutor + torchrun), side by side.

Each of the four (layout x executor) sweeps runs the same runs from scratch into a fresh folder,
alternating, one torch thread per rank; a sweep's time ends when `recipes results` has tabulated
every run; on Slurm it is split, from accounting, into the wait for the first task ("queued") and
the time any task ran ("in tasks"; the rest is the gaps between tasks, polling and the table). The
cluster's node has the machine's 2 CPUs: a TP=1 array runs 2 tasks at once, a TP=2 task (2 ranks)
takes the node; other users' jobs on the cluster wait or make wait as Slurm decides. Figures are
medians over the repeats; the losses are checked to be the same on both executors, and TP=2's to be
TP=1's to 1e-4. Uses the running cluster of the checkout (.slurm/), or starts one for the benchmark.

    .venv/bin/python benchmarks/bench_cluster_megatron.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench_cluster import SLURM, TINY, recipes
from bench_data import demo_blend

SIZES, BUDGETS = "tiny-xs", "26K,30K,36K"  # 3 runs of 50-70 steps
LAYOUTS = {"TP=1": [], "TP=2": ["--tensor-parallel", "2"]}


def wait_for_array(runs: Path, count: int, timeout: float = 3600) -> None:
    """Until `count` results.json exist; fails at once when the array left the queue without them."""
    (folder,) = (runs / "_arrays").iterdir()
    name = json.loads((folder / "submitted.json").read_text())["job_name"]
    deadline = time.monotonic() + timeout
    while len(list(runs.glob("*/results.json"))) < count:
        queued = subprocess.run(["squeue", "--noheader", "--array", f"--name={name}", "--format=%i"],
                                capture_output=True, text=True, check=True).stdout.split()
        done = len(list(runs.glob("*/results.json")))
        assert queued or done == count, f"{name} left the queue with {done} of {count} results (logs in {folder})"
        assert time.monotonic() < deadline, f"{runs}: not all {count} results after {timeout} s"
        time.sleep(0.2)


def task_intervals(runs: Path) -> list[tuple[float, float]]:
    """(start, end) in epoch seconds of each task of the sweep's array, from accounting."""
    (folder,) = (runs / "_arrays").iterdir()
    name = json.loads((folder / "submitted.json").read_text())["job_name"]
    for _ in range(60):  # until accounting has every task's end
        listed = subprocess.run(["sacct", "--noheader", "--parsable2", "--allocations", f"--name={name}",
                                 "--starttime=now-1days", "--format=Start,End"], capture_output=True, text=True,
                                check=True).stdout
        pairs = [line.split("|") for line in listed.splitlines()]
        if pairs and "Unknown" not in listed:
            break
        time.sleep(1)
    stamp = lambda text: datetime.fromisoformat(text).timestamp()  # noqa: E731 -- local time, as sacct prints it
    return [(stamp(start), stamp(end)) for start, end in pairs]


def timed_sweep(root: Path, blend: Path, evals: Path, executor: str, layout: str) -> tuple[dict, dict]:
    """({"total": seconds from `recipes sweep` to `recipes results` tabulating every run, and on Slurm
    "queued": to the first task's start, "in tasks": while any task ran}, {run_id: (final train loss, eval loss)})."""
    runs = root / f"runs-{executor}-{layout[-1]}-{time.monotonic_ns()}"
    args = ["sweep", "--sizes", SIZES, "--tokens", BUDGETS, "--blends", str(blend), "--eval", f"eval={evals}", *TINY,
            "--output", str(runs), "--backend", "megatron", *LAYOUTS[layout]]
    submitted, started = time.time(), time.perf_counter()
    recipes(*args, *(SLURM if executor == "slurm" else []))
    if executor == "slurm":
        wait_for_array(runs, 3)
    recipes("results", str(runs), "--output", str(runs / "results.csv"))
    figures = {"total": time.perf_counter() - started}
    records = [json.loads(p.read_text()) for p in runs.glob("*/results.json")]
    assert len(records) == 3, f"{runs}: {len(records)} results"
    if executor == "slurm":
        intervals = sorted(task_intervals(runs))
        busy, reach = 0.0, intervals[0][0]
        for start, end in intervals:  # the union of the tasks' run times
            busy += max(0.0, end - max(start, reach))
            reach = max(reach, end)
        figures |= {"queued": intervals[0][0] - submitted, "in tasks": busy}
    return figures, {r["run_id"]: (r["final_train_loss"], r["loss"]) for r in records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from synthscale import local_cluster

    os.environ["SYNTHSCALE_TORCH_THREADS"] = "1"  # every rank, here and in the cluster's tasks
    with local_cluster.shared() as (paths, _), tempfile.TemporaryDirectory() as tmp:
        os.environ["SLURM_CONF"] = str(paths.conf)
        root = Path(tmp)
        blend, evals = demo_blend(root)
        times: dict[tuple[str, str], list[float]] = {(l, e): [] for l in LAYOUTS for e in ("local", "slurm")}
        parts: dict[tuple[str, str], list[dict]] = {key: [] for key in times}
        losses: dict[tuple[str, str], dict] = {}
        for _ in range(args.repeats):
            for key in times:
                figures, result = timed_sweep(root, blend, evals, key[1], key[0])
                times[key].append(figures.pop("total"))
                parts[key].append(figures)
                assert losses.setdefault(key, result) == result, f"{key}: a repeat changed a loss"
        for layout in LAYOUTS:
            assert losses[(layout, "local")] == losses[(layout, "slurm")], f"{layout}: the executors' losses differ"
        gap = max(abs(a - b) for run_id, pair in losses[("TP=1", "local")].items()
                  for a, b in zip(pair, losses[("TP=2", "local")][run_id]))
        assert gap < 1e-4, f"TP=2's losses differ from TP=1's by {gap:.1e}"
        print(f"megatron 3-run sweep ({SIZES} x {BUDGETS}), submit to results, median of {args.repeats}:")
        for (layout, executor), values in times.items():
            label = f"{layout} --executor {executor}" + (" (job array)" if executor == "slurm" else " (one at a time)")
            split = "".join(f"; {part} {statistics.median(p[part] for p in parts[(layout, executor)]):.1f} s"
                            for part in (parts[(layout, executor)][0] if executor == "slurm" else ()))
            print(f"  {label:40s} {statistics.median(values):6.1f} s  (all: "
                  + ", ".join(f"{v:.1f}" for v in values) + f"{split})")
        for layout in LAYOUTS:
            ratio = statistics.median(times[(layout, "slurm")]) / statistics.median(times[(layout, "local")])
            print(f"  {layout}: slurm / local {ratio:.2f}x")
        ratio = statistics.median(times[("TP=2", "slurm")]) / statistics.median(times[("TP=1", "slurm")])
        print(f"  slurm: TP=2 / TP=1 {ratio:.2f}x")
        print(f"  losses: each layout's identical on both executors; TP=2 vs TP=1 largest difference {gap:.1e}")


if __name__ == "__main__":
    main()
