"""`generation submit`: `generation run --shard i/n` as a Slurm job array, through NeMo-Run.

    generation submit --shards 16 --output synth/hq --slurm-account ACC --gpus-per-task 2 \\
        --container-image REGISTRY/synthscale-vllm:latest --dry-run -- \\
        --recipe hq --input 'docs/*.jsonl' --model /models/Mistral-7B-Instruct-v0.2 --tensor-parallel-size 2

Everything after `--` is passed to `generation run` as it is. Each array task runs
`generation run ARGS --output OUT --shard I/N` with its own vLLM engine on `--gpus-per-task`
GPUs (default: the `--tensor-parallel-size` in ARGS), or, with `--backend openai --base-url URL`
in ARGS, against a served endpoint on no GPU. The executor is synthscale.slurm's NeMo-Run
SlurmExecutor, the one `recipes` uses for training arrays; the array lists only the shards whose
manifest (`OUT/manifest.part-I-of-N.json`) is not complete, and a task that is stopped (time
limit, preemption) after committing more output is requeued until its shard is complete.
Submit again to pick up shards that failed; when every shard is complete, `generation submit`
runs `generation merge OUT` instead (with --dry-run it says so). `--dry-run` writes and prints
the sbatch script (OUT/_slurm/sbatch.sh) and submits nothing.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click

from synthscale import slurm
from synthscale.cli import StageCommand
from synthscale.errors import SynthscaleError
from synthscale.files import write_text_atomic

from generation.corpus.outputs import manifest_name

DEFAULT_IMAGE = "synthscale-vllm:latest"  # containers/Dockerfile.vllm


def shard_complete(output: Path, index: int, count: int) -> bool:
    path = output / manifest_name(index, count)
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get("complete"))
    except (OSError, ValueError):
        return False


def pending_shards(output: Path, count: int) -> list[int]:
    return [i for i in range(count) if not shard_complete(output, i, count)]


def _option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _values(args: list[str], name: str) -> list[str]:
    """Every value of option `name` in ARGS, in both forms: `--input X` and `--input=X`."""
    values = []
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            values.append(args[i + 1])
        elif arg.startswith(name + "="):
            values.append(arg.split("=", 1)[1])
    return values


# `generation run` options naming files or folders a task reads: mounted in place in the container.
# Inputs and the concept graph always (they must be there); a model, prompt sets or a tokenizer
# only when the name is a local path (else it is a model name for the engine).
ALWAYS_MOUNTED = ("--input", "--graph")
MOUNTED_IF_LOCAL = ("--model", "--prompts", "--tokenizer")


def _mounts(args: list[str], output: Path, extra: tuple[str, ...]) -> list[str]:
    """The output folder and every folder a task reads (ALWAYS_MOUNTED, MOUNTED_IF_LOCAL), in place."""
    folders = {output.resolve()}
    for name in ALWAYS_MOUNTED + MOUNTED_IF_LOCAL:
        for value in _values(args, name):
            path = Path(re.split(r"[*?\[]", value)[0] or ".").expanduser()  # a glob's fixed part
            if name in ALWAYS_MOUNTED or path.exists():
                folders.add((path if path.is_dir() or name == "--graph" else path.parent).resolve())
    kept: list[Path] = []
    for folder in sorted(folders, key=lambda p: len(p.parts)):
        if not any(folder == k or k in folder.parents for k in kept):
            kept.append(folder)
    return [f"{p}:{p}" for p in kept] + list(extra)


def task_command(args: list[str], output: Path, count: int) -> str:
    run_args = " ".join(shlex.quote(a) for a in [*args, "--output", str(output.resolve()), "--no-progress"])
    return f'exec generation run {run_args} --shard "$SYNTHSCALE_ITEM/{count}"'


def progress_stamp(output: Path, count: int) -> str:
    """Changes when the task's shard commits output (its data files and commit log grow)."""
    q = shlex.quote(str(output.resolve()))
    tag = f"part-$(printf %05d \"$SYNTHSCALE_ITEM\")-of-{count:05d}"
    return f"find {q} -maxdepth 3 -path \"*{tag}*\" -type f -printf '%p %s\\n' 2>/dev/null | sort | cksum"


def complete_test(output: Path, count: int) -> str:
    q = str(output.resolve())
    name = "manifest.json" if count == 1 else f"manifest.part-$(printf %05d \"$SYNTHSCALE_ITEM\")-of-{count:05d}.json"
    return f"grep -Eqs '\"complete\": *true' \"{q}/{name}\""


def build(run, args: list[str], output: Path, count: int, shards: list[int], settings: slurm.SlurmSettings,
          gpus: int):
    folder = output.resolve() / "_slurm"
    list_file = slurm.write_item_list(folder / "shards.txt", [str(i) for i in shards])
    setup = "\n".join([slurm.item_lines(list_file),
                       slurm.requeue_lines(complete_test(output, count), progress_stamp(output, count),
                                           settings.max_requeues)])
    executor = slurm.slurm_executor(run, settings, gpus_per_node=gpus or None,
                                    array=slurm.array_spec(len(shards), settings.array_parallelism),
                                    setup_lines=setup, env={"VLLM_WORKER_MULTIPROC_METHOD": "spawn"})
    task = run.Script(inline=task_command(args, output, count))
    return folder, executor, task


@click.command("submit", cls=StageCommand)
@click.option("--shards", type=click.IntRange(min=1), required=True, help="N: array tasks, one `--shard I/N` each.")
@click.option("--output", required=True, type=click.Path(file_okay=False), help="Output directory (shared by the shards).")
@click.option("--executor", type=click.Choice(["slurm"]), default="slurm", show_default=True)
@click.option("--gpus-per-task", type=click.IntRange(min=0), default=None,
              help="GPUs per task [default: --tensor-parallel-size in ARGS; 0 with --backend openai].")
@click.option("--slurm-account", default=None)
@click.option("--slurm-partition", default=None)
@click.option("--slurm-time", default=slurm.DEFAULT_TIME, show_default=True)
@click.option("--slurm-max-requeues", type=click.IntRange(min=0), default=slurm.DEFAULT_MAX_REQUEUES, show_default=True)
@click.option("--slurm-array-parallelism", type=click.IntRange(min=1), default=None, help="At most N tasks at once.")
@click.option("--container-image", default=None,
              help=f"e.g. {DEFAULT_IMAGE} (containers/Dockerfile.vllm) [default: none: tasks run in this Python environment].")
@click.option("--mount", "mounts", multiple=True, metavar="SRC:DST", help="Extra container mount (repeat).")
@click.option("--dry-run", is_flag=True, help="Write and print the sbatch script; submit nothing.")
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED)
def submit_command(shards, output, executor, gpus_per_task, slurm_account, slurm_partition, slurm_time,
                   slurm_max_requeues, slurm_array_parallelism, container_image, mounts, dry_run, run_args):
    """Run `generation run ARGS --shard I/N` as a Slurm job array (NeMo-Run), resubmittable until
    every shard is complete, then merge. ARGS (after `--`) are `generation run`'s options.

    \b
    Example:
      generation submit --shards 16 --output synth/hq --slurm-account ACC --dry-run -- \\
          --recipe hq --input 'docs/*.jsonl' --model /models/Mistral-7B-Instruct-v0.2 --tensor-parallel-size 2
    """
    args = list(run_args)
    if _option(args, "--shard") or _option(args, "--output"):
        raise click.UsageError("give --output to `generation submit`, and no --shard in ARGS (each task gets its own)")
    if not _option(args, "--recipe"):
        raise click.UsageError("ARGS after `--` must be `generation run` options (--recipe, --input, --model, ...)")
    out = Path(output)
    pending = pending_shards(out, shards)
    if not pending:
        command = ["generation", "merge", str(out)]
        click.echo(f"all {shards} shards complete: {' '.join(command)}")
        if not dry_run:
            sys.exit(subprocess.run([sys.executable, "-m", "generation", "merge", str(out)]).returncode)
        return
    if gpus_per_task is None:
        gpus_per_task = 0 if _option(args, "--backend") == "openai" else int(_option(args, "--tensor-parallel-size") or 1)
    try:
        settings = slurm.SlurmSettings(account=slurm_account or "", partition=slurm_partition, time=slurm_time,
                                       container_image=container_image, mounts=tuple(_mounts(args, out, mounts)),
                                       max_requeues=slurm_max_requeues, array_parallelism=slurm_array_parallelism)
    except SynthscaleError as exc:  # a missing --slurm-account, a malformed --slurm-time
        raise click.UsageError(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    run = slurm.import_nemo_run(out.resolve() / "_slurm" / slurm.NEMO_RUN_DIR)
    folder, slurm_executor, task = build(run, args, out, shards, pending, settings, gpus_per_task)
    name = f"generation-{out.resolve().name}"
    script = slurm.render_script(run, slurm_executor, task, name, folder / slurm.NEMO_RUN_DIR / "dryrun")
    write_text_atomic(folder / "sbatch.sh", script)
    click.echo(f"{len(pending)} of {shards} shards to run ({shards - len(pending)} complete): {folder / 'sbatch.sh'}")
    if dry_run:
        click.echo(script)
        return
    slurm.submit(run, slurm_executor, task, name)
    click.echo("submitted; when every task has finished, run this again (it merges once all shards are complete)")
