"""NeMo-Run launchers: one `run.Script` per run on a Local (torchrun), Slurm or Docker executor.

The task is `python -m recipes.bridge_entry --run-dir RUN` (Bridge backend, one process per
GPU through torchrun) or `python -m recipes.cli train RUN` (CPU backend). `run.Script` is used
rather than `run.Partial(pretrain, config=...)`, which cannot serialise torch dtypes; the
Bridge configuration travels as the YAML files in the run folder instead.

Inside a container every path is mounted at the same place (runs folder, blend, data and
evaluation folders), so run.json and the YAML files need no rewriting. NeMo-Run's own
bookkeeping (NEMORUN_HOME, and the Slurm job folder) goes under RUN/nemo_run, never into the
home folder.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.blend_spec import BlendSpec
from recipes.run_spec import RunSpec

EXECUTORS = ("local", "slurm", "docker")
DEFAULT_CONTAINER = "synthscale-nemo:26.08"  # containers/Dockerfile on nvcr.io/nvidia/nemo:26.08


def nemo_run_home(run_dir: str | Path) -> Path:
    return Path(run_dir).resolve() / "nemo_run"


@dataclass(frozen=True)
class ExecutorSettings:
    kind: str = "local"
    num_nodes: int = 1
    gpus_per_node: int = 8
    container_image: str = DEFAULT_CONTAINER
    slurm_account: str | None = None
    slurm_partition: str | None = None
    slurm_time: str = "04:00:00"
    extra_mounts: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {self.kind!r}")
        if self.num_nodes < 1 or self.gpus_per_node < 1:
            raise ValueError(
                f"num_nodes and gpus_per_node must be >= 1, got {self.num_nodes} and {self.gpus_per_node}"
            )
        if self.kind == "slurm" and not self.slurm_account:
            raise ValueError("executor slurm: --slurm-account is required")
        if self.kind != "slurm" and self.num_nodes != 1:
            raise ValueError(f"executor {self.kind}: runs on one node, got num_nodes={self.num_nodes}")


def nemo_run(run_dir: str | Path):
    """Import nemo_run with NEMORUN_HOME under the run folder."""
    home = str(nemo_run_home(run_dir))
    os.environ["NEMORUN_HOME"] = home
    import nemo_run
    from nemo_run import config as nemo_run_config

    nemo_run_config.set_nemorun_home(home)
    return nemo_run


def container_mounts(spec: RunSpec, blend: BlendSpec, run_dir: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """`path:path` for every folder a run reads or writes, nested folders folded into their parent."""
    folders = {run_dir.resolve().parent, Path(spec.blend_path).parent}
    folders |= {Path(s.prefix).resolve().parent for s in blend.active_sources}
    folders |= {Path(p).parent for p in spec.eval_domains.values()}
    kept: list[Path] = []
    for folder in sorted(folders, key=lambda p: len(p.parts)):
        if not any(folder == k or k in folder.parents for k in kept):
            kept.append(folder)
    return [f"{p}:{p}" for p in kept] + list(extra)


def build_task(run, spec: RunSpec, run_dir: Path):
    if spec.backend == "bridge":
        return run.Script(path="recipes.bridge_entry", m=True, entrypoint="python", args=["--run-dir", str(run_dir)])
    return run.Script(path="recipes.cli", m=True, entrypoint="python", args=["train", str(run_dir)])


def build_executor(run, settings: ExecutorSettings, spec: RunSpec, mounts: list[str], run_dir: Path):
    gpus = settings.gpus_per_node if spec.backend == "bridge" else None
    launcher = "torchrun" if spec.backend == "bridge" else None
    env = {"PYTHONUNBUFFERED": "1"}
    packager = run.Packager()  # synthscale is installed in the image: nothing to package
    if settings.kind == "local":
        return run.LocalExecutor(ntasks_per_node=gpus or 1, launcher=launcher, env_vars=env)
    if settings.kind == "slurm":
        return run.SlurmExecutor(
            account=settings.slurm_account,
            partition=settings.slurm_partition,
            nodes=settings.num_nodes,
            ntasks_per_node=gpus or 1,
            gpus_per_node=gpus,
            time=settings.slurm_time,
            container_image=settings.container_image,
            container_mounts=mounts,
            tunnel=run.LocalTunnel(job_dir=str(nemo_run_home(run_dir) / "slurm")),
            packager=packager,
            launcher=launcher,
            env_vars=env,
        )
    return run.DockerExecutor(
        container_image=settings.container_image,
        num_gpus=gpus if gpus else None,
        runtime="nvidia" if gpus else None,
        ntasks_per_node=gpus or 1,
        volumes=mounts,
        packager=packager,
        launcher=launcher,
        ipc_mode="host",
        shm_size="16g",
        ulimits=["memlock=-1", "stack=67108864"],
        env_vars=env,
    )


@contextlib.contextmanager
def _quiet():
    """NeMo-Run prints banners to stdout; keep the CLI's output ours."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _experiment(run, spec: RunSpec, settings: ExecutorSettings, run_dir: Path, blend: BlendSpec):
    mounts = container_mounts(spec, blend, run_dir, settings.extra_mounts)
    executor = build_executor(run, settings, spec, mounts, run_dir)
    task = build_task(run, spec, run_dir.resolve())
    experiment = run.Experiment(spec.run_id, executor=executor, log_level="WARN")
    return experiment, task


def dry_run(spec: RunSpec, run_dir: str | Path, settings: ExecutorSettings, blend: BlendSpec) -> str:
    """What would be launched (for Slurm, the sbatch script), as text."""
    run_dir = Path(run_dir)
    run = nemo_run(run_dir)
    with _quiet():
        experiment, task = _experiment(run, spec, settings, run_dir, blend)
        with experiment:
            experiment.add(task, name=spec.run_id, tail_logs=False)
            experiment.dryrun(log=False, delete_exp_dir=True)
            info = experiment.jobs[0]._dryrun_info
    return f"# NeMo-Run {settings.kind} executor, run {spec.run_id}\n{info}\n"


def launch(spec: RunSpec, run_dir: str | Path, settings: ExecutorSettings, blend: BlendSpec) -> None:
    """Launch for real: local and docker wait for the run to finish, slurm submits and returns."""
    run_dir = Path(run_dir)
    run = nemo_run(run_dir)
    experiment, task = _experiment(run, spec, settings, run_dir, blend)
    with experiment:
        experiment.add(task, name=spec.run_id, tail_logs=settings.kind != "slurm")
        experiment.run(detach=settings.kind == "slurm")
