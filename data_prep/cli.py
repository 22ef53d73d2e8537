"""The `data_prep` command: tokenize, merge, blend, grid, blend-check.

Conventions (shared by every stage, see synthscale.cli): `-h` everywhere; `--json` prints
machine output on stdout and `--json-file PATH` writes it to a file; `--workers 0` means all
cores; a bad flag value exits 2, bad data or a failed check exits 1 with a one-line `Error:`
(`--debug` or SYNTHSCALE_DEBUG=1 shows the traceback).

One meaning per option: `--data NAME=PREFIX` declares a source (blend and grid alike);
`--synthetic NAME` and `--natural NAME` set a declared source's role.
"""

from __future__ import annotations

from pathlib import Path

import click

from synthscale.cli import (
    COUNT,
    emit_json,
    json_options,
    named_values_callback,
    option_callback,
    parse_named_values,
    parse_percentages,
    resolve_workers,
    stage_group,
    workers_option,
)
from synthscale.errors import SynthscaleError


def _names(option: str):
    """Callback: repeated NAME (a source declared with --data); NAME=... is a usage error naming --data."""

    def parse(values):
        for value in values:
            if "=" in value:
                raise SynthscaleError(f"{option} takes the NAME of a --data source, got {value!r} "
                                      f"(declare the source with --data {value})")
        return frozenset(values)

    return option_callback(parse)


def _weights(values):
    from data_prep.blend import parse_weights

    return parse_weights(values)


@stage_group()
def main():
    """Tokenize documents into Megatron indexed datasets and mix them into token-exact blends.

    `--data NAME=PREFIX` declares a source wherever sources are mixed (blend, grid);
    `--synthetic NAME` / `--natural NAME` set its role (by default a source whose documents
    name a generator, as `generation run` writes them, is synthetic).

    \b
    Example, from JSONL to a 33%-synthetic blend:
      data_prep tokenize 'web/*.jsonl.gz' --output data/cc --tokenizer llama3:tokenizer.model
      data_prep tokenize 'synth/hq/*.jsonl' --output data/hq --tokenizer llama3:tokenizer.model
      data_prep blend --data cc=data/cc --data hq=data/hq --synthetic hq \\
          --weights cc=0.67,hq=0.33 --tokens 5B --seq-length 4096 --output blends/hq-33.yaml
      data_prep blend-check blends/hq-33.yaml
    Example, a source of many shards (one tokenize per shard, on as many machines as you like):
      data_prep blend --data cc='data/cc/shard-*' --data hq=data/hq ...   # a glob, or a file listing prefixes
      data_prep merge 'data/cc/shard-*' --output data/cc                   # or merge them into one dataset
    """


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", "-o", "output", required=True, help="Output PREFIX: writes PREFIX.bin/.idx/.manifest.json.")
@click.option("--tokenizer", required=True, help="llama3:PATH (Meta's tokenizer.model), tiktoken:NAME_OR_PATH or hf:PATH (tokenizer.json).")
@click.option("--text-key", default="text", show_default=True, help="JSON field / Parquet column holding the text.")
@workers_option(help="Worker processes (0: all cores).")
@click.option("--skip-invalid", is_flag=True, help="Skip and count bad records instead of stopping at the first one.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@json_options
def tokenize(inputs, output, tokenizer, text_key, workers, skip_invalid, no_progress, as_json, json_file):
    """Tokenize JSONL (.jsonl, .gz, .zst) and Parquet INPUTS (paths or globs).

    Every document gets the tokenizer's end-of-document token appended. Outputs appear
    atomically: an interrupted run leaves no complete-looking PREFIX.bin/.idx. `--json` prints
    the manifest (PREFIX.manifest.json).

    \b
    Example:
      data_prep tokenize 'docs/*.jsonl.zst' --output data/natural \\
          --tokenizer llama3:/models/llama3/tokenizer.model --workers 0
    """
    from data_prep.tokenize import TokenizeConfig, tokenize as run_tokenize

    config = TokenizeConfig(tuple(inputs), output, tokenizer, text_key, resolve_workers(workers), skip_invalid,
                            show_progress=not no_progress)
    manifest = run_tokenize(config)
    emit_json(manifest, as_json, json_file)
    if not as_json:
        skipped = {k: v for k, v in manifest["skipped"].items() if v}
        click.echo(
            f"wrote {manifest['documents']:,} documents, {manifest['tokens']:,} tokens ({manifest['dtype']}) "
            f"to {output}.bin/.idx" + (f"; skipped {skipped}" if skipped else "")
        )


WHERE_HELP = ("PREFIX is a tokenized dataset, a glob over prefixes ('data/cc/shard-*') or a file listing "
              "prefixes, one a line: the shards make one source")


def source_options(func):
    """--data, --synthetic, --natural, --family, --generator: the sources and what they are (blend and grid)."""
    options = [
        click.option("--data", "data", multiple=True, required=True, metavar="NAME=PREFIX",
                     callback=named_values_callback("PREFIX"), help=f"Declare a source (repeat). {WHERE_HELP}."),
        click.option("--synthetic", multiple=True, metavar="NAME", callback=_names("--synthetic"),
                     help="Mark the --data source NAME as synthetic (repeat) [default: sources whose documents "
                          "name a generator]."),
        click.option("--natural", multiple=True, metavar="NAME", callback=_names("--natural"),
                     help="Mark the --data source NAME as natural text (repeat)."),
        click.option("--family", "families", multiple=True, metavar="NAME=FAMILY",
                      callback=named_values_callback("FAMILY"),
                     help="Set a synthetic source's family (hq, qa, textbook, ...) [default: the recipe its "
                          "manifest records]."),
        click.option("--generator", "generators", multiple=True, metavar="NAME=GENERATOR",
                     callback=named_values_callback("GENERATOR"),
                     help="Set the generator recorded for a synthetic source [default: from its manifest]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _open_sources(data: dict[str, str]):
    from data_prep.sources import open_source

    return [open_source(name, where) for name, where in data.items()]


@main.command()
@source_options
@click.option("--weights", multiple=True, required=True, metavar="NAME=W[,NAME=W...]", callback=option_callback(_weights),
              help="Token fractions, summing to 1.")
@click.option("--tokens", required=True, type=COUNT, help="Training tokens D: 5e9, 5B, 200M.")
@click.option("--seq-length", required=True, type=click.IntRange(min=1), help="Training sequence length.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="BLEND.yaml to write.")
@click.option("--name", default=None, help="Blend name (default: the output file's stem).")
@click.option("--max-epochs", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Refuse a source read more times than this.")
@click.option("--normalize", is_flag=True, help="Rescale weights that do not sum to 1.")
@json_options
def blend(data, synthetic, natural, families, generators, weights, tokens, seq_length, output, name, max_epochs,
          normalize, as_json, json_file):
    """Write a blend: which datasets training reads, in what token proportions.

    `--json` prints the blend as written (the YAML's fields).

    \b
    Example (a third of 200M training tokens from hq):
      data_prep blend --data cc=data/cc --data hq=data/hq --synthetic hq \\
          --weights cc=0.67,hq=0.33 --tokens 200M --seq-length 4096 --output hq-33.yaml
    Example, sharded sources (a weight split across the shards by their tokens, accounted as a whole):
      data_prep blend --data cc='data/cc/shard-*' --data hq=hq-shards.txt --synthetic hq \\
          --weights cc=0.67,hq=0.33 --tokens 200M --seq-length 4096 --output hq-33.yaml
    """
    from data_prep.blend import make_blend

    spec = make_blend(name or Path(output).stem, _open_sources(data), weights, tokens, seq_length, synthetic,
                      max_epochs, normalize, natural, families, generators)
    spec = spec.save(output)
    emit_json(spec.to_dict(), as_json, json_file)
    if not as_json:
        _echo_accounting(spec, output)


def _echo_accounting(spec, output) -> None:
    click.echo(f"{output}: {spec.name}, {spec.tokens:,} tokens, synthetic {spec.synthetic_fraction:.1%}")
    for s in spec.sources:
        what = s.role if not s.synthetic else f"{s.family} by {s.generator or 'an unknown generator'}"
        if s.shards is not None:
            what += f", {len(s.shards):,} shards"
        click.echo(f"  {s.name:<16} weight {s.weight:.4f}  {s.tokens_requested:>15,} of "
                   f"{s.tokens_available:>15,} tokens  ({s.epochs:.3f} epochs)  {what}")


def _ratios(value):
    from data_prep.blend import PAPER_RATIOS_PCT

    return PAPER_RATIOS_PCT if value is None else parse_percentages(value, "--ratios")


@main.command()
@source_options
@click.option("--tokens", required=True, type=COUNT, help="Training tokens D: 5e9, 5B, 200M.")
@click.option("--seq-length", required=True, type=click.IntRange(min=1), help="Training sequence length.")
@click.option("--output-dir", "-o", required=True, type=click.Path(file_okay=False), help="Folder for the blend files.")
@click.option("--ratios", default=None, callback=option_callback(_ratios),
              help="Synthetic percentages, comma-separated [default: the paper's 0,0.5,1,2,5,10,15,20,33,50,67,100].")
@click.option("--max-epochs", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Refuse a source read more times than this.")
@json_options
def grid(data, synthetic, natural, families, generators, tokens, seq_length, output_dir, ratios, max_epochs,
         as_json, json_file):
    """Write one blend per synthetic ratio of the paper's grid and per synthetic source.

    Sources are declared with --data, as for `data_prep blend`: exactly one must be natural,
    the others synthetic (by --natural / --synthetic, or from their manifests). The 0% blend is
    the natural source alone, named after it; the others are SYNTH-<ratio>pct. `--json` prints
    the blends written (path, name, synthetic_fraction, family, generator).

    \b
    Example:
      data_prep grid --data cc=data/cc --data hq=data/hq --data qa=data/qa \\
          --natural cc --synthetic hq --synthetic qa \\
          --tokens 1B --seq-length 4096 --output-dir blends/ --ratios 0,33,67,100
    """
    from data_prep.blend import make_grid, split_roles

    natural_source, synthetic_sources = split_roles(_open_sources(data), synthetic, natural, families, generators)
    blends = make_grid(natural_source, synthetic_sources, tokens, seq_length, ratios, max_epochs, families,
                       generators)
    written = []
    for spec in blends:
        path = Path(output_dir) / f"{spec.name}.yaml"
        spec.save(path)
        written.append({"path": str(path), "name": spec.name, "synthetic_fraction": spec.synthetic_fraction,
                        "family": spec.family, "generator": spec.generator})
        if not as_json:
            what = f", {spec.family} by {spec.generator or 'an unknown generator'}" if spec.family else ""
            click.echo(f"{path}: synthetic {spec.synthetic_fraction:.1%}{what}")
    emit_json(written, as_json, json_file)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", "-o", "output", required=True, help="Output PREFIX: writes PREFIX.bin/.idx/.manifest.json.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--no-verify", is_flag=True,
              help="Do not check each part's .bin/.idx against its manifest's sha256s (faster; the manifest says so).")
@json_options
def merge(inputs, output, no_progress, no_verify, as_json, json_file):
    """Merge tokenized INPUTS (prefixes, globs over prefixes, or files listing prefixes) into one.

    The data goes through megatron-core's IndexedDatasetBuilder.add_index, in the order given
    (a glob's matches in natural order): the result reads back as the concatenation of its
    parts. The manifest lists every part with its sha256s, their inputs, summed counts and
    origins. All parts must share one tokenizer, and each part's .bin/.idx must have the sha256s
    its manifest records (`--no-verify` skips this). Written atomically, the manifest last.
    `--json` prints the manifest.

    \b
    Example:
      data_prep merge 'data/cc/shard-*' --output data/cc
    """
    from data_prep.merge import merge as run_merge

    manifest = run_merge(list(inputs), output, show_progress=not no_progress, verify=not no_verify)
    emit_json(manifest, as_json, json_file)
    if not as_json:
        click.echo(f"merged {len(manifest['merged_from']):,} datasets: {manifest['documents']:,} documents, "
                   f"{manifest['tokens']:,} tokens ({manifest['dtype']}) to {output}.bin/.idx")


@main.command("blend-check")
@click.argument("blend_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--samples", type=COUNT, default=None, help="Samples to draw [default: tokens / seq_length].")
@click.option("--tolerance", default=0.005, show_default=True, type=click.FloatRange(min=0),
              help="Allowed absolute share error.")
@json_options
def blend_check(blend_file, samples, tolerance, as_json, json_file):
    """Build BLEND_FILE with megatron-core and compare realised to requested token shares.

    Exits 1 when a share is off by more than --tolerance (after printing the report).

    \b
    Example:
      data_prep blend-check blends/hq-33.yaml --json
    """
    from data_prep.blend_spec import BlendSpec
    from data_prep.megatron_blend import realised_shares

    report = realised_shares(BlendSpec.load(blend_file), samples)
    report["tolerance"] = tolerance
    report["ok"] = report["max_abs_error"] <= tolerance
    emit_json(report, as_json, json_file)
    if not as_json:
        click.echo(f"{report['blend']}: {report['samples']:,} samples of {report['seq_length']} tokens")
        click.echo(f"  {'source':<16} {'requested':>10} {'realised':>10} {'error':>8}")
        for row in report["sources"]:
            name = row["name"] if row.get("shards") is None else f"{row['name']} ({row['shards']:,} shards)"
            click.echo(f"  {name:<16} {row['requested_share']:>10.4f} "
                       f"{row['realised_share']:>10.4f} {row['abs_error']:>8.4f}")
        if report["ok"]:
            click.echo("OK")
    if not report["ok"]:
        worst = max(report["sources"], key=lambda r: r["abs_error"])
        raise SynthscaleError(f"blend-check {blend_file}: source {worst['name']!r} realises "
                              f"{worst['realised_share']:.4f} of the tokens, asked {worst['requested_share']:.4f}: "
                              f"error {worst['abs_error']:.4f} exceeds --tolerance {tolerance:g}")
