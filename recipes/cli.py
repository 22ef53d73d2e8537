"""The `recipes` command: shapes, sweep, train, results."""

from __future__ import annotations

import warnings

import click

from recipes.sweep_config import SLURM_TIME, SweepCommand, count_list, default_recipe, int_list, split_list
from synthscale.cli import COUNT, emit_json, json_options, stage_group, usage_error
from synthscale.config import resolved_config_text


def _quiet_library_notices() -> None:
    """Notices from libraries that do not apply here: megatron-core's optional GPU kernels,
    NeMo-Run's starlette import."""
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
    warnings.filterwarnings("ignore", message=".*pad token id in the tokenizer collides.*")
    warnings.filterwarnings("ignore", message=".*starlette.middleware.wsgi is deprecated.*")


@stage_group()
def main():
    """Train Llama-3-style models over a grid of size N, tokens D and mixture, and tabulate the losses.

    \b
    Backends: `megatron` (default; megatron-core's GPTModel on TP x PP x DP ranks: CPU processes
    over gloo for the tiny shapes, GPUs otherwise) and `bridge` (Megatron-Bridge in the
    nvcr.io/nvidia/nemo container). A local run of one rank trains in one of the sweep's worker
    processes; everything else outside this process is launched with NeMo-Run.
    Each run folder RUNS_DIR/<run_id>/ holds run.json (shape, recipe, plan, blend sha256, eval
    domains), sweep.config.yaml (the resolved config of the sweep that wrote it),
    launcher.<executor>.txt (local, docker), bridge/*.yaml (Bridge backend), checkpoints/, and at
    the end results.json, the same for both backends: run_id, backend, model, N (non-embedding
    parameters), D (tokens trained), D_requested, mixture, synthetic_fraction, family, generator,
    recipe_hash, seed, eval_domains, blend {name, path, identity_sha256, weights, data_path,
    sources {role, family, generator}}, eval {domain: {loss, tokens, prefix}}, eval_identity
    {sha256, definition: {domain: data sha256, windows, samples, tokens}}, loss
    (token-weighted mean over domains), final_train_loss, train_loss_curve [[step, loss], ...],
    wall_time_s, train_time_s, tokens_per_s, versions, shape, recipe, plan, layout, provenance.
    Every sweep also keeps its resolved config as RUNS_DIR/_sweeps/<UTC time>-<hash>.yaml.

    \b
    Example, a tiny CPU sweep (blends made with --seq-length 128) and its table:
      recipes sweep --sizes tiny-xs,tiny-s --tokens 1M,2M --blends blends/hq_33.yaml \\
          --eval wiki=data/wiki_eval --output runs
      recipes results runs --output results.csv
    Example, the paper's grid from a config file (prints the sbatch scripts):
      recipes sweep --config recipes/examples/sweep.paper.yaml --set execution.slurm_account=ACC
    """
    _quiet_library_notices()


@main.command()
@json_options
def shapes(as_json, json_file):
    """List the model shapes with their exact non-embedding parameter count N.

    \b
    Example:
      recipes shapes
      recipes shapes --json
    """
    from recipes.shapes import FFN_DIM_MULTIPLIER, FFN_MULTIPLE_OF, describe_shapes

    rows = describe_shapes()
    emit_json(rows, as_json, json_file)
    if as_json:
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


@main.command(cls=SweepCommand)
@click.option("--sizes", type=str, multiple=True, required=True, callback=split_list,
              help="Shape names, comma-separated or repeated (see `recipes shapes`).")
@click.option("--tokens", type=str, multiple=True, required=True, callback=count_list, metavar="COUNT",
              help="Training tokens D per run: 5B, 200M, 1e9 (comma-separated or repeated).")
@click.option("--blends", type=str, multiple=True, required=True, callback=split_list,
              help="BLEND.yaml files from `data_prep blend` (comma-separated or repeated).")
@click.option("--eval", "evals", type=str, multiple=True, required=True, metavar="NAME=PREFIX",
              help="An evaluation domain: PREFIX of .bin/.idx (repeat).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="RUNS_DIR: one folder per run.")
@click.option("--backend", type=click.Choice(["megatron", "bridge"]), default="megatron", show_default=True,
              help="megatron: megatron-core's GPTModel on TP x PP x DP ranks (CPU processes over gloo for the "
                   "tiny shapes, GPUs otherwise); bridge: Megatron-Bridge in the NeMo container.")
@click.option("--executor", type=click.Choice(["local", "slurm", "docker"]), default="local", show_default=True)
@click.option("--recipe", "recipe_name", default=None, help="Training recipe: paper (Table 2) or cpu-tiny [default: cpu-tiny when every size is a CPU shape, else paper].")
@click.option("--seq-length", type=click.IntRange(min=1), default=None, help="Override the recipe's sequence length.")
@click.option("--global-batch-size", type=click.IntRange(min=1), default=None, help="Override the recipe's global batch (sequences).")
@click.option("--micro-batch-size", type=click.IntRange(min=1), default=None, help="Override the recipe's micro batch.")
@click.option("--peak-lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Override the recipe's peak learning rate (tiny models learn faster at ~1e-3).")
@click.option("--checkpoint-interval", type=click.IntRange(min=1), default=None, help="Optimizer steps between checkpoints.")
@click.option("--eval-max-tokens", type=COUNT, default=None, help="Evaluate on at most this many tokens per domain.")
@click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True, help="Nodes (Slurm).")
@click.option("--gpus-per-node", type=click.IntRange(min=1), default=None,
              help="Ranks per node: GPUs, or CPU processes for megatron's tiny shapes; world size = nodes x this "
                   "= TP x PP x DP [default: 8 for bridge; TP x PP (one data-parallel replica) for megatron].")
@click.option("--tensor-parallel", type=click.IntRange(min=1), default=None, help="TP size [default: per shape].")
@click.option("--pipeline-parallel", type=click.IntRange(min=1), default=None, help="PP size [default: per shape; 3B uses 2].")
@click.option("--container-image", default=None, help="Image with synthscale on the NeMo container (containers/Dockerfile) [default: Slurm tasks run in this Python environment, as on a cluster with a shared venv; docker: synthscale-nemo:26.08].")
@click.option("--slurm-account", default=None)
@click.option("--slurm-partition", default=None)
@click.option("--slurm-time", type=SLURM_TIME, default="04:00:00", show_default=True, help="Time limit per job; a run longer than this continues in requeued jobs.")
@click.option("--slurm-max-requeues", type=click.IntRange(min=0), default=50, show_default=True, help="Requeues per array task (each needs progress).")
@click.option("--slurm-array-parallelism", type=click.IntRange(min=1), default=None, help="At most this many tasks of an array at once (%N).")
@click.option("--mount", "mounts", type=str, multiple=True, metavar="SRC:DST", help="Extra container mount (repeat).")
@click.option("--seeds", type=str, multiple=True, callback=int_list, metavar="INT",
              help="Train every run once per seed, e.g. 1,2,3 [default: the recipe's seed].")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True, help="Local runs of one rank at once, each in its own process.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads per local run of one rank [default: 1 with --jobs > 1, else torch's or $SYNTHSCALE_TORCH_THREADS].")
@click.option("--dry-run/--no-dry-run", default=False, help="Write the run folders and print what would launch (sbatch scripts for Slurm); launch nothing.")
@click.option("--force", is_flag=True, default=False,
              help="When squeue cannot say which submitted tasks are still queued or running, launch every incomplete run anyway.")
@json_options
@click.pass_context
def sweep(ctx, sizes, tokens, blends, evals, output, backend, executor, recipe_name, seq_length, global_batch_size,
          micro_batch_size, peak_lr, checkpoint_interval, eval_max_tokens, nodes, gpus_per_node, tensor_parallel,
          pipeline_parallel, container_image, slurm_account, slurm_partition, slurm_time, slurm_max_requeues,
          slurm_array_parallelism, mounts, seeds, jobs, threads, dry_run, force, as_json, json_file):
    """Plan, write and launch one run per (size, tokens, blend); completed runs are skipped.

    Train iterations = tokens / (global batch x sequence length); a run is refused when that is
    under 50 steps or when the blend would read a source more than its max_epochs. The blend's
    seq_length must be the recipe's (cpu-tiny: 128, paper: 4096) or --seq-length. With --dry-run
    the run folders (run.json, Bridge YAML, launcher.*.txt) are written, nothing runs.
    On Slurm the runs not complete go in one job array per resource group (RUNS_DIR/_arrays/*:
    runs.txt, sbatch.sh); each task requeues itself until its run is complete.
    A rerun skips completed runs; it scores them again, from the final checkpoint with no
    retraining, on any --eval domain added since or scored otherwise (another --eval-max-tokens).
    It leaves alone runs whose Slurm array task is still queued or running (squeue, per task),
    refuses a layout other than the one a queued or unfinished run was submitted with, and, when
    squeue cannot tell, submits nothing unless --force. Every check runs before anything is written.

    Every option can come from `--config FILE.yaml`, whose keys are the option names, optionally
    grouped in the sections grid (sizes, tokens, blends, seeds), evaluation (eval,
    eval_max_tokens), training (recipe, seq_length, batch sizes, peak_lr, checkpoint_interval) and
    execution (the rest); list options take YAML lists. `--set training.peak_lr=1e-3` overrides
    one value; a flag beats both. `--print-config` shows the resolved config; each sweep writes
    it to RUNS_DIR/_sweeps/<UTC time>-<hash>.yaml and to every run folder it writes
    (RUN/sweep.config.yaml). It is not part of any run id.
    With --json, the planned runs (run_id, run_dir, status) go to stdout and the log to stderr.

    \b
    Example (a blend made with `data_prep blend ... --seq-length 128`), megatron-core on CPU, 2 runs
    of one rank at a time:
      recipes sweep --sizes tiny-xs --tokens 1M --blends blends/hq_33.yaml \\
          --eval wiki=data/wiki_eval --output runs --jobs 2
    Example, tensor parallel 2 on 2 CPU processes (torchrun through NeMo-Run):
      recipes sweep --sizes tiny-xs --tokens 1M --blends blends/hq_33.yaml \
          --eval wiki=data/wiki_eval --output runs --tensor-parallel 2
    Example, the paper's 1B model for 5B tokens on 2 Slurm nodes (prints the sbatch script):
      recipes sweep --sizes 1B --tokens 5B --blends blends/hq_33.yaml --eval wiki=data/wiki \\
          --backend bridge --executor slurm --nodes 2 --slurm-account ACC --output runs --dry-run
    Example, a config file with one value changed, printed before it runs:
      recipes sweep --config recipes/examples/sweep.paper.yaml --set training.peak_lr=1e-3 --print-config
    """
    from recipes.launchers import ExecutorSettings
    from recipes.recipe import get_recipe
    from recipes.run_spec import parse_eval_domains
    from recipes.sweep import SweepRequest, execute_sweep, sweep_summary

    recipe = get_recipe(recipe_name or default_recipe(backend, sizes)).with_overrides(
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
        container_image=container_image,
        slurm_account=slurm_account,
        slurm_partition=slurm_partition,
        slurm_time=slurm_time,
        extra_mounts=tuple(mounts),
        max_requeues=slurm_max_requeues,
        array_parallelism=slurm_array_parallelism,
    )
    request = SweepRequest(
        sizes=sizes,
        tokens=tokens,
        blends=blends,
        backend=backend,
        recipe=recipe,
        eval_domains=parse_eval_domains(evals),
        output=output,
        executor=settings,
        eval_max_tokens=eval_max_tokens,
        tensor_parallel=tensor_parallel,
        pipeline_parallel=pipeline_parallel,
        micro_batch_size=micro_batch_size,
        seeds=seeds,
        jobs=jobs,
        threads=threads,
        config_text=resolved_config_text(ctx),
    )
    log = lambda line: click.echo(line, err=as_json)  # noqa: E731 -- stdout is the JSON's with --json
    planned, record = execute_sweep(request, dry_run_only=dry_run, echo=log, force=force)
    log(f"{len(planned)} runs in {output} (config: {record})")
    emit_json(sweep_summary(planned, record), as_json, json_file)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads [default: torch's, or $SYNTHSCALE_TORCH_THREADS].")
@json_options
def train(run_dir, threads, as_json, json_file):
    """Train (or resume after a kill) and evaluate one run folder of one rank in this process, with
    megatron-core on CPU; writes results.json. SIGTERM or SIGUSR1 saves a checkpoint and stops; run
    it again to continue. A run of several ranks starts under torchrun instead
    (`torchrun --nproc-per-node N -m recipes.megatron.entry --run-dir RUN`).

    With --json, the run's record (its results.json) goes to stdout.

    \b
    Example:
      recipes train runs/tiny-xs-1.05M-0123456789-hq_33
    """
    from recipes.job import StopSignals
    from recipes.megatron.entry import run_single_rank
    from synthscale.units import format_count

    record = run_single_rank(run_dir, threads=threads, stop=StopSignals().install())
    domains = ", ".join(f"{k} {v['loss']:.4f}" for k, v in record["eval"].items())
    click.echo(f"{record['run_id']}: loss {record['loss']:.4f} ({domains}); D={format_count(record['D'])}", err=as_json)
    emit_json(record, as_json, json_file)


def _table_output(ctx, param, value):
    from recipes.results import table_format
    from synthscale.errors import SynthscaleError

    try:
        table_format(value)
    except SynthscaleError:
        raise usage_error(f"use a .csv or .parquet name, got {value!r}", "--output") from None
    return value


@main.command()
@click.argument("runs_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), callback=_table_output,
              help="results.csv or results.parquet")
@json_options
def results(runs_dir, output, as_json, json_file):
    """Gather every run's results.json into one table (one row per run).

    Columns: run_id, model, N, D, mixture, synthetic_fraction, family, generator, backend,
    recipe_hash, seed, loss, eval_identity, loss_domains, loss.<domain>... `loss` is the
    token-weighted mean over the domains every run was scored on (loss_domains), and
    eval_identity the sha256 of their evaluation definition (data, windows, tokens) in that run:
    two rows' losses compare only when their eval_identity is the same. With --json the rows
    also go to stdout.

    \b
    Example:
      recipes results runs --output results.csv
    """
    from recipes.results import gather_results, write_table

    rows, columns = gather_results(runs_dir)
    write_table(rows, columns, output)
    click.echo(f"{len(rows)} runs -> {output}", err=as_json)
    identities = sorted({row["eval_identity"] for row in rows})
    if len(identities) > 1:
        click.echo(f"warning: {len(identities)} evaluation definitions ({', '.join(i[:12] for i in identities)}) "
                   f"in one table: compare `loss` only between rows with the same eval_identity", err=True)
    emit_json(rows, as_json, json_file)


if __name__ == "__main__":
    main()
