"""Helpers for the megatron-core backend tests: run folders made from the workspace's real blend,
and torchrun launches of tests/recipes/megatron_worker.py (real megatron-core over gloo)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from data_prep.blend_spec import BlendSpec
from recipes.megatron.checkpoint import latest_step
from recipes.recipe import CPU_TINY
from recipes.run_spec import RunSpec
from recipes.shapes import get_shape

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("megatron_worker.py")
SHAPE = "tiny-xs"  # 2 heads, 2 layers, vocabulary 300: splits at TP=2 and at PP=2
STEPS = 50


def make_run(run_dir: Path, workspace, tensor_parallel: int = 1, pipeline_parallel: int = 1, data_parallel: int = 1,
             steps: int = STEPS, checkpoint_interval: int = 10) -> RunSpec:
    """A megatron-backend run folder: tiny-xs, seq 64, global batch 4 of micro batches of 1."""
    recipe = CPU_TINY.with_overrides(seq_length=64, global_batch_size=4, micro_batch_size=1, peak_lr=2e-3,
                                     checkpoint_interval=checkpoint_interval)
    layout = {"tensor_parallel": tensor_parallel, "pipeline_parallel": pipeline_parallel,
              "data_parallel": data_parallel, "micro_batch_size": 1}
    spec = RunSpec.create(shape=get_shape(SHAPE), recipe=recipe, tokens=steps * recipe.tokens_per_step,
                          blend=BlendSpec.load(workspace.blend), backend="megatron", eval_domains=workspace.evals,
                          eval_max_tokens=2048, layout=layout)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec.save(run_dir)
    return spec


def _command(run_dir: Path, out: Path, ranks: int, tp: int, pp: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
            str(WORKER), "--run-dir", str(run_dir), "--tp", str(tp), "--pp", str(pp), "--out", str(out), *extra]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", SYNTHSCALE_TORCH_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("TORCHELASTIC_RUN_ID", None)
    return env


def worker_errors(out: Path) -> str:
    """The tracebacks the workers wrote (tests/recipes/megatron_worker.py), if any."""
    return "\n".join(f"{path.name}:\n{path.read_text()}" for path in sorted(out.glob("rank*.error")))


def launch(run_dir: Path, out: Path, ranks: int = 1, tp: int = 1, pp: int = 1, *extra: str,
           timeout: float = 600) -> list[dict]:
    """Run the worker under torchrun to its end; return every rank's result (rank order)."""
    done = subprocess.run(_command(run_dir, out, ranks, tp, pp, list(extra)), env=_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(ranks)]


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and its workers (torchrun starts them in sessions of their own)."""
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGKILL)
    proc.wait()
    psutil.wait_procs(family, timeout=30)


def launch_and_kill(run_dir: Path, out: Path, after_step: int, ranks: int = 1, tp: int = 1, pp: int = 1,
                    timeout: float = 600) -> int:
    """Start the worker and SIGKILL it (torchrun and every rank) as soon as the checkpoint tracker
    names a step >= after_step; return the step of the newest checkpoint left behind."""
    proc = subprocess.Popen(_command(run_dir, out, ranks, tp, pp, []), env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                step = latest_step(run_dir)
            except (OSError, ValueError):  # the tracker being replaced this instant
                step = None
            if step is not None and step >= after_step:
                break
            time.sleep(0.02)
    finally:
        _kill_tree(proc)
    step = latest_step(run_dir)
    assert step is not None and not worker_errors(out), worker_errors(out) or "killed before the first checkpoint"
    return step


def losses(result: dict) -> list[float]:
    return [loss for _, loss in result["loss_curve"]]


def max_difference(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b), (len(a), len(b))
    return max(abs(x - y) for x, y in zip(a, b))
