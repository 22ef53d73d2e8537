"""A sweep: the grid sizes x tokens x blends, one run folder each, checked before anything runs.

`plan_sweep` builds every run's spec and refuses the whole sweep (one error listing each bad
run) if any run cannot go: an unknown shape, fewer than MIN_TRAIN_ITERS steps, a blend that
would read a source more than its max_epochs, a parallel layout that cannot work (TP x PP x DP,
recipes.parallelism).
`recipes.rerun.survey_runs` then reads the run folders and Slurm's queue and decides each run's
status (complete, rescore, queued, pending), refusing the sweep, still with nothing written, for
anything that would fail later. Only then does `execute_sweep` write: `prepare_run` writes the
run folder (run.json, the Bridge YAMLs and, for local and docker, the launcher as NeMo-Run would
run it). Complete runs are skipped; runs to score again (an added domain, another
--eval-max-tokens) are scored from their final checkpoint with no retraining (their entry runs again); queued
runs are left alone; the rest are launched: on Slurm as one job array per resource group
(recipes.arrays), elsewhere one NeMo-Run launch per run (torchrun, one process per rank of the
layout). Local runs of one rank (megatron's CPU shapes at TP = PP = DP = 1) need no torchrun: they
go `jobs` at a time, each in a worker process with `threads` torch threads
(`recipes.megatron.entry.run_single_rank`), with the same losses as one at a time.

A sweep given its resolved config (`config_text`, recipes.sweep_config) keeps it, once planning
succeeded, as RUNS_DIR/_sweeps/<UTC time>-<hash>.yaml and as RUN/sweep.config.yaml in every run
folder it writes (completed runs it skips keep the config that trained them). Run ids never
depend on it.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import multiprocessing as mp
import shlex
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from data_prep.blend_spec import BlendSpec
from recipes.arrays import stopped_report
from recipes.bridge_config import write_bridge_configs
from recipes.launchers import ExecutorSettings, dry_run, launch
from recipes.parallelism import ParallelismError, plan_layout
from recipes.recipe import TrainingRecipe
from recipes.rerun import survey_runs
from recipes.results import is_complete, load_result, stale_domains
from recipes.run_spec import RESULTS_FILE, RunRefused, RunSpec
from recipes.shapes import SHAPES, get_shape
from synthscale.cli import debug_enabled
from synthscale.errors import MissingInputError, SynthscaleError
from synthscale.files import write_text_atomic

SWEEP_CONFIG_FILE = "sweep.config.yaml"
SWEEPS_DIR = "_sweeps"


@dataclass(frozen=True)
class SweepRequest:
    sizes: tuple[str, ...]
    tokens: tuple[int, ...]
    blends: tuple[str, ...]
    backend: str
    recipe: TrainingRecipe
    eval_domains: dict[str, str]
    output: str
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)
    eval_max_tokens: int | None = None
    tensor_parallel: int | None = None
    pipeline_parallel: int | None = None
    micro_batch_size: int | None = None
    seeds: tuple[int, ...] = ()  # one run per seed (default: the recipe's own seed)
    jobs: int = 1  # local runs of one rank at once
    threads: int | None = None  # torch threads per such run (default: 1 with jobs > 1, else torch's)
    config_text: str | None = None  # the resolved config, kept beside the runs (not part of any run id)

    def __post_init__(self) -> None:
        for key in ("sizes", "tokens", "blends"):
            if not getattr(self, key):
                raise SynthscaleError(f"sweep: --{key} needs at least one value")
        if len(set(self.seeds)) != len(self.seeds):
            raise SynthscaleError(f"sweep: --seeds repeats a seed: {list(self.seeds)}")
        if self.jobs < 1:
            raise SynthscaleError(f"sweep: --jobs must be at least 1, got {self.jobs}")
        if self.jobs > 1 and self.executor.kind != "local":
            raise SynthscaleError(f"--jobs applies to local runs of one rank; {self.executor.kind} runs launch "
                                  f"one at a time (each on its TP x PP x DP ranks) or as Slurm arrays")


@dataclass
class PlannedRun:
    """One run of the sweep; `status` is set by recipes.rerun.survey_runs before anything is written."""

    spec: RunSpec
    blend: BlendSpec
    run_dir: Path
    status: str = "pending"  # pending, complete, rescore (score again, no retraining), queued (in Slurm)
    stale: tuple[str, ...] = ()  # rescore: the domains to score again
    queued_as: str | None = None  # queued: "ARRAY task N"

    @property
    def complete(self) -> bool:
        return is_complete(self.run_dir)

    @property
    def launches(self) -> bool:
        """Whether its entry is launched (trained, or scored again from its final checkpoint)."""
        return self.status in ("pending", "rescore")


def plan_sweep(request: SweepRequest) -> list[PlannedRun]:
    missing = [path for path in request.blends if not Path(path).is_file()]
    if missing:
        raise MissingInputError(f"--blends: no blend file at {', '.join(map(repr, missing))}")
    blends = [BlendSpec.load(path) for path in request.blends]
    runs_dir = Path(request.output).resolve()
    planned, problems = [], []
    for size in request.sizes:
        try:
            shape = get_shape(size)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        recipes = [request.recipe.with_overrides(seed=seed) for seed in request.seeds] or [request.recipe]
        for tokens, blend, recipe in ((t, b, r) for t in request.tokens for b in blends for r in recipes):
            try:
                layout = _layout(request, shape, blend)
            except ParallelismError as exc:
                problems.append(f"shape {size}: {exc}")
                continue
            try:
                spec = RunSpec.create(
                    shape=shape,
                    recipe=recipe,
                    tokens=tokens,
                    blend=blend,
                    backend=request.backend,
                    eval_domains=request.eval_domains,
                    eval_max_tokens=request.eval_max_tokens,
                    layout=layout,
                )
            except RunRefused as exc:
                problems.append(f"shape {size}, D={tokens}, blend {blend.name}, seed {recipe.seed}: {exc}")
                continue
            planned.append(PlannedRun(spec=spec, blend=blend, run_dir=runs_dir / spec.run_id))
    if problems:
        raise RunRefused("sweep refused, nothing was written:\n  - " + "\n  - ".join(dict.fromkeys(problems)))
    return planned


def _layout(request: SweepRequest, shape, blend: BlendSpec) -> dict:
    """The run's TP x PP x DP layout (the megatron backend also splits the vocabulary by TP)."""
    gpus_per_node = request.executor.gpus_per_node
    if gpus_per_node is None and request.backend == "bridge":
        gpus_per_node = 8
    return plan_layout(
        shape,
        request.recipe,
        num_nodes=request.executor.num_nodes,
        gpus_per_node=gpus_per_node,
        tensor_parallel=request.tensor_parallel,
        pipeline_parallel=request.pipeline_parallel,
        micro_batch_size=request.micro_batch_size,
        vocab_size=int(blend.tokenizer["vocab_size"]) if request.backend == "megatron" else None,
    ).to_dict()


def check_local_gpus(planned: list[PlannedRun], settings: ExecutorSettings) -> None:
    """Refuse, before anything is written, to launch here runs of shapes that need GPUs on a
    machine with none (a dry run may plan them: its scripts are for another machine)."""
    if settings.kind != "local":
        return
    sizes = list(dict.fromkeys(p.spec.shape.name for p in planned if not p.spec.shape.cpu))
    if not sizes:
        return
    import torch

    if not torch.cuda.is_available():
        cpu_shapes = ", ".join(name for name, s in SHAPES.items() if s.cpu)
        raise RunRefused(f"sweep refused, nothing was written: shape {', '.join(map(repr, sizes))} needs GPUs and "
                         f"this machine has none; CPU shapes: {cpu_shapes} (or --executor slurm / docker, or "
                         f"--dry-run to write the runs for another machine)")


def runs_in_process(spec: RunSpec, settings: ExecutorSettings) -> bool:
    """A local megatron run of one rank: trained in a worker process of the sweep, no torchrun."""
    return settings.kind == "local" and spec.backend == "megatron" and int(spec.layout["world_size"]) == 1


def prepare_run(planned: PlannedRun, settings: ExecutorSettings, config_text: str | None = None) -> str | None:
    """Write the run folder (run.json, sweep.config.yaml, the Bridge YAMLs); for local and docker
    also the launcher text NeMo-Run would run (returned). Slurm runs are launched in arrays
    (recipes.arrays). A run scored again gets no config_text: it keeps the config that trained it."""
    run_dir = planned.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    planned.spec.save(run_dir)
    if config_text is not None:
        write_text_atomic(run_dir / SWEEP_CONFIG_FILE, config_text)
    if planned.spec.backend == "bridge":
        write_bridge_configs(planned.spec, planned.blend, run_dir)
    if settings.kind == "slurm":
        return None
    if runs_in_process(planned.spec, settings):
        text = f"# local, one rank in a worker process: recipes train {shlex.quote(str(run_dir))}\n"
    else:
        text = dry_run(planned.spec, run_dir, settings, planned.blend)
    write_text_atomic(run_dir / f"launcher.{settings.kind}.txt", text)
    return text


def execute_sweep(
    request: SweepRequest,
    dry_run_only: bool = False,
    echo: Callable[[str], None] = print,
    train_fn: Callable | None = None,
    force: bool = False,
) -> tuple[list[PlannedRun], Path | None]:
    """Plan, check, write and run (or submit) the sweep: (its runs, the config record in
    RUNS_DIR/_sweeps). Nothing is written before every run passed its checks; `force` launches
    incomplete runs again when squeue cannot say which are still queued (recipes.rerun); `train_fn`
    replaces `run_single_rank` for local runs of one rank (tests)."""
    planned = plan_sweep(request)
    if not dry_run_only:
        check_local_gpus(planned, request.executor)
    survey_runs(planned, Path(request.output).resolve(), force=force, echo=echo)
    settings = request.executor
    record = keep_sweep_config(Path(request.output), request.config_text)
    in_process: list[PlannedRun] = []
    failures: list[str] = []
    for item in planned:
        spec = item.spec
        label = f"{spec.run_id}  (model {spec.shape.name}, N={spec.shape.N}, D={spec.plan.tokens}, blend {item.blend.name})"
        if item.status == "complete":
            echo(f"skip  {label}: completed")
            continue
        if item.status == "queued":
            echo(f"queued {label}: {item.queued_as} is still in Slurm's queue; nothing written or submitted")
            continue
        if item.status == "rescore":
            if runs_in_process(spec, settings) and not dry_run_only:
                prepare_run(item, settings)  # run.json with the evaluation; training and layout kept
                echo(f"score {label} on {', '.join(item.stale)} (completed; no retraining)")
                in_process.append(item)
                continue
            failures += rescore_run(item, label, settings, dry_run_only, echo)
            continue
        stopped = stopped_report(item.run_dir)
        if stopped:
            echo(f"      {spec.run_id} stopped in Slurm before: {stopped}")
        text = prepare_run(item, settings, request.config_text)
        if settings.kind == "slurm":
            echo(f"{'would run' if dry_run_only else 'run  '}  {label}, {spec.plan.train_iters} steps (Slurm array)")
        elif dry_run_only:
            echo(f"would run  {label}, {spec.plan.train_iters} steps\n{text}")
        elif runs_in_process(spec, settings):
            echo(f"run   {label}, {spec.plan.train_iters} steps")
            in_process.append(item)
        else:
            echo(f"run   {label}, {spec.plan.train_iters} steps")
            launch(spec, item.run_dir, settings, item.blend)
            if not item.complete:  # NeMo-Run reports a failed launch, it does not raise
                failures.append(f"{spec.run_id}: its {spec.backend} launch ended without results.json "
                                f"(logs under {item.run_dir / 'nemo_run'})")
    if settings.kind == "slurm":
        submit_arrays(planned, settings, Path(request.output), dry_run_only, echo)
    if in_process:
        run_local_runs(in_process, request.jobs, request.threads, echo, train_fn)
    if failures:
        raise RunFailed("\n  - ".join([f"{len(failures)} runs did not finish as asked (rerun the sweep to "
                                        f"continue them):", *failures]))
    return planned, record


def rescore_run(item: PlannedRun, label: str, settings: ExecutorSettings, dry_run_only: bool,
                echo: Callable[[str], None]) -> list[str]:
    """Score a complete run again on its stale domains, from its final checkpoint, by its entry
    (launched here, or in a Slurm array by the caller), after run.json (and Bridge's eval YAMLs) got
    the evaluation. Returns what a local launch left unscored."""
    spec = item.spec
    what = f"{label} on {', '.join(item.stale)} (completed; no retraining)"
    prepare_run(item, settings)  # run.json with the evaluation, Bridge's eval YAMLs; training and layout kept
    echo(f"{'would score' if dry_run_only else 'score'}  {what}, by its {spec.backend} entry")
    if dry_run_only or settings.kind == "slurm":
        return []
    launch(spec, item.run_dir, settings, item.blend)
    left = stale_domains(load_result(item.run_dir / RESULTS_FILE), spec)
    return [f"{spec.run_id}: still not scored on {', '.join(left)} by its {spec.backend} entry"] if left else []


def keep_sweep_config(runs_dir: Path, config_text: str | None) -> Path | None:
    """RUNS_DIR/_sweeps/<UTC time>-<hash of the config>.yaml: every sweep's resolved config, in order."""
    if config_text is None:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    digest = hashlib.sha256(config_text.encode()).hexdigest()[:8]
    path = runs_dir / SWEEPS_DIR / f"{stamp}-{digest}.yaml"
    write_text_atomic(path, config_text)
    return path


def sweep_summary(planned: list[PlannedRun], record: Path | None) -> dict:
    """What `recipes sweep --json` prints: the config record and each run's folder and status
    (complete, pending, rescore or queued, as the sweep found it)."""
    return {
        "config": str(record) if record else None,
        "runs": [{"run_id": p.spec.run_id, "run_dir": str(p.run_dir), "model": p.spec.shape.name,
                  "N": p.spec.shape.N, "D": p.spec.plan.tokens, "blend": p.blend.name, "seed": p.spec.recipe.seed,
                  "status": p.status} for p in planned],
    }


def submit_arrays(planned: list[PlannedRun], settings: ExecutorSettings, runs_dir: Path, dry_run_only: bool,
                  echo: Callable[[str], None]) -> list[Path]:
    """One Slurm job array per resource group of the runs to launch; print (dry run) or submit."""
    from recipes.arrays import describe, group_pending, prepare_array, submit_array

    folders = []
    for group, runs in group_pending(planned, settings).items():
        if dry_run_only:
            folder, script = prepare_array(group, runs, settings, runs_dir)
            echo(f"would submit {describe(group, runs, folder)}\n{script}")
        else:
            folder = submit_array(group, runs, settings, runs_dir)
            echo(f"submitted {describe(group, runs, folder)}")
        folders.append(folder)
    return folders


def run_local_runs(items: list[PlannedRun], jobs: int, threads: int | None, echo: Callable[[str], None],
                   train_fn: Callable | None = None) -> None:
    """Train (or score again) local runs of one rank in `jobs` worker processes, each a fresh
    interpreter (megatron-core's process group and CPU shims stay out of this one); report every
    failure at the end."""
    if train_fn is None:
        from recipes.megatron.entry import run_single_rank as train_fn
    threads = threads or (1 if jobs > 1 else None)
    failures: list[str] = []
    started, count = time.perf_counter(), 0

    def finished(item: PlannedRun, record: dict | None, error: BaseException | None) -> None:
        nonlocal count
        count += 1
        progress = f"[{count}/{len(items)}, {time.perf_counter() - started:.0f} s]"
        if error is not None:
            failures.append(f"{item.spec.run_id}: {type(error).__name__}: {error}")
            echo(f"FAIL  {progress} {item.spec.run_id}: {error}")
            if debug_enabled() or not isinstance(error, SynthscaleError):  # a bug: show where
                echo("".join(traceback.format_exception(error)).rstrip())
        else:
            echo(f"done  {progress} {item.spec.run_id}: loss {record['loss']:.4f} "
                 f"({record['tokens_per_s']:.0f} tokens/s)")

    context = mp.get_context("spawn")  # a fresh interpreter per worker: no forked torch state
    with cf.ProcessPoolExecutor(max_workers=min(jobs, len(items)), mp_context=context) as pool:
        futures = {pool.submit(train_fn, item.run_dir, threads): item for item in items}
        for future in cf.as_completed(futures):
            error = future.exception()
            finished(futures[future], None if error else future.result(), error)
    if failures:
        raise RunFailed(f"{len(failures)} of {len(items)} runs failed (the others are complete; rerun the "
                        f"sweep to retry):\n  - " + "\n  - ".join(failures))


class RunFailed(SynthscaleError):
    """One or more runs of a sweep failed; the message lists them (and the log each traceback
    that is not a SynthscaleError's)."""
