"""NeMo-Run launchers: the only launch path for runs outside this process.

  - `local` (torchrun on this machine) and `docker`: one NeMo-Run `run.Script` per run;
  - `slurm`: one NeMo-Run Slurm **job array** per group of runs with the same resources
    (recipes.arrays), built with synthscale.slurm: NeMo-Run writes the sbatch script, including
    torchrun's multi-node rendezvous (`--rdzv-backend c10d --rdzv-endpoint $head_node_ip:29500
    --nnodes N --node-rank $SLURM_NODEID`), and the script requeues each task until its run is
    complete.

The task is `python -m recipes.bridge_entry --run-dir RUN` (or `--run-list LIST` in an array;
Bridge backend, one process per GPU through torchrun), `python -m recipes.megatron.entry --run-dir
RUN` (megatron-core backend: torchrun with one rank per GPU, or per CPU process for the CPU shapes;
nproc_per_node = the layout's ranks per node, TP x PP x DP on one node). A local run of one rank
skips NeMo-Run and torchrun: `recipes sweep` trains it in a worker process (recipes.sweep). `run.Script` is used rather than `run.Partial(pretrain, config=...)`, which cannot
serialise torch dtypes; the Bridge configuration travels as the YAML files in the run folder.

Inside a container every path is mounted at the same place (runs folder, blend, data and
evaluation folders), so run.json and the YAML files need no rewriting. NeMo-Run's own
bookkeeping (NEMORUN_HOME, and the Slurm job folder) goes under RUN/nemo_run (an array's under
its array folder), never into the home folder.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.blend_spec import BlendSpec
from recipes.run_spec import RunSpec
from synthscale import slurm
from synthscale.errors import SynthscaleError

EXECUTORS = ("local", "slurm", "docker")
DEFAULT_CONTAINER = "synthscale-nemo:26.08"  # containers/Dockerfile on nvcr.io/nvidia/nemo:26.08


def nemo_run_home(run_dir: str | Path) -> Path:
    return Path(run_dir).resolve() / "nemo_run"


@dataclass(frozen=True)
class ExecutorSettings:
    kind: str = "local"
    num_nodes: int = 1
    gpus_per_node: int | None = 8  # ranks per node (None: the megatron backend's TP x PP on one node)
    container_image: str | None = None  # None: Slurm tasks run in the submitting Python environment
    slurm_account: str | None = None
    slurm_partition: str | None = None
    slurm_time: str = slurm.DEFAULT_TIME
    extra_mounts: tuple[str, ...] = field(default_factory=tuple)
    max_requeues: int = slurm.DEFAULT_MAX_REQUEUES
    array_parallelism: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise SynthscaleError(f"executor must be one of {EXECUTORS}, got {self.kind!r}")
        if self.num_nodes < 1 or (self.gpus_per_node is not None and self.gpus_per_node < 1):
            raise SynthscaleError(
                f"num_nodes and gpus_per_node must be >= 1, got {self.num_nodes} and {self.gpus_per_node}"
            )
        if self.kind == "slurm":
            self.slurm_settings([])  # checks the account, the time limit and the array settings
        if self.kind != "slurm" and self.num_nodes != 1:
            raise SynthscaleError(f"executor {self.kind}: runs on one node, got num_nodes={self.num_nodes}")

    def slurm_settings(self, mounts: list[str]) -> slurm.SlurmSettings:
        return slurm.SlurmSettings(
            account=self.slurm_account or "",
            partition=self.slurm_partition,
            time=self.slurm_time,
            container_image=self.container_image,
            mounts=tuple(mounts),
            max_requeues=self.max_requeues,
            array_parallelism=self.array_parallelism,
        )


def nemo_run(run_dir: str | Path):
    """Import nemo_run with NEMORUN_HOME under the run folder."""
    return slurm.import_nemo_run(nemo_run_home(run_dir))


def container_mounts(spec: RunSpec, blend: BlendSpec, run_dir: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """`path:path` for every folder a run reads or writes, nested folders folded into their parent."""
    folders = {run_dir.resolve().parent, Path(spec.blend_path).parent}
    folders |= {Path(p).resolve().parent for s in blend.active_sources for p in s.prefixes}
    folders |= {Path(p).parent for p in spec.eval_domains.values()}
    return fold_mounts(folders, extra)


def fold_mounts(folders: set[Path], extra: tuple[str, ...] = ()) -> list[str]:
    kept: list[Path] = []
    for folder in sorted(folders, key=lambda p: len(p.parts)):
        if not any(folder == k or k in folder.parents for k in kept):
            kept.append(folder)
    return [f"{p}:{p}" for p in kept] + list(extra)


ENTRIES = {"bridge": "recipes.bridge_entry", "megatron": "recipes.megatron.entry"}


def rank_device(spec: RunSpec) -> str:
    """Where a run's ranks run: "gpu" (bridge; megatron's GPU shapes) or "cpu" (megatron's CPU
    shapes, over gloo)."""
    return "cpu" if spec.backend == "megatron" and spec.shape.cpu else "gpu"


def build_task(run, spec: RunSpec, run_dir: Path):
    return run.Script(path=ENTRIES[spec.backend], m=True, entrypoint="python", args=["--run-dir", str(run_dir)])


def build_executor(run, settings: ExecutorSettings, spec: RunSpec, mounts: list[str]):
    """The Local (torchrun) or Docker executor of one run: torchrun with the layout's ranks per node
    for the bridge and megatron backends (GPUs, but CPU processes for megatron's CPU shapes)."""
    ranks = spec.layout["gpus_per_node"]
    gpus = ranks if ranks and rank_device(spec) == "gpu" else None
    launcher = "torchrun" if ranks else None
    env = {"PYTHONUNBUFFERED": "1"}
    packager = run.Packager()  # synthscale is installed in the image: nothing to package
    if settings.kind == "local":  # this Python environment: its bin folder (python, torchrun) leads PATH
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        return run.LocalExecutor(ntasks_per_node=ranks or 1, launcher=launcher, env_vars=env)
    if settings.kind != "docker":
        raise ValueError(f"executor {settings.kind}: Slurm runs go in job arrays (recipes.arrays)")
    return run.DockerExecutor(
        container_image=settings.container_image or DEFAULT_CONTAINER,
        num_gpus=gpus if gpus else None,
        runtime="nvidia" if gpus else None,
        ntasks_per_node=ranks or 1,
        volumes=mounts,
        packager=packager,
        launcher=launcher,
        ipc_mode="host",
        shm_size="16g",
        ulimits=["memlock=-1", "stack=67108864"],
        env_vars=env,
    )


def _executor_and_task(spec: RunSpec, settings: ExecutorSettings, run_dir: Path, blend: BlendSpec):
    run = nemo_run(run_dir)
    mounts = container_mounts(spec, blend, run_dir, settings.extra_mounts)
    return run, build_executor(run, settings, spec, mounts), build_task(run, spec, run_dir.resolve())


def dry_run(spec: RunSpec, run_dir: str | Path, settings: ExecutorSettings, blend: BlendSpec) -> str:
    """What would be launched for one run (local or docker), as text."""
    run_dir = Path(run_dir)
    run, executor, task = _executor_and_task(spec, settings, run_dir, blend)
    text = slurm.render_script(run, executor, task, spec.run_id, nemo_run_home(run_dir) / "dryrun")
    return f"# NeMo-Run {settings.kind} executor, run {spec.run_id}\n{text}\n"


def launch(spec: RunSpec, run_dir: str | Path, settings: ExecutorSettings, blend: BlendSpec) -> None:
    """Launch one run for real (local or docker) and wait for it to finish."""
    run_dir = Path(run_dir)
    run, executor, task = _executor_and_task(spec, settings, run_dir, blend)
    slurm.submit(run, executor, task, spec.run_id, wait=True)
