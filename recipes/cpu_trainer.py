"""The CPU backend: a real trainer for tiny models, resumable after a kill.

One run directory in, `results.json` out. The model is transformers' `LlamaForCausalLM`
built from the run's shape; the data is the blend read through megatron-core's
`BlendedMegatronDatasetBuilder` (`data_prep.megatron_blend.build_gpt_dataset`), sample
`step * global_batch + i` for the i-th sequence of step `step`, so the data position is the
step. AdamW with Megatron's parameter groups, warmup + cosine schedule
(`recipes.recipe.learning_rate`), gradient clipping, gradient accumulation over micro
batches with the loss averaged over every token of the global batch.

Checkpoints (`checkpoints/latest.pt`, replaced atomically every `checkpoint_interval` steps
and at the end) hold the model, optimizer, scheduler, step, loss curve, elapsed time and the
RNG states: a killed run started again continues from the last one to the same result.

SIGTERM (what Slurm sends before a job's time limit with `--signal=TERM@N`, at the limit, on
preemption and on `scancel --signal=TERM`) and SIGUSR1 stop training cleanly: the step under way
finishes, a checkpoint is saved and `TrainingStopped` is raised (exit 1 from `recipes train`), so
the job's requeue trap sees progress and the next job resumes. `train_time_s` in the checkpoint
is the sum over every segment of the run.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import threading
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from recipes.cpu_model import adamw_param_groups, build_model, token_losses
from recipes.evaluation import CACHE_DIR, evaluate_domains
from recipes.recipe import learning_rate
from recipes.results import add_domain_scores, build_result, is_complete, load_result, write_result
from recipes.run_spec import RESULTS_FILE, RunSpec
from synthscale.errors import MissingInputError, SynthscaleError
from synthscale.files import atomic_paths

CHECKPOINT = Path("checkpoints") / "latest.pt"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class TrainingStopped(SynthscaleError):
    """Training stopped on a signal after saving a checkpoint; running the run again resumes it."""


@contextlib.contextmanager
def stop_on_signals(trainer: "CpuTrainer"):
    """While training, SIGTERM/SIGUSR1 ask `trainer` to stop at the end of its step (in the main
    thread only: elsewhere Python cannot install handlers, and the default action stays)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum, frame):
        trainer.stop_signal = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, request_stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(run_dir: Path, state: dict) -> Path:
    path = run_dir / CHECKPOINT
    with atomic_paths(path) as (temp,):
        torch.save(state, temp)
    return path


def load_checkpoint(run_dir: Path) -> dict | None:
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


class CpuTrainer:
    """Holds the model, optimizer, schedule and data of one run directory."""

    def __init__(self, run_dir: str | Path, checkpoint_interval: int | None = None):
        self.run_dir = Path(run_dir).resolve()
        self.spec = RunSpec.load(self.run_dir)
        if self.spec.backend != "cpu":
            raise SynthscaleError(f"run {self.spec.run_id} is for the {self.spec.backend!r} backend, not 'cpu'")
        self.blend = self.spec.load_blend()
        recipe = self.spec.recipe
        self.checkpoint_interval = checkpoint_interval or recipe.checkpoint_interval
        self.micro_batches = recipe.global_batch_size // recipe.micro_batch_size
        self.vocab_size = int(self.blend.tokenizer["vocab_size"])
        self.model = build_model(self.spec.shape, self.vocab_size, recipe.seq_length, recipe.seed)
        self.model.train()
        self.optimizer = torch.optim.AdamW(
            adamw_param_groups(self.model, recipe.weight_decay),
            lr=recipe.peak_lr,
            betas=(recipe.adam_beta1, recipe.adam_beta2),
            eps=recipe.adam_eps,
        )
        plan = self.spec.plan
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: learning_rate(step, plan, recipe) / recipe.peak_lr
        )
        self.step = 0
        self.loss_curve: list[list] = []
        self.train_time_s = 0.0
        self.dataset = None
        self.stop_signal: str | None = None  # set by stop_on_signals: stop after the step under way

    # --- state ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "run_id": self.spec.run_id,
            "step": self.step,
            "consumed_samples": self.step * self.spec.recipe.global_batch_size,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "loss_curve": self.loss_curve,
            "train_time_s": self.train_time_s,
            "rng": _rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["run_id"] != self.spec.run_id:
            raise SynthscaleError(f"checkpoint in {self.run_dir} belongs to run {state['run_id']}, not {self.spec.run_id}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.loss_curve = [list(point) for point in state["loss_curve"]]
        self.train_time_s = float(state["train_time_s"])
        _set_rng_state(state["rng"])

    # --- data ----------------------------------------------------------------------
    def build_dataset(self):
        from data_prep.megatron_blend import build_gpt_dataset

        recipe = self.spec.recipe
        with warnings.catch_warnings():
            # megatron-core's optional-kernel and pad-token notices do not apply to CPU training
            warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
            warnings.filterwarnings("ignore", message=".*pad token id in the tokenizer collides.*")
            self.dataset = build_gpt_dataset(self.blend, self.spec.plan.num_samples, recipe.seq_length, recipe.seed,
                                             cache_dir=self.run_dir / CACHE_DIR)
        return self.dataset

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """The global batch of `step`: samples step*G .. step*G + G - 1, stacked."""
        size = self.spec.recipe.global_batch_size
        items = [self.dataset[step * size + i] for i in range(size)]
        return {key: torch.stack([torch.as_tensor(item[key]) for item in items]) for key in items[0]}

    # --- one optimizer step ----------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        recipe = self.spec.recipe
        mask = batch["loss_mask"].float()
        total_tokens = mask.sum().clamp_min(1.0)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for start in range(0, recipe.global_batch_size, recipe.micro_batch_size):
            part = slice(start, start + recipe.micro_batch_size)
            losses = token_losses(
                self.model, batch["tokens"][part].long(), batch["labels"][part].long(), batch["position_ids"][part].long()
            )
            micro = (losses * mask[part]).sum()
            (micro / total_tokens).backward()
            loss_sum += float(micro.detach())
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), recipe.clip_grad)
        self.optimizer.step()
        self.scheduler.step()
        return loss_sum / float(total_tokens)

    # --- the run -------------------------------------------------------------------
    def resume(self) -> bool:
        """Load checkpoints/latest.pt if there is one; True when it did."""
        state = load_checkpoint(self.run_dir)
        if state is not None:
            self.load_state_dict(state)
        return state is not None

    def train(self, progress: bool | None = None) -> None:
        """Train from the current step to the end (call `resume` first to continue a run)."""
        total = self.spec.plan.train_iters
        if self.step >= total:
            return
        self.build_dataset()
        if self.step:  # a log line with the time: when a requeued or restarted run went on
            stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
            print(f"{self.spec.run_id}: resuming at step {self.step} of {total} at {stamp}", file=sys.stderr, flush=True)
        show = sys.stderr.isatty() if progress is None else progress
        bar = tqdm(total=total, initial=self.step, desc=self.spec.run_id, unit="step", disable=not show)
        try:
            while self.step < total:
                started = time.perf_counter()
                loss = self.train_step(self.batch(self.step))
                self.step += 1
                self.train_time_s += time.perf_counter() - started
                self.loss_curve.append([self.step, loss])
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if self.step % self.checkpoint_interval == 0 or self.step == total or self.stop_signal:
                    save_checkpoint(self.run_dir, self.state_dict())
                if self.stop_signal and self.step < total:
                    raise TrainingStopped(f"run {self.spec.run_id}: {self.stop_signal} at step {self.step} of {total}; "
                                          f"checkpoint saved, run it again to resume")
        finally:
            bar.close()

    def evaluate(self) -> dict[str, dict]:
        recipe = self.spec.recipe
        return evaluate_domains(
            self.model, self.spec.eval_domains, recipe.seq_length, recipe.micro_batch_size, self.spec.eval_max_tokens,
            cache_dir=self.run_dir / CACHE_DIR,
        )


def run_cpu(
    run_dir: str | Path,
    progress: bool | None = None,
    checkpoint_interval: int | None = None,
    threads: int | None = None,
) -> dict:
    """Train (or resume) and evaluate one CPU run; write and return its results.json record.

    `threads` (or the SYNTHSCALE_TORCH_THREADS environment variable) sets torch's thread count:
    on a shared machine one thread per run is often faster than oversubscribed cores.
    """
    run_dir = Path(run_dir)
    if is_complete(run_dir):
        return load_result(run_dir / RESULTS_FILE)
    started = time.perf_counter()
    threads = threads or os.environ.get("SYNTHSCALE_TORCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    trainer = CpuTrainer(run_dir, checkpoint_interval=checkpoint_interval)
    trainer.resume()
    earlier_train_time = trainer.train_time_s  # sessions before a kill count by their training time
    with stop_on_signals(trainer):
        trainer.train(progress=progress)
    per_domain = trainer.evaluate()
    record = build_result(
        trainer.spec,
        trainer.blend,
        per_domain,
        trainer.loss_curve,
        wall_time_s=time.perf_counter() - started + earlier_train_time,
        train_time_s=trainer.train_time_s,
        extra={"precision": "fp32", "device": "cpu", "torch_threads": torch.get_num_threads()},
    )
    write_result(run_dir, record)
    return record



def evaluate_added_domains(run_dir: str | Path, domains: dict[str, str], threads: int | None = None) -> dict:
    """Score a completed CPU run on more domains from its final checkpoint: no retraining.

    The domains are added to results.json (eval, eval_domains and the mean loss) and to run.json.
    """
    run_dir = Path(run_dir).resolve()
    if threads:
        torch.set_num_threads(int(threads))
    trainer = CpuTrainer(run_dir)
    if not trainer.resume() or trainer.step != trainer.spec.plan.train_iters:
        raise MissingInputError(
            f"run {trainer.spec.run_id}: no final checkpoint in {run_dir / CHECKPOINT} to evaluate "
            f"{', '.join(domains)} on (it was deleted?); retrain the run to score it"
        )
    spec = trainer.spec.with_eval_domains({**trainer.spec.eval_domains, **domains})
    recipe = spec.recipe
    scores = evaluate_domains(trainer.model, domains, recipe.seq_length, recipe.micro_batch_size, spec.eval_max_tokens,
                              cache_dir=run_dir / CACHE_DIR)
    record = add_domain_scores(load_result(run_dir / RESULTS_FILE), spec, scores)
    spec.save(run_dir)
    write_result(run_dir, record)
    return record
