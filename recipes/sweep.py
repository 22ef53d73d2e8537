"""A sweep: the grid sizes x tokens x blends, one run folder each, checked before anything runs.

`plan_sweep` builds every run's spec and refuses the whole sweep (one error listing each bad
run) if any run cannot go: an unknown or non-CPU shape on the CPU backend, fewer than
MIN_TRAIN_ITERS steps, a blend that would read a source more than its max_epochs, a
parallel layout that cannot work. `prepare_run` writes the run folder (run.json, the Bridge
YAMLs, launch.sh and the launcher as NeMo-Run would submit it); `execute_sweep` skips runs
that already have results.json and launches the rest.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from data_prep.blend_spec import BlendSpec
from recipes.bridge_config import write_bridge_configs
from recipes.launchers import ExecutorSettings, dry_run, launch
from recipes.parallelism import ParallelismError, plan_layout
from recipes.recipe import TrainingRecipe
from recipes.results import is_complete
from recipes.run_spec import RunRefused, RunSpec
from recipes.shapes import get_shape
from synthscale.files import write_text_atomic


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

    def __post_init__(self) -> None:
        for key in ("sizes", "tokens", "blends"):
            if not getattr(self, key):
                raise ValueError(f"sweep: --{key} needs at least one value")
        if self.backend == "cpu" and self.executor.kind == "local" and self.executor.num_nodes != 1:
            raise ValueError("the CPU backend runs on one machine")


@dataclass
class PlannedRun:
    spec: RunSpec
    blend: BlendSpec
    run_dir: Path

    @property
    def complete(self) -> bool:
        return is_complete(self.run_dir)


def plan_sweep(request: SweepRequest) -> list[PlannedRun]:
    blends = [BlendSpec.load(path) for path in request.blends]
    runs_dir = Path(request.output).resolve()
    planned, problems = [], []
    for size in request.sizes:
        try:
            shape = get_shape(size)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if request.backend == "cpu" and not shape.cpu:
            cpu_shapes = [s for s in _cpu_shape_names()]
            problems.append(f"shape {size!r} is too large for the CPU backend; CPU shapes: {', '.join(cpu_shapes)}")
            continue
        layout = None
        if request.backend == "bridge":
            try:
                layout = plan_layout(
                    shape,
                    request.recipe,
                    num_nodes=request.executor.num_nodes,
                    gpus_per_node=request.executor.gpus_per_node,
                    tensor_parallel=request.tensor_parallel,
                    pipeline_parallel=request.pipeline_parallel,
                    micro_batch_size=request.micro_batch_size,
                ).to_dict()
            except ParallelismError as exc:
                problems.append(f"shape {size}: {exc}")
                continue
        for tokens in request.tokens:
            for blend in blends:
                try:
                    spec = RunSpec.create(
                        shape=shape,
                        recipe=request.recipe,
                        tokens=tokens,
                        blend=blend,
                        backend=request.backend,
                        eval_domains=request.eval_domains,
                        eval_max_tokens=request.eval_max_tokens,
                        layout=layout,
                    )
                except RunRefused as exc:
                    problems.append(f"shape {size}, D={tokens}, blend {blend.name}: {exc}")
                    continue
                planned.append(PlannedRun(spec=spec, blend=blend, run_dir=runs_dir / spec.run_id))
    if problems:
        raise RunRefused("sweep refused, nothing was written:\n  - " + "\n  - ".join(problems))
    return planned


def _cpu_shape_names() -> list[str]:
    from recipes.shapes import SHAPES

    return [name for name, shape in SHAPES.items() if shape.cpu]


def launch_command(planned: PlannedRun, settings: ExecutorSettings) -> str:
    """The plain command that runs this run in place (what the launcher wraps)."""
    run_dir = shlex.quote(str(planned.run_dir))
    if planned.spec.backend == "cpu":
        return f"recipes train {run_dir}"
    nodes = settings.num_nodes
    return (
        f"torchrun --nnodes {nodes} --nproc-per-node {settings.gpus_per_node} "
        f"-m recipes.bridge_entry --run-dir {run_dir}"
    )


def prepare_run(planned: PlannedRun, settings: ExecutorSettings) -> str:
    """Write the run folder; return the launcher text (for Slurm, the sbatch script)."""
    run_dir = planned.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    planned.spec.save(run_dir)
    if planned.spec.backend == "bridge":
        write_bridge_configs(planned.spec, planned.blend, run_dir)
    command = launch_command(planned, settings)
    write_text_atomic(run_dir / "launch.sh", f"#!/usr/bin/env bash\n# run {planned.spec.run_id}\nset -euo pipefail\n{command}\n")
    (run_dir / "launch.sh").chmod(0o755)
    if planned.spec.backend == "cpu" and settings.kind == "local":
        text = f"# local, in process: {command}\n"
    else:
        text = dry_run(planned.spec, run_dir, settings, planned.blend)
    write_text_atomic(run_dir / f"launcher.{settings.kind}.txt", text)
    return text


def execute_sweep(
    request: SweepRequest,
    dry_run_only: bool = False,
    echo: Callable[[str], None] = print,
    run_cpu_fn: Callable | None = None,
) -> list[PlannedRun]:
    planned = plan_sweep(request)
    settings = request.executor
    for item in planned:
        spec = item.spec
        label = f"{spec.run_id}  (model {spec.shape.name}, N={spec.shape.N}, D={spec.plan.tokens}, blend {item.blend.name})"
        if item.complete:
            echo(f"skip  {label}: completed")
            continue
        text = prepare_run(item, settings)
        if dry_run_only:
            echo(f"would run  {label}, {spec.plan.train_iters} steps\n{text}")
            continue
        echo(f"run   {label}, {spec.plan.train_iters} steps")
        if spec.backend == "cpu" and settings.kind == "local":
            if run_cpu_fn is None:
                from recipes.cpu_trainer import run_cpu as run_cpu_fn
            record = run_cpu_fn(item.run_dir)
            echo(f"done  {spec.run_id}: loss {record['loss']:.4f} ({record['tokens_per_s']:.0f} tokens/s)")
        else:
            launch(spec, item.run_dir, settings, item.blend)
    return planned
