"""The `recipes` command: shapes, sweep, train, results."""

from __future__ import annotations

import json
import warnings

import click

from synthscale.cli import friendly_errors
from synthscale.units import format_count, parse_count


def _quiet_library_notices() -> None:
    """Notices from libraries that do not apply here: megatron-core's optional GPU kernels,
    NeMo-Run's starlette import."""
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
    warnings.filterwarnings("ignore", message=".*pad token id in the tokenizer collides.*")
    warnings.filterwarnings("ignore", message=".*starlette.middleware.wsgi is deprecated.*")


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    """Accept `--x a --x b` and `--x a,b`."""
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main():
    """Train Llama-3-style models over a grid of size N, tokens D and mixture, and tabulate the losses.

    \b
    Backends: `cpu` (default; a real transformers trainer for the tiny shapes) and `bridge`
    (Megatron-Bridge in the nvcr.io/nvidia/nemo container, launched with NeMo-Run).
    \b
    Example, a tiny CPU sweep (blends made with --seq-length 128) and its table:
      recipes sweep --sizes tiny-xs,tiny-s --tokens 1M,2M --blends blends/hq_33.yaml \\
          --eval wiki=data/wiki_eval --output runs
      recipes results runs --output results.csv
    Each run folder RUNS_DIR/<run_id>/ holds run.json (shape, recipe, plan, blend sha256, eval
    domains), launcher.<executor>.txt (local, docker), bridge/*.yaml (Bridge backend),
    checkpoints/, and at the end results.json, the same for both backends: run_id, backend,
    model, N (non-embedding parameters), D (tokens trained), D_requested, mixture,
    synthetic_fraction, family, generator, recipe_hash, seed, eval_domains, blend {name, path,
    identity_sha256, weights, data_path, sources {role, family, generator}}, eval {domain:
    {loss, tokens, prefix}}, loss (token-weighted mean over domains), final_train_loss,
    train_loss_curve [[step, loss], ...], wall_time_s, train_time_s, tokens_per_s, versions,
    shape, recipe, plan, layout, provenance.
    \b
    Example, the paper's 1B model for 5B tokens on 2 Slurm nodes (prints the sbatch script):
      recipes sweep --sizes 1B --tokens 5B --blends blends/hq_33.yaml --eval wiki=data/wiki \\
          --backend bridge --executor slurm --nodes 2 --slurm-account ACC --output runs --dry-run
    """
    _quiet_library_notices()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def shapes(as_json):
    """List the model shapes with their exact non-embedding parameter count N.

    \b
    Example:
      recipes shapes
    """
    from recipes.shapes import FFN_DIM_MULTIPLIER, FFN_MULTIPLE_OF, describe_shapes

    rows = describe_shapes()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'name':<8} {'d_model':>7} {'layers':>6} {'heads':>5} {'ffn':>6} {'N':>14}  cpu")
    for r in rows:
        click.echo(
            f"{r['name']:<8} {r['d_model']:>7} {r['layers']:>6} {r['heads']:>5} {r['ffn']:>6} "
            f"{r['N']:>14,}  {'yes' if r['cpu'] else ''}"
        )
    click.echo(
        f"head_dim 64 (tiny: 32/64), SwiGLU, RMSNorm, RoPE, no biases, untied embeddings; "
        f"ffn = Llama 3 rule (x{FFN_DIM_MULTIPLIER}, multiple of {FFN_MULTIPLE_OF})"
    )


@main.command()
@click.option("--sizes", multiple=True, required=True, help="Shape names, comma-separated or repeated (see `recipes shapes`).")
@click.option("--tokens", multiple=True, required=True, help="Training tokens D per run: 5B, 200M, 1e9 (comma-separated or repeated).")
@click.option("--blends", multiple=True, required=True, help="BLEND.yaml files from `data_prep blend` (comma-separated or repeated).")
@click.option("--eval", "evals", multiple=True, required=True, metavar="NAME=PREFIX", help="An evaluation domain: PREFIX of .bin/.idx (repeat).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="RUNS_DIR: one folder per run.")
@click.option("--backend", type=click.Choice(["cpu", "bridge"]), default="cpu", show_default=True)
@click.option("--executor", type=click.Choice(["local", "slurm", "docker"]), default="local", show_default=True)
@click.option("--recipe", "recipe_name", default=None, help="Training recipe: paper (Table 2) or cpu-tiny [default: cpu-tiny for cpu, paper for bridge].")
@click.option("--seq-length", type=click.IntRange(min=1), default=None, help="Override the recipe's sequence length.")
@click.option("--global-batch-size", type=click.IntRange(min=1), default=None, help="Override the recipe's global batch (sequences).")
@click.option("--micro-batch-size", type=click.IntRange(min=1), default=None, help="Override the recipe's micro batch.")
@click.option("--peak-lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Override the recipe's peak learning rate (tiny models learn faster at ~1e-3).")
@click.option("--checkpoint-interval", type=click.IntRange(min=1), default=None, help="Optimizer steps between checkpoints.")
@click.option("--eval-max-tokens", default=None, help="Evaluate on at most this many tokens per domain.")
@click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True, help="Nodes (Slurm).")
@click.option("--gpus-per-node", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--tensor-parallel", type=click.IntRange(min=1), default=None, help="TP size [default: per shape].")
@click.option("--pipeline-parallel", type=click.IntRange(min=1), default=None, help="PP size [default: per shape; 3B uses 2].")
@click.option("--container-image", default=None, help="Image with synthscale on the NeMo container (containers/Dockerfile) [default: synthscale-nemo:26.08].")
@click.option("--slurm-account", default=None)
@click.option("--slurm-partition", default=None)
@click.option("--slurm-time", default="04:00:00", show_default=True, help="Time limit per job; a run longer than this continues in requeued jobs.")
@click.option("--slurm-max-requeues", type=click.IntRange(min=0), default=50, show_default=True, help="Requeues per array task (each needs progress).")
@click.option("--slurm-array-parallelism", type=click.IntRange(min=1), default=None, help="At most this many tasks of an array at once (%N).")
@click.option("--mount", "mounts", multiple=True, metavar="SRC:DST", help="Extra container mount (repeat).")
@click.option("--seeds", default=None, help="Train every run once per seed, e.g. 1,2,3 [default: the recipe's seed].")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True, help="CPU runs at once, each in its own process.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads per CPU run [default: 1 with --jobs > 1, else torch's or $SYNTHSCALE_TORCH_THREADS].")
@click.option("--dry-run", is_flag=True, help="Write the run folders and print what would launch (sbatch scripts for Slurm); launch nothing.")
@friendly_errors
def sweep(sizes, tokens, blends, evals, output, backend, executor, recipe_name, seq_length, global_batch_size,
          micro_batch_size, peak_lr, checkpoint_interval, eval_max_tokens, nodes, gpus_per_node, tensor_parallel,
          pipeline_parallel, container_image, slurm_account, slurm_partition, slurm_time, slurm_max_requeues,
          slurm_array_parallelism, mounts, seeds, jobs, threads, dry_run):
    """Plan, write and launch one run per (size, tokens, blend); completed runs are skipped.

    Train iterations = tokens / (global batch x sequence length); a run is refused when that is
    under 50 steps or when the blend would read a source more than its max_epochs. The blend's
    seq_length must be the recipe's (cpu-tiny: 128, paper: 4096) or --seq-length. With --dry-run
    the run folders (run.json, Bridge YAML, launcher.*.txt) are written, nothing runs.
    On Slurm the runs not complete go in one job array per resource group (RUNS_DIR/_arrays/*:
    runs.txt, sbatch.sh); each task requeues itself until its run is complete.
    A rerun skips completed runs, and scores them on any --eval domain added since (CPU backend,
    from the final checkpoint, no retraining).

    \b
    Example (a blend made with `data_prep blend ... --seq-length 128`), 2 runs at a time:
      recipes sweep --sizes tiny-xs --tokens 1M --blends blends/hq_33.yaml \\
          --eval wiki=data/wiki_eval --output runs --jobs 2
    """
    from recipes.launchers import DEFAULT_CONTAINER, ExecutorSettings
    from recipes.recipe import get_recipe
    from recipes.run_spec import parse_eval_domains
    from recipes.sweep import RunFailed, SweepRequest, execute_sweep

    recipe = get_recipe(recipe_name or ("cpu-tiny" if backend == "cpu" else "paper")).with_overrides(
        seq_length=seq_length,
        global_batch_size=global_batch_size,
        micro_batch_size=micro_batch_size,
        peak_lr=peak_lr,
        checkpoint_interval=checkpoint_interval,
    )
    settings = ExecutorSettings(
        kind=executor,
        num_nodes=nodes,
        gpus_per_node=gpus_per_node,
        container_image=container_image or DEFAULT_CONTAINER,
        slurm_account=slurm_account,
        slurm_partition=slurm_partition,
        slurm_time=slurm_time,
        extra_mounts=tuple(mounts),
        max_requeues=slurm_max_requeues,
        array_parallelism=slurm_array_parallelism,
    )
    request = SweepRequest(
        sizes=_split(sizes),
        tokens=tuple(parse_count(t, "--tokens") for t in _split(tokens)),
        blends=_split(blends),
        backend=backend,
        recipe=recipe,
        eval_domains=parse_eval_domains(evals),
        output=output,
        executor=settings,
        eval_max_tokens=parse_count(eval_max_tokens, "--eval-max-tokens") if eval_max_tokens else None,
        tensor_parallel=tensor_parallel,
        pipeline_parallel=pipeline_parallel,
        micro_batch_size=micro_batch_size,
        seeds=_seeds(seeds),
        jobs=jobs,
        threads=threads,
    )
    try:
        planned = execute_sweep(request, dry_run_only=dry_run, echo=click.echo)
    except RunFailed as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{len(planned)} runs in {output}")


def _seeds(value: str | None) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        seeds = tuple(int(v) for v in _split((value,)))
    except ValueError:
        raise ValueError(f"--seeds: expected comma-separated integers, got {value!r}") from None
    if any(s < 0 for s in seeds):
        raise ValueError(f"--seeds: seeds must be >= 0, got {value!r}")
    return seeds


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--checkpoint-interval", type=click.IntRange(min=1), default=None, help="Override the run's checkpoint interval.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads [default: torch's, or $SYNTHSCALE_TORCH_THREADS].")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@friendly_errors
def train(run_dir, checkpoint_interval, threads, no_progress):
    """Train (or resume after a kill) and evaluate one CPU run folder; writes results.json.

    \b
    Example:
      recipes train runs/tiny-xs-1.05M-0123456789-hq_33
    """
    from recipes.cpu_trainer import run_cpu

    record = run_cpu(
        run_dir, progress=False if no_progress else None, checkpoint_interval=checkpoint_interval, threads=threads
    )
    domains = ", ".join(f"{k} {v['loss']:.4f}" for k, v in record["eval"].items())
    click.echo(f"{record['run_id']}: loss {record['loss']:.4f} ({domains}); D={format_count(record['D'])}")


@main.command()
@click.argument("runs_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="results.csv or results.parquet")
@friendly_errors
def results(runs_dir, output):
    """Gather every run's results.json into one table (one row per run).

    Columns: run_id, model, N, D, mixture, synthetic_fraction, family, generator, backend,
    recipe_hash, seed, loss, loss.<domain>...

    \b
    Example:
      recipes results runs --output results.csv
    """
    from recipes.results import gather_results, write_table

    rows, columns = gather_results(runs_dir)
    write_table(rows, columns, output)
    click.echo(f"{len(rows)} runs -> {output}")


if __name__ == "__main__":
    main()
