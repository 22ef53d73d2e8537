"""The local Slurm cluster (`make slurm-up`) against running here: submit-to-results time of a 6-run
tiny sweep (megatron-core on CPU, one rank per run), `--executor slurm` (a NeMo-Run job array, tasks
in this Python environment) and `--executor local --jobs 2` (the sweep's worker processes; the
cluster's node has the machine's CPUs: 2 tasks at once there), side by side; then the requeue
overhead: from SIGTERM to a running task (`scancel --signal=TERM`, as Slurm's `--signal=TERM@N`
before a time limit, sent once megatron's checkpoint tracker `checkpoints/latest_checkpointed_iteration.txt`
exists) to training resumed in the requeued job (the trainer's "resuming at step N of M at TIME"
log line, after the first segment's "stopped by a stop signal at step N of M; checkpoint saved"),
split into stop, requeue wait and start-up with the accounting's segment times.

Both sweeps run the same commands from scratch into fresh folders, alternating, one torch thread
per run; the figures are medians over the repeats and the losses of the two are checked to be
identical. Uses the running cluster of the checkout (.slurm/), or starts one for the benchmark.

    .venv/bin/python benchmarks/bench_cluster.py [--repeats 2] [--requeues 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench_data import demo_blend

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
SHAPES, BUDGETS = "tiny-2xs,tiny-xs", "26K,30K,36K"  # 6 runs of 50-70 steps
TINY = ["--seq-length", "128", "--global-batch-size", "4", "--micro-batch-size", "4", "--peak-lr", "2e-3",
        "--eval-max-tokens", "16K"]
SLURM = ["--executor", "slurm", "--slurm-account", "bench", "--slurm-time", "30"]


def recipes(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([str(BIN / "recipes"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def sweep_args(output: Path, blend: Path, evals: Path, sizes: str, budgets: str) -> list[str]:
    return ["sweep", "--sizes", sizes, "--tokens", budgets, "--blends", str(blend), "--eval", f"eval={evals}",
            *TINY, "--output", str(output)]


def wait_for_results(runs: Path, count: int, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while len(list(runs.glob("*/results.json"))) < count:
        assert time.monotonic() < deadline, f"{runs}: not all {count} results after {timeout} s"
        time.sleep(0.2)


def losses(runs: Path) -> dict[str, float]:
    return {p.parent.name: json.loads(p.read_text())["loss"] for p in runs.glob("*/results.json")}


def timed_sweep(root: Path, blend: Path, evals: Path, executor: str) -> tuple[float, dict]:
    """Seconds from `recipes sweep` to every results.json (and `recipes results` tabulating them)."""
    runs = root / f"runs-{executor}-{time.monotonic_ns()}"
    extra = SLURM if executor == "slurm" else ["--jobs", "2", "--threads", "1"]
    started = time.perf_counter()
    recipes(*sweep_args(runs, blend, evals, SHAPES, BUDGETS), *extra)
    wait_for_results(runs, 6)
    recipes("results", str(runs), "--output", str(runs / "results.csv"))
    return time.perf_counter() - started, losses(runs)


def sacct_segments(env: dict, job: str) -> list[tuple[str, float, float]]:
    """(state, start, end) of each segment of a requeued job, oldest first (epoch seconds)."""
    listed = subprocess.run(["sacct", "--noheader", "--parsable2", "--duplicates", "--allocations", "-j", job,
                             "--format=State,Start,End"], capture_output=True, text=True, env=env, check=True)
    def stamp(text: str) -> float | None:  # local time, as sacct prints it; "Unknown" while running
        return datetime.fromisoformat(text).timestamp() if text[:1].isdigit() else None

    return [(state, stamp(start), stamp(end)) for state, start, end in
            (line.split("|") for line in listed.stdout.splitlines())]


def requeue_overhead(root: Path, blend: Path, evals: Path, env: dict) -> dict[str, float]:
    """One 150-step run on the cluster, TERM after its first checkpoint: the seconds from the signal
    to the task stopping, to its requeued job starting, and to training resumed (its log line)."""
    runs = root / f"requeue-{time.monotonic_ns()}"
    recipes(*sweep_args(runs, blend, evals, "tiny-xs", "76800"), *SLURM, "--checkpoint-interval", "10")
    (folder,) = (runs / "_arrays").iterdir()
    name = json.loads((folder / "submitted.json").read_text())["job_name"]
    (run_dir,) = [Path(line) for line in (folder / "runs.txt").read_text().split()]
    while not (run_dir / "checkpoints" / "latest_checkpointed_iteration.txt").is_file():  # megatron's tracker
        time.sleep(0.1)
    job = subprocess.run(["squeue", "--noheader", "--array", f"--name={name}", "--format=%i"], capture_output=True,
                         text=True, env=env, check=True).stdout.split()[0]
    signalled = time.time()
    subprocess.run(["scancel", "--signal=TERM", job], env=env, check=True)
    wait_for_results(runs, 1)
    first = "".join(p.read_text() for p in folder.rglob("log-*_0.out"))  # the first segment's log
    assert "stopped by a stop signal at step" in first, f"{run_dir.name} did not stop on the signal (logs in {folder})"
    log = "".join(p.read_text() for p in folder.rglob("log-*_1.out"))  # the second segment's log
    resumed = datetime.fromisoformat(log.split("resuming at step", 1)[1].split(" at ", 1)[1].split()[0]).timestamp()
    time.sleep(2)  # accounting catches up
    (_, _, stopped), (_, restarted, _) = sacct_segments(env, job)[:2]
    return {"stop": stopped - signalled, "requeue wait": restarted - stopped, "start-up": resumed - restarted,
            "signal to training resumed": resumed - signalled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--requeues", type=int, default=2)
    args = parser.parse_args()
    from synthscale import local_cluster

    os.environ["SYNTHSCALE_TORCH_THREADS"] = "1"  # the cluster's tasks inherit it, as --threads 1 locally
    with local_cluster.shared() as (paths, _), tempfile.TemporaryDirectory() as tmp:
        os.environ["SLURM_CONF"] = str(paths.conf)
        env = dict(os.environ)
        root = Path(tmp)
        blend, evals = demo_blend(root)
        times: dict[str, list[float]] = {"local": [], "slurm": []}
        reference = None
        for _ in range(args.repeats):  # --repeats 0: the requeue overhead only
            for executor in ("local", "slurm"):
                seconds, result = timed_sweep(root, blend, evals, executor)
                times[executor].append(seconds)
                reference = reference or result
                assert result == reference, f"--executor {executor} changed a loss"
        if args.repeats:
            print(f"6-run sweep ({SHAPES} x {BUDGETS}), submit to results, median of {args.repeats}:")
            for executor, t in times.items():
                label = "--executor slurm (job array)" if executor == "slurm" else "--executor local --jobs 2"
                print(f"  {label:30s} {statistics.median(t):6.1f} s  (all: " + ", ".join(f"{x:.1f}" for x in t) + ")")
            ratio = statistics.median(times["slurm"]) / statistics.median(times["local"])
            print(f"  slurm / local: {ratio:.2f}x; losses identical: yes", flush=True)
        overheads = [requeue_overhead(root, blend, evals, env) for _ in range(args.requeues)]
        print(f"requeue overhead (SIGTERM to a running task, 150-step tiny-xs run), median of {args.requeues}:")
        for key in overheads[0]:
            values = [o[key] for o in overheads]
            print(f"  {key:28s} {statistics.median(values):6.1f} s  (all: " + ", ".join(f"{v:.1f}" for v in values) + ")")


if __name__ == "__main__":
    main()
