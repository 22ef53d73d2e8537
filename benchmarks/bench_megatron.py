"""The megatron-core backend on CPU against today's transformers trainer, on the demo's shapes.

Two measurements, side by side in one run, every figure a median over repeats that alternate
the trainers:

1. **Training throughput** (the trainers' own `train_time_s`: the optimizer steps, data reads
   included, start-up and checkpoints excluded) for the demo's shapes (tiny-2xs, tiny-xs, tiny-s;
   tiny-m for the baseline) with the demo's batch (4 x 128 tokens), one torch thread per process:
   the transformers trainer (recipes/cpu_trainer.py), megatron at TP=1, TP=2 (2 processes; a shape
   needs 2 heads) and PP=2 (2 processes). Tokens/s and achieved FLOP/s, against a matmul peak
   (fp32, one thread, 512 x 512) measured in this run: MFU = achieved / (peak x processes).
   FLOPs per token = 6 (N + d V) + 12 L s d (weights incl. the output layer; attention scores
   computed full, as both implementations do).
2. **The demo's way of running** (`--jobs 2`): a set of whole runs (train and evaluate) two at a
   time, from process start to exit, results.json written: the transformers trainer as `recipes
   sweep --jobs 2` runs it (`run_cpu` in a pool of two worker processes, imports paid once per
   worker), megatron as its local launch does (one torchrun per run of `recipes.megatron.entry`, TP=1). The ratio of the two wall times is the decision
   figure (megatron becomes the CPU default when it is within 1.3x).

The machine may be shared: the load average is printed with the figures.

    .venv/bin/python benchmarks/bench_megatron.py [--repeats 3] [--steps 50] [--shapes tiny-2xs,tiny-xs,tiny-s,tiny-m]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
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
from bench_recipes import tokenize_corpora  # noqa: E402

warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
warnings.filterwarnings("ignore", message=".*pad token id in the tokenizer collides.*")

ROOT = Path(__file__).resolve().parents[1]
SEQ, BATCH = 128, 4  # the demo's (study/demo.yaml)
LAYOUTS = {"megatron TP=1": (1, 1), "megatron TP=2": (2, 1), "megatron PP=2": (1, 2)}


def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", SYNTHSCALE_TORCH_THREADS="1", PYTHONPATH=str(ROOT))


def prepare(root: Path) -> tuple[Path, Path]:
    from data_prep.cli import main as data_prep
    from click.testing import CliRunner

    tokenize_corpora(root)
    result = CliRunner().invoke(data_prep, ["blend", "--data", f"natural={root / 'natural'}", "--data",
                                            f"synth={root / 'synth'}", "--synthetic", "synth", "--weights",
                                            "natural=0.67,synth=0.33", "--tokens", "100K", "--seq-length", str(SEQ),
                                            "--max-epochs", "16", "--output", str(root / "blend.yaml")])
    assert result.exit_code == 0, result.output
    return root / "blend.yaml", root / "eval"


def make_run(run_dir: Path, blend: Path, evals: Path, shape: str, tokens: int, backend: str, tp: int = 1,
             pp: int = 1) -> Path:
    from data_prep.blend_spec import BlendSpec
    from recipes.recipe import CPU_TINY
    from recipes.run_spec import RunSpec
    from recipes.shapes import get_shape

    recipe = CPU_TINY.with_overrides(seq_length=SEQ, global_batch_size=BATCH, micro_batch_size=BATCH, peak_lr=2e-3,
                                     checkpoint_interval=10**6)
    layout = {"tensor_parallel": tp, "pipeline_parallel": pp, "data_parallel": 1, "micro_batch_size": BATCH}
    spec = RunSpec.create(shape=get_shape(shape), recipe=recipe, tokens=tokens, blend=BlendSpec.load(blend),
                          backend=backend, eval_domains={"eval": str(evals)}, eval_max_tokens=16_384,
                          layout=layout if backend == "megatron" else None)
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


# --- workers (each measurement in a fresh process) ----------------------------------------------
def worker_main(argv: list[str]) -> None:
    """`--worker cpu RUN` or `--worker megatron RUN TP PP`: train; print the training time as JSON."""
    torch.set_num_threads(1)
    kind, run_dir = argv[0], Path(argv[1])
    if kind == "cpu":
        from recipes.cpu_trainer import CpuTrainer

        trainer = CpuTrainer(run_dir)
        trainer.train(progress=False)
        print(json.dumps({"train_time_s": trainer.train_time_s}))
        return
    from recipes.megatron.parallel import init_distributed
    from recipes.megatron.trainer import train
    from recipes.run_spec import RunSpec

    init_distributed(int(argv[2]), int(argv[3]))
    spec = RunSpec.load(run_dir)
    result = train(run_dir, spec)
    if torch.distributed.get_rank() == 0:
        print(json.dumps({"train_time_s": result["train_time_s"]}))


def _json_line(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def train_cpu(run_dir: Path) -> float:
    done = subprocess.run([sys.executable, __file__, "--worker", "cpu", str(run_dir)], env=env(), capture_output=True,
                          text=True, check=True)
    return _json_line(done.stdout)["train_time_s"]


def megatron_command(run_dir: Path, tp: int, pp: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={tp * pp}", __file__,
            "--worker", "megatron", str(run_dir), str(tp), str(pp)]


def entry_command(run_dir: Path) -> list[str]:
    """One megatron run as its local launch starts it: torchrun, recipes.megatron.entry (train, evaluate,
    results.json)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1", "-m",
            "recipes.megatron.entry", "--run-dir", str(run_dir)]


def train_megatron(run_dir: Path, tp: int, pp: int) -> float:
    done = subprocess.run(megatron_command(run_dir, tp, pp), env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    return _json_line(done.stdout)["train_time_s"]


# --- 1. training throughput ---------------------------------------------------------------------
def throughput(root: Path, blend: Path, evals: Path, shapes: list[str], steps: int, repeats: int, vocab: int) -> None:
    from recipes.shapes import get_shape

    tokens = steps * SEQ * BATCH
    times: dict[tuple[str, str], list[float]] = {}
    peaks = []
    for repeat in range(repeats):
        peaks.append(matmul_peak())
        for shape in shapes:
            heads = get_shape(shape).num_heads
            run = make_run(root / f"t{repeat}-{shape}-cpu", blend, evals, shape, tokens, "cpu")
            times.setdefault((shape, "transformers"), []).append(train_cpu(run))
            for name, (tp, pp) in LAYOUTS.items():
                if heads % tp:
                    continue
                run = make_run(root / f"t{repeat}-{shape}-{tp}{pp}", blend, evals, shape, tokens, "megatron", tp, pp)
                times.setdefault((shape, name), []).append(train_megatron(run, tp, pp))
    peak = statistics.median(peaks)
    print(f"\n1. training throughput: {steps} steps x {BATCH} x {SEQ} tokens, one torch thread per process, "
          f"median of {repeats}; matmul peak (fp32, 1 thread) {peak / 1e9:.2f} GFLOP/s "
          f"(runs: {', '.join(f'{p / 1e9:.2f}' for p in peaks)}); load average {os.getloadavg()[0]:.1f}")
    print(f"   {'shape':9} {'trainer':15} {'procs':>5} {'train s':>8} {'tokens/s':>9} {'GFLOP/s':>8} {'MFU':>6} "
          f"{'vs transformers':>15}")
    for shape in shapes:
        base = statistics.median(times[(shape, "transformers")])
        for name in ["transformers", *LAYOUTS]:
            if (shape, name) not in times:
                print(f"   {shape:9} {name:15}   (TP=2 needs an even head count)")
                continue
            seconds = statistics.median(times[(shape, name)])
            procs = 1 if name == "transformers" else LAYOUTS[name][0] * LAYOUTS[name][1]
            achieved = tokens * flops_per_token(shape, vocab) / seconds
            print(f"   {shape:9} {name:15} {procs:5d} {seconds:8.2f} {tokens / seconds:9,.0f} {achieved / 1e9:8.2f} "
                  f"{achieved / (peak * procs):6.1%} {seconds / base:14.2f}x")


# --- 2. the demo's way of running -----------------------------------------------------------------
def _cpu_pool_run(run_dir: str) -> None:
    from recipes.cpu_trainer import run_cpu

    run_cpu(run_dir, progress=False, threads=1)


def demo_wall(root: Path, blend: Path, evals: Path, shapes: list[str], budgets: list[int], repeats: int) -> None:
    walls: dict[str, list[float]] = {"transformers": [], "megatron": []}
    runs = [(shape, tokens) for shape in shapes for tokens in budgets]

    def transformers(repeat: int) -> float:
        dirs = [make_run(root / f"d{repeat}-{s}-{t}-cpu", blend, evals, s, t, "cpu") for s, t in runs]
        started = time.perf_counter()
        with cf.ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_cpu_pool_run, [str(d) for d in dirs]))
        return time.perf_counter() - started

    def megatron(repeat: int) -> float:
        dirs = [make_run(root / f"d{repeat}-{s}-{t}-mc", blend, evals, s, t, "megatron") for s, t in runs]
        started = time.perf_counter()
        with cf.ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda d: subprocess.run(entry_command(d), env=env(), capture_output=True, check=True), dirs))
        return time.perf_counter() - started

    for repeat in range(repeats):  # alternate which goes first, against drifts in the machine's load
        order = ("transformers", "megatron") if repeat % 2 == 0 else ("megatron", "transformers")
        for name in order:
            walls[name].append((transformers if name == "transformers" else megatron)(repeat))
    cpu, mc = statistics.median(walls["transformers"]), statistics.median(walls["megatron"])
    print(f"\n2. the demo's way of running: {len(runs)} whole runs (train + evaluate; {', '.join(shapes)} x "
          f"{', '.join(f'{b // 1000}K' for b in budgets)} tokens), two at a time, median of {repeats}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"   transformers (a pool of 2 workers, as recipes sweep --jobs 2): {cpu:7.1f} s "
          f"(runs: {', '.join(f'{w:.1f}' for w in walls['transformers'])})")
    print(f"   megatron TP=1 (one torchrun per run, 2 at a time):          {mc:7.1f} s "
          f"(runs: {', '.join(f'{w:.1f}' for w in walls['megatron'])})")
    paired = [m / c for m, c in zip(walls["megatron"], walls["transformers"])]
    print(f"   megatron / transformers: {mc / cpu:.2f}x (paired: {', '.join(f'{r:.2f}' for r in paired)}; "
          f"the default switches at <= 1.3x)")


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
    from synthscale.units import parse_count

    shapes = args.shapes.split(",")
    budgets = [parse_count(b) for b in args.budgets.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench_megatron_") as tmp:
        root = Path(tmp)
        blend, evals = prepare(root)
        from data_prep.blend_spec import BlendSpec

        vocab = int(BlendSpec.load(blend).tokenizer["vocab_size"])
        print(f"megatron-core backend vs transformers trainer on CPU ({os.cpu_count()} cores, shared with other "
              f"work: load average {os.getloadavg()[0]:.1f}); demo batch {BATCH} x {SEQ}, vocabulary {vocab}")
        if args.skip != "throughput":
            throughput(root, blend, evals, shapes, args.steps, args.repeats, vocab)
        if args.skip != "demo":
            demo_wall(root, blend, evals, shapes, budgets, args.repeats)


if __name__ == "__main__":
    main()
