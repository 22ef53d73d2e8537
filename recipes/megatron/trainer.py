"""The megatron-core backend's trainer: one run directory, any TP x PP x DP, resumable.

Call `parallel.init_distributed(tp, pp)` first (every rank), then `train(run_dir, spec)` and
`evaluate(run_dir, spec, domains)` on every rank.

- Model: `recipes.megatron.model.build_model` (megatron-core GPTModel from the run's shape),
  wrapped in megatron's `DistributedDataParallel` (no distributed optimizer: it is CUDA-only).
- The paper recipe (`recipes.recipe`): `get_megatron_optimizer` (adam = AdamW, betas, eps, weight
  decay on matrices only, clipping) and `OptimizerParamScheduler` (linear warmup over the plan's
  warmup steps, cosine to min_lr at the last step; scheduler step k = k optimizer steps done,
  what `recipes.recipe.learning_rate` gives).
- Data: the blend through megatron-core's BlendedMegatronDatasetBuilder / GPTDataset (`data_prep.megatron_blend.build_gpt_dataset`, index caches in
  RUN/dataset_cache). Step s uses samples s*G .. s*G + G - 1; micro batch m of data-parallel rank
  r takes samples s*G + m*b*DP + r*b .. + b - 1 (megatron's pretraining sampler order).
- Loss: mean cross-entropy over every token of the global batch (`calculate_per_token_loss`),
  as the paper's recipe takes it; computed on the last pipeline stage and broadcast, so every rank returns
  the same curve.
- Checkpoints: `recipes.megatron.checkpoint` (megatron dist_checkpointing) every
  checkpoint_interval steps, at the end, and when asked to stop (time budget, SIGTERM, SIGUSR1).
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
import warnings
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex).*")
    from megatron.core import parallel_state
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.transformer.module import Float16Module

from recipes.bridge_config import eval_batch
from recipes.evaluation import CACHE_DIR, domain_windows
from recipes.megatron import checkpoint, parallel
from recipes.megatron.cpu_shims import model_parallel_seed
from recipes.megatron.model import build_model, causal_mask
from recipes.run_spec import RunSpec
from synthscale.errors import MissingInputError, SynthscaleError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def micro_batch_size(spec: RunSpec) -> int:
    return int((spec.layout or {}).get("micro_batch_size") or spec.recipe.micro_batch_size)


def _num_microbatches(spec: RunSpec, data_parallel: int) -> int:
    micro, batch = micro_batch_size(spec), spec.recipe.global_batch_size
    if batch % (micro * data_parallel):
        raise SynthscaleError(
            f"run {spec.run_id}: global_batch_size={batch} is not a multiple of micro_batch_size={micro} x "
            f"data_parallel={data_parallel}; change the micro batch or the number of processes"
        )
    return batch // (micro * data_parallel)


# --- the loss ---------------------------------------------------------------------------------
def _loss_func(loss_mask: torch.Tensor, output: torch.Tensor):
    """(sum of token losses, token count, report): megatron sums these over micro batches and
    scales the gradients by 1 / the global token count (finalize_model_grads). The report is a
    separate float64 tensor: the schedule divides what it is given in place (platform-notes trap 8)."""
    mask = loss_mask.to(output.dtype)
    total = (output.float() * mask).sum()
    tokens = mask.sum().to(torch.int)
    report = torch.stack([(output.detach().double() * mask.double()).sum(), tokens.detach().double()])
    return total, tokens, {"loss_sum_tokens": report}


def _forward_step(mask: torch.Tensor, data_iterator, model):
    batch = next(data_iterator)
    output = model(batch["tokens"], batch["position_ids"], mask, labels=batch["labels"])
    return output, partial(_loss_func, batch["loss_mask"])


def _reduce_reports(reports: list[dict]) -> tuple[float, int]:
    """(sum of token losses, tokens) of all micro batches of all data-parallel ranks, the same on
    every rank: summed on the last pipeline stage (the only one with reports) and broadcast."""
    totals = torch.zeros(2, dtype=torch.float64, device=parallel.device())
    for report in reports:
        totals += report["loss_sum_tokens"].to(totals)
    if parallel_state.is_pipeline_last_stage():
        dist.all_reduce(totals, group=parallel_state.get_data_parallel_group())
    dist.broadcast(totals, src=parallel_state.get_pipeline_model_parallel_last_rank(),
                   group=parallel_state.get_pipeline_model_parallel_group())
    return float(totals[0]), int(totals[1])


def _stacked(items: list[dict], device: torch.device) -> dict[str, torch.Tensor]:
    """One micro batch from GPTDataset items (tokens, labels, position_ids, loss_mask)."""
    batch = {key: torch.stack([torch.as_tensor(item[key]) for item in items]).long()
             for key in ("tokens", "labels", "position_ids")}
    batch["loss_mask"] = torch.stack([torch.as_tensor(item["loss_mask"]) for item in items]).float()
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


class _StopRequest:
    """SIGTERM / SIGUSR1 during training: save a checkpoint after the current step and return."""

    def __init__(self) -> None:
        self.signalled = False
        self._previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signalled = True
        previous = self._previous.get(signum)
        if callable(previous):  # whoever listened before (the stage runner) hears it too
            previous(signum, frame)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class MegatronRun:
    """Model, optimizer, scheduler and data of one run directory on this rank."""

    def __init__(self, run_dir: str | Path, spec: RunSpec, with_optimizer: bool = True):
        self.run_dir = Path(run_dir).resolve()
        self.spec = spec
        self.layout = {k: v for k, v in parallel.layout().items() if k != "world_size"}
        recipe = spec.recipe
        self.blend = spec.load_blend()
        self.vocab_size = int(self.blend.tokenizer["vocab_size"])
        self.micro = micro_batch_size(spec)
        self.num_microbatches = _num_microbatches(spec, self.layout["data_parallel"])
        model_parallel_seed(recipe.seed)
        self.model = build_model(spec.shape, self.vocab_size, recipe.seq_length, recipe.seed, recipe.precision)
        self.device = parallel.device()
        self.mask = causal_mask(recipe.seq_length).to(self.device)
        self.optimizer = self.scheduler = None
        # bf16 (GPU): megatron's Float16Module, as megatron's own training wraps a half-precision model
        self.wrapped = Float16Module(self.model.config, self.model) if self.model.config.bf16 else self.model
        if with_optimizer:
            self._build_optimizer()
        self.step = 0
        self.loss_curve: list[list] = []
        self.train_time_s = 0.0
        self.dataset = None

    def _build_optimizer(self) -> None:
        recipe, plan = self.spec.recipe, self.spec.plan
        config = self.model.config
        self.wrapped = DistributedDataParallel(
            config=config,
            ddp_config=DistributedDataParallelConfig(grad_reduce_in_fp32=True, use_distributed_optimizer=False),
            module=self.wrapped,
        )
        config.no_sync_func = self.wrapped.no_sync
        config.finalize_model_grads_func = finalize_model_grads
        self.optimizer = get_megatron_optimizer(
            OptimizerConfig(
                optimizer="adam", lr=recipe.peak_lr, min_lr=recipe.min_lr, weight_decay=recipe.weight_decay,
                adam_beta1=recipe.adam_beta1, adam_beta2=recipe.adam_beta2, adam_eps=recipe.adam_eps,
                clip_grad=recipe.clip_grad, bf16=recipe.precision == "bf16", params_dtype=config.params_dtype,
                use_distributed_optimizer=False,
            ),
            [self.wrapped],
        )
        self.scheduler = OptimizerParamScheduler(
            self.optimizer, init_lr=0.0, max_lr=recipe.peak_lr, min_lr=recipe.min_lr,
            lr_warmup_steps=plan.warmup_iters, lr_decay_steps=plan.train_iters, lr_decay_style="cosine",
            start_wd=recipe.weight_decay, end_wd=recipe.weight_decay, wd_incr_steps=plan.train_iters,
            wd_incr_style="constant",
        )
        self.forward_backward = get_forward_backward_func()

    # --- checkpoints -------------------------------------------------------------------------
    def resume(self) -> bool:
        """Load the newest checkpoint of RUN/checkpoints, if any (at any layout); True when it did."""
        step = checkpoint.latest_step(self.run_dir)
        if step is None:
            return False
        common = checkpoint.load(self.run_dir, step, self.model, self.optimizer, self.layout)
        if common["run_id"] != self.spec.run_id:
            raise SynthscaleError(f"checkpoint in {self.run_dir} belongs to run {common['run_id']}, not {self.spec.run_id}")
        self.scheduler.load_state_dict(common["scheduler"])
        self.step = int(common["step"])
        self.loss_curve = [list(point) for point in common["loss_curve"]]
        self.train_time_s = float(common["train_time_s"])
        return True

    def save(self) -> Path:
        elapsed = torch.tensor([self.train_time_s], dtype=torch.float64, device=self.device)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # one value in the common state
        common = {"run_id": self.spec.run_id, "step": self.step, "loss_curve": self.loss_curve,
                  "train_time_s": float(elapsed), "scheduler": self.scheduler.state_dict()}
        return checkpoint.save(self.run_dir, self.step, self.model, self.optimizer, common, self.layout)

    # --- data --------------------------------------------------------------------------------
    def build_dataset(self):
        from data_prep.megatron_blend import build_gpt_dataset

        recipe = self.spec.recipe
        self.dataset = build_gpt_dataset(self.blend, self.spec.plan.num_samples, recipe.seq_length, recipe.seed,
                                         cache_dir=self.run_dir / CACHE_DIR)
        return self.dataset

    def microbatches(self, step: int) -> list[dict[str, torch.Tensor]]:
        """This data-parallel rank's micro batches of `step` (see the module docstring)."""
        dp, rank = self.layout["data_parallel"], parallel_state.get_data_parallel_rank()
        base = step * self.spec.recipe.global_batch_size
        out = []
        for m in range(self.num_microbatches):
            start = base + m * self.micro * dp + rank * self.micro
            out.append(_stacked([self.dataset[i] for i in range(start, start + self.micro)], self.device))
        return out

    # --- one optimizer step --------------------------------------------------------------------
    def train_step(self, step: int) -> float:
        self.wrapped.zero_grad_buffer()
        self.optimizer.zero_grad()
        recipe = self.spec.recipe
        reports = self.forward_backward(
            forward_step_func=partial(_forward_step, self.mask), data_iterator=iter(self.microbatches(step)),
            model=[self.wrapped], num_microbatches=self.num_microbatches, seq_length=recipe.seq_length,
            micro_batch_size=self.micro, decoder_seq_length=recipe.seq_length, forward_only=False,
        )
        updated, _grad_norm, _zeros = self.optimizer.step()
        if not updated:
            raise SynthscaleError(f"run {self.spec.run_id}: the optimizer skipped step {step + 1} (non-finite gradients)")
        self.scheduler.step(increment=1)
        loss_sum, tokens = _reduce_reports(reports)
        loss = loss_sum / max(tokens, 1)
        if not math.isfinite(loss):
            raise SynthscaleError(f"run {self.spec.run_id}: loss {loss} at step {step + 1}")
        return loss


def _agree(flag: bool) -> bool:
    """True on every rank when it is True on any (one all-reduce)."""
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=parallel.device())
    if dist.get_world_size() > 1:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def train(run_dir: Path, spec: RunSpec, stop_after_minutes: float | None = None) -> dict:
    """Train the run, or resume it from RUN/checkpoints, until its last step or until asked to stop.

    Stops early (after saving a checkpoint) when `stop_after_minutes` have passed in this call or
    on SIGTERM / SIGUSR1. Returns {"finished", "steps_done", "train_time_s" (this segment),
    "loss_curve" ([[step, loss], ...], the whole run)}, the same on every rank.
    """
    started = time.monotonic()  # the budget counts from this call: set-up, resume and data included
    run = MegatronRun(run_dir, spec)
    run.resume()
    total = spec.plan.train_iters
    segment_time = 0.0
    if run.step < total:
        run.build_dataset()
        interval = min(spec.recipe.checkpoint_interval, total)
        logs = dist.get_rank() == 0  # every rank has the loss; one writes the job's log lines
        show = logs and sys.stderr.isatty()
        if logs and run.step:  # when a requeued or restarted run went on (a line the requeue tests read)
            _log(f"{spec.run_id}: resuming at step {run.step} of {total} at {_utc_now()}")
        with _StopRequest() as stop:
            while run.step < total:
                step_started = time.perf_counter()
                loss = run.train_step(run.step)
                run.step += 1
                seconds = time.perf_counter() - step_started
                run.train_time_s += seconds
                segment_time += seconds
                run.loss_curve.append([run.step, loss])
                if show:
                    print(f"\r{spec.run_id}: step {run.step}/{total} loss {loss:.4f}", end="", file=sys.stderr)
                out_of_time = stop_after_minutes is not None and time.monotonic() - started >= 60 * stop_after_minutes
                stopping = _agree(out_of_time or stop.signalled) and run.step < total
                if run.step % interval == 0 or run.step == total or stopping:
                    run.save()
                    if logs and not show:  # a batch job's log: progress at each checkpoint
                        _log(f"{spec.run_id}: step {run.step} of {total}, loss {loss:.4f}, checkpoint saved")
                if stopping:
                    if show:
                        print(file=sys.stderr)  # ends the progress line
                        show = False
                    if logs:
                        why = ("a stop signal" if stop.signalled else f"its {stop_after_minutes:g}-minute budget"
                               if out_of_time else "another rank's stop request")
                        _log(f"{spec.run_id}: stopped by {why} at step {run.step} of {total}; checkpoint saved, "
                             f"the next run resumes it")
                    break
        if show:
            print(file=sys.stderr)
    elapsed = torch.tensor([segment_time], dtype=torch.float64, device=parallel.device())
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slowest rank's: the same number on every rank
    return {"finished": run.step >= total, "steps_done": run.step, "train_time_s": float(elapsed),
            "loss_curve": run.loss_curve}


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# --- evaluation ----------------------------------------------------------------------------------
def _eval_batches(windows: np.ndarray, micro: int, dp: int, rank: int, device: torch.device) -> list[dict]:
    """This data-parallel rank's micro batches of evaluation windows (seq_length + 1 tokens each)."""
    batches = []
    for start in range(rank * micro, len(windows), micro * dp):
        rows = torch.from_numpy(windows[start:start + micro])
        seq = rows.shape[1] - 1
        batch = {"tokens": rows[:, :-1], "labels": rows[:, 1:], "position_ids": torch.arange(seq).expand(len(rows), seq),
                 "loss_mask": torch.ones(len(rows), seq)}
        batches.append({key: value.to(device) for key, value in batch.items()})
    return batches


def evaluate(run_dir: Path, spec: RunSpec, domains: list[str]) -> dict[str, dict]:
    """Score the run's FINAL checkpoint on `domains` (names in spec.eval_domains): the windows of
    recipes.evaluation, the mean cross-entropy over every predicted token. Same on every rank."""
    run_dir = Path(run_dir).resolve()
    missing = [name for name in domains if name not in spec.eval_domains]
    if missing:
        raise SynthscaleError(f"run {spec.run_id}: no eval domain {', '.join(missing)}; it has {', '.join(spec.eval_domains)}")
    step = checkpoint.latest_step(run_dir)
    if step != spec.plan.train_iters:
        raise MissingInputError(
            f"run {spec.run_id}: no final checkpoint (step {spec.plan.train_iters}) in {checkpoint.checkpoints_dir(run_dir)}"
            f" (newest: {step}); train the run to the end before evaluating it"
        )
    run = MegatronRun(run_dir, spec, with_optimizer=False)
    checkpoint.load(run_dir, step, run.model, None, run.layout)
    run.model.eval()
    forward_only = get_forward_backward_func()
    dp, rank = run.layout["data_parallel"], parallel_state.get_data_parallel_rank()
    recipe = spec.recipe
    scores = {}
    with torch.no_grad():
        for name in domains:
            windows = domain_windows(spec.eval_domains[name], recipe.seq_length, spec.eval_max_tokens,
                                     cache_dir=run_dir / CACHE_DIR)
            micro, _ = eval_batch(len(windows), dp, run.micro, name)
            batches = _eval_batches(windows, micro, dp, rank, run.device)
            reports = forward_only(
                forward_step_func=partial(_forward_step, run.mask), data_iterator=iter(batches), model=[run.wrapped],
                num_microbatches=len(batches), seq_length=recipe.seq_length, micro_batch_size=micro,
                decoder_seq_length=recipe.seq_length, forward_only=True,
            )
            loss_sum, tokens = _reduce_reports(reports)
            scores[name] = {"loss": loss_sum / tokens, "tokens": tokens, "samples": len(windows)}
    return scores
