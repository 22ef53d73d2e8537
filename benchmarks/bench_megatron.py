"""The megatron-core backend on CPU (the default backend), on the demo's shapes.

Two measurements, side by side in one run, every figure a median over repeats:

1. **Training throughput** (the trainer's own `train_time_s`: the optimizer steps, data reads
   included, start-up and checkpoints excluded) for the demo's shapes (tiny-2xs, tiny-xs, tiny-s;
   tiny-m for the baseline) with the demo's batch (4 x 128 tokens), one torch thread per process,
   at TP=1 (1 process), TP=2 (2 processes; a shape needs an even head count) and PP=2 (2
   processes), each run under torchrun. Tokens/s and achieved FLOP/s, against a matmul peak (fp32,
   one thread, 512 x 512) measured in this run: MFU = achieved / (peak x processes). FLOPs per
   token = 6 (N + d V) + 12 L s d (weights incl. the output layer; attention scores computed full).
2. **The demo's way of running**: one set of whole runs (plan, train, evaluate, results.json; the
   shapes x `--budgets`) two at a time, from the first process's start to the last one's exit:
   `recipes sweep --jobs 2 --threads 1` (what the demo runs: a pool of two worker processes, no
   torchrun, imports paid once per worker) against the same runs planned by `recipes sweep
   --dry-run` and each launched as one torchrun process of `recipes.megatron.entry`, two at a time
   (how local megatron runs went before). Repeats alternate which goes first; the ratio of the two
   wall times is the figure, and the two sides' losses are compared run by run.

History: at commit f230ace this benchmark compared megatron with the transformers CPU trainer; the
demo's runs took 0.82x the trainer's wall time, within the 1.3x rule, and the trainer retired.

The machine may be shared: the load average is printed with the figures.

    .venv/bin/python benchmarks/bench_megatron.py [--repeats 3] [--steps 50] [--shapes tiny-2xs,tiny-xs,tiny-s,tiny-m]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_data import demo_blend, text_source  # noqa: E402

warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")

ROOT = Path(__file__).resolve().parents[1]
SEQ, BATCH = 128, 4  # the demo's (study/demo.yaml)
DEMO_ARGS = ["--seq-length", str(SEQ), "--global-batch-size", str(BATCH), "--micro-batch-size", str(BATCH),
             "--peak-lr", "2e-3", "--eval-max-tokens", "16K"]
LAYOUTS = {"TP=1": (1, 1), "TP=2": (2, 1), "PP=2": (1, 2)}


def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", SYNTHSCALE_TORCH_THREADS="1", PYTHONPATH=str(ROOT))


def make_run(run_dir: Path, blend: Path, evals: Path, shape: str, tokens: int, tp: int, pp: int) -> Path:
    """A megatron run folder at TP x PP (the demo's recipe; a checkpoint only at the end)."""
    from data_prep.blend_spec import BlendSpec
    from recipes.recipe import CPU_TINY
    from recipes.run_spec import RunSpec
    from recipes.shapes import get_shape

    recipe = CPU_TINY.with_overrides(seq_length=SEQ, global_batch_size=BATCH, micro_batch_size=BATCH, peak_lr=2e-3,
                                     checkpoint_interval=10**6)
    layout = {"tensor_parallel": tp, "pipeline_parallel": pp, "data_parallel": 1, "micro_batch_size": BATCH}
    spec = RunSpec.create(shape=get_shape(shape), recipe=recipe, tokens=tokens, blend=BlendSpec.load(blend),
                          backend="megatron", eval_domains={"eval": str(evals)}, eval_max_tokens=16_384,
                          layout=layout)
    run_dir.mkdir(parents=True)
    spec.save(run_dir)
    return run_dir


def matmul_peak(size: int = 512, seconds: float = 1.0) -> float:
    """fp32 matmul FLOP/s on one thread (best of short bursts)."""
    torch.set_num_threads(1)
    a, b = torch.randn(size, size), torch.randn(size, size)
    best, until = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < until:
        started = time.perf_counter()
        for _ in range(10):
            torch.mm(a, b)
        best = max(best, 10 * 2 * size**3 / (time.perf_counter() - started))
    return best


def flops_per_token(shape_name: str, vocab: int) -> float:
    from recipes.shapes import get_shape

    s = get_shape(shape_name)
    return 6 * (s.non_embedding_params + s.d_model * vocab) + 12 * s.num_layers * SEQ * s.d_model


# --- 1. training throughput ---------------------------------------------------------------------
def worker_main(argv: list[str]) -> None:
    """`--worker RUN TP PP` (one rank under torchrun): train; rank 0 prints the training time as JSON."""
    torch.set_num_threads(1)
    from recipes.megatron.parallel import init_distributed
    from recipes.megatron.trainer import train
    from recipes.run_spec import RunSpec

    run_dir = Path(argv[0])
    init_distributed(int(argv[1]), int(argv[2]))
    result = train(run_dir, RunSpec.load(run_dir))
    if torch.distributed.get_rank() == 0:
        print(json.dumps({"train_time_s": result["train_time_s"]}))


def train_seconds(run_dir: Path, tp: int, pp: int) -> float:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={tp * pp}", __file__,
               "--worker", str(run_dir), str(tp), str(pp)]
    done = subprocess.run(command, env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])["train_time_s"]


def throughput(root: Path, blend: Path, evals: Path, shapes: list[str], steps: int, repeats: int, vocab: int) -> None:
    from recipes.shapes import get_shape

    tokens = steps * SEQ * BATCH
    times: dict[tuple[str, str], list[float]] = {}
    peaks = []
    for repeat in range(repeats):
        peaks.append(matmul_peak())
        for shape in shapes:
            for name, (tp, pp) in LAYOUTS.items():
                if get_shape(shape).num_heads % tp:
                    continue
                run = make_run(root / f"t{repeat}-{shape}-{tp}{pp}", blend, evals, shape, tokens, tp, pp)
                times.setdefault((shape, name), []).append(train_seconds(run, tp, pp))
    peak = statistics.median(peaks)
    print(f"\n1. training throughput: {steps} steps x {BATCH} x {SEQ} tokens, one torch thread per process, "
          f"median of {repeats}; matmul peak (fp32, 1 thread) {peak / 1e9:.2f} GFLOP/s "
          f"(runs: {', '.join(f'{p / 1e9:.2f}' for p in peaks)}); load average {os.getloadavg()[0]:.1f}")
    print(f"   {'shape':9} {'layout':6} {'procs':>5} {'train s':>8} {'tokens/s':>9} {'GFLOP/s':>8} {'MFU':>6} "
          f"{'vs TP=1':>8}")
    for shape in shapes:
        base = statistics.median(times[(shape, "TP=1")])
        for name, (tp, pp) in LAYOUTS.items():
            if (shape, name) not in times:
                print(f"   {shape:9} {name:6}   ({name} needs an even head count)")
                continue
            seconds = statistics.median(times[(shape, name)])
            achieved = tokens * flops_per_token(shape, vocab) / seconds
            print(f"   {shape:9} {name:6} {tp * pp:5d} {seconds:8.2f} {tokens / seconds:9,.0f} {achieved / 1e9:8.2f} "
                  f"{achieved / (peak * tp * pp):6.1%} {seconds / base:7.2f}x")


# --- 2. the demo's way of running -----------------------------------------------------------------
def recipes(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "recipes", *args], env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]


def losses(runs: Path) -> dict[str, float]:
    return {p.parent.name: json.loads(p.read_text())["loss"] for p in runs.glob("*/results.json")}


def pooled(sweep: list[str], runs: Path) -> float:
    """Seconds for `recipes sweep --jobs 2 --threads 1`: plan, then a pool of two worker processes."""
    started = time.perf_counter()
    recipes(*sweep, "--output", str(runs), "--jobs", "2", "--threads", "1")
    return time.perf_counter() - started


def torchrun_each(sweep: list[str], runs: Path) -> float:
    """Seconds for `recipes sweep --dry-run` (the same run folders) and then one torchrun of
    `recipes.megatron.entry` per run, two at a time."""
    started = time.perf_counter()
    recipes(*sweep, "--output", str(runs), "--dry-run")
    entry = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1", "-m",
             "recipes.megatron.entry", "--run-dir"]
    dirs = [p for p in runs.iterdir() if (p / "run.json").is_file()]
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda d: subprocess.run([*entry, str(d)], env=env(), capture_output=True, check=True), dirs))
    return time.perf_counter() - started


def demo_wall(root: Path, blend: Path, evals: Path, shapes: list[str], budgets: str, repeats: int) -> None:
    sweep = ["sweep", "--sizes", ",".join(shapes), "--tokens", budgets, "--blends", str(blend), "--eval",
             f"eval={evals}", *DEMO_ARGS]
    ways = {"pool": pooled, "torchrun": torchrun_each}
    walls: dict[str, list[float]] = {name: [] for name in ways}
    seen: dict[str, dict[str, float]] = {}
    for repeat in range(repeats):  # alternate which goes first, against drifts in the machine's load
        for name in (("pool", "torchrun") if repeat % 2 == 0 else ("torchrun", "pool")):
            runs = root / f"d{repeat}-{name}"
            walls[name].append(ways[name](sweep, runs))
            seen[name] = losses(runs)
    count = len(seen["pool"])
    assert count and seen["torchrun"].keys() == seen["pool"].keys(), "the two ways did not finish the same runs"
    gap = max(abs(seen["pool"][k] - seen["torchrun"][k]) for k in seen["pool"])
    pool, each = statistics.median(walls["pool"]), statistics.median(walls["torchrun"])
    print(f"\n2. the demo's way of running: {count} whole runs (plan, train, evaluate; {', '.join(shapes)} x "
          f"{budgets} tokens), two at a time, median of {repeats}; load average {os.getloadavg()[0]:.1f}")
    print(f"   recipes sweep --jobs 2 --threads 1 (2 worker processes): {pool:7.1f} s "
          f"(runs: {', '.join(f'{w:.1f}' for w in walls['pool'])})")
    print(f"   --dry-run + one torchrun of the entry per run, 2 at a time: {each:7.1f} s "
          f"(runs: {', '.join(f'{w:.1f}' for w in walls['torchrun'])})")
    paired = [p / t for p, t in zip(walls["pool"], walls["torchrun"])]
    print(f"   pool / torchrun: {pool / each:.2f}x (paired: {', '.join(f'{r:.2f}' for r in paired)}); "
          f"eval losses {'identical' if gap == 0 else f'differ by up to {gap:.1e}'}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--shapes", default="tiny-2xs,tiny-xs,tiny-s,tiny-m")
    parser.add_argument("--budgets", default="26K,100K", help="the demo's smallest and largest budget")
    parser.add_argument("--skip", choices=["throughput", "demo"], default=None)
    args = parser.parse_args()
    shapes = args.shapes.split(",")
    with tempfile.TemporaryDirectory(prefix="bench_megatron_") as tmp:
        root = Path(tmp)
        blend, evals = demo_blend(root)
        from data_prep.blend_spec import BlendSpec

        vocab = int(BlendSpec.load(blend).tokenizer["vocab_size"])
        print(f"megatron-core on CPU ({os.cpu_count()} cores, shared with other work: load average "
              f"{os.getloadavg()[0]:.1f}); demo batch {BATCH} x {SEQ}, vocabulary {vocab}, {text_source()}")
        if args.skip != "throughput":
            throughput(root, blend, evals, shapes, args.steps, args.repeats, vocab)
        if args.skip != "demo":
            demo_wall(root, blend, evals, shapes, args.budgets, args.repeats)


if __name__ == "__main__":
    main()
