"""The `data_prep` command: tokenize, merge, blend, grid, blend-check."""

from __future__ import annotations

import json
from pathlib import Path

import click

from synthscale.cli import friendly_errors
from synthscale.units import parse_count


def _count(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_count(value, f"--{param.name.replace('_', '-')}")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main():
    """Tokenize documents into Megatron indexed datasets and mix them into token-exact blends.

    \b
    Example, from JSONL to a 33%-synthetic blend:
      data_prep tokenize 'web/*.jsonl.gz' --output data/cc --tokenizer llama3:tokenizer.model
      data_prep tokenize 'synth/hq/*.jsonl' --output data/hq --tokenizer llama3:tokenizer.model
      data_prep blend --data cc=data/cc --data hq=data/hq --synthetic hq \\
          --weights cc=0.67,hq=0.33 --tokens 5B --seq-length 4096 --output blends/hq-33.yaml
      data_prep blend-check blends/hq-33.yaml

    \b
    A source can be many shards (one tokenize per shard, on as many machines as you like):
      data_prep blend --data cc='data/cc/shard-*' --data hq=data/hq ...   # a glob, or a file listing prefixes
      data_prep merge 'data/cc/shard-*' --output data/cc                   # or merge them into one dataset
    """


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", "-o", "output", required=True, help="Output PREFIX: writes PREFIX.bin/.idx/.manifest.json.")
@click.option("--tokenizer", required=True, help="llama3:PATH (Meta's tokenizer.model), tiktoken:NAME_OR_PATH or hf:PATH (tokenizer.json).")
@click.option("--text-key", default="text", show_default=True, help="JSON field / Parquet column holding the text.")
@click.option("--workers", "-w", default=1, show_default=True, type=click.IntRange(min=1), help="Worker processes (use the number of cores for speed).")
@click.option("--skip-invalid", is_flag=True, help="Skip and count bad records instead of stopping at the first one.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@friendly_errors
def tokenize(inputs, output, tokenizer, text_key, workers, skip_invalid, no_progress):
    """Tokenize JSONL (.jsonl, .gz, .zst) and Parquet INPUTS (paths or globs).

    Every document gets the tokenizer's end-of-document token appended. Outputs appear
    atomically: an interrupted run leaves no complete-looking PREFIX.bin/.idx.

    \b
    Example:
      data_prep tokenize 'docs/*.jsonl.zst' --output data/natural \\
          --tokenizer llama3:/models/llama3/tokenizer.model --workers 8
    """
    from data_prep.tokenize import TokenizeConfig, tokenize as run_tokenize

    config = TokenizeConfig(tuple(inputs), output, tokenizer, text_key, workers, skip_invalid,
                            show_progress=not no_progress)
    manifest = run_tokenize(config)
    skipped = {k: v for k, v in manifest["skipped"].items() if v}
    click.echo(
        f"wrote {manifest['documents']:,} documents, {manifest['tokens']:,} tokens ({manifest['dtype']}) "
        f"to {output}.bin/.idx" + (f"; skipped {skipped}" if skipped else "")
    )


def _named_values(values: tuple[str, ...], option: str) -> dict[str, str]:
    from data_prep.blend import parse_named

    out: dict[str, str] = {}
    for value in values:
        name, text = parse_named(value, option)
        if name in out:
            raise ValueError(f"{option}: {name!r} is given twice")
        out[name] = text
    return out


def identity_options(func):
    """--family and --generator: set what the manifests say a source is (shared by blend and grid)."""
    func = click.option("--generator", "generators", multiple=True, metavar="NAME=GENERATOR",
                        help="Set the generator recorded for a synthetic source [default: from its manifest].")(func)
    func = click.option("--family", "families", multiple=True, metavar="NAME=FAMILY",
                        help="Set a synthetic source's family (hq, qa, textbook, ...) [default: the recipe its "
                             "manifest records].")(func)
    return func


def _datasets(data: tuple[str, ...], option: str = "--data"):
    from data_prep.blend import parse_named
    from data_prep.sources import open_source

    return [open_source(*parse_named(item, option)) for item in data]


WHERE_HELP = ("PREFIX is a tokenized dataset, a glob over prefixes ('data/cc/shard-*') or a file listing "
              "prefixes, one a line: the shards make one source")


@main.command()
@click.option("--data", "data", multiple=True, required=True, metavar="NAME=PREFIX",
              help=f"A source (repeat). {WHERE_HELP}.")
@click.option("--weights", multiple=True, required=True, metavar="NAME=W[,NAME=W...]", help="Token fractions, summing to 1.")
@click.option("--synthetic", multiple=True, metavar="NAME", help="Mark a source as synthetic (repeat) [default: sources whose documents name a generator].")
@click.option("--natural", multiple=True, metavar="NAME", help="Mark a source as natural text (repeat).")
@click.option("--tokens", required=True, callback=_count, help="Training tokens D: 5e9, 5B, 200M.")
@click.option("--seq-length", required=True, type=click.IntRange(min=1), help="Training sequence length.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="BLEND.yaml to write.")
@click.option("--name", default=None, help="Blend name (default: the output file's stem).")
@click.option("--max-epochs", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Refuse a source read more times than this.")
@click.option("--normalize", is_flag=True, help="Rescale weights that do not sum to 1.")
@identity_options
@friendly_errors
def blend(data, weights, synthetic, natural, tokens, seq_length, output, name, max_epochs, normalize, families,
          generators):
    """Write a blend: which datasets training reads, in what token proportions.

    \b
    Example (a third of 200M training tokens from hq):
      data_prep blend --data cc=data/cc --data hq=data/hq --synthetic hq \\
          --weights cc=0.67,hq=0.33 --tokens 200M --seq-length 4096 --output hq-33.yaml

    \b
    A sharded source (its weight split across its shards by their tokens, accounted as a whole):
      data_prep blend --data cc='data/cc/shard-*' --data hq=hq-shards.txt \\
          --weights cc=0.67,hq=0.33 --tokens 200M --seq-length 4096 --output hq-33.yaml
    """
    from data_prep.blend import make_blend, parse_weights

    spec = make_blend(name or Path(output).stem, _datasets(data), parse_weights(weights), tokens,
                      seq_length, set(synthetic), max_epochs, normalize, set(natural),
                      _named_values(families, "--family"), _named_values(generators, "--generator"))
    spec.save(output)
    _echo_accounting(spec, output)


def _echo_accounting(spec, output) -> None:
    click.echo(f"{output}: {spec.name}, {spec.tokens:,} tokens, synthetic {spec.synthetic_fraction:.1%}")
    for s in spec.sources:
        what = s.role if not s.synthetic else f"{s.family} by {s.generator or 'an unknown generator'}"
        if s.shards is not None:
            what += f", {len(s.shards):,} shards"
        click.echo(f"  {s.name:<16} weight {s.weight:.4f}  {s.tokens_requested:>15,} of "
                   f"{s.tokens_available:>15,} tokens  ({s.epochs:.3f} epochs)  {what}")


@main.command()
@click.option("--natural", required=True, metavar="NAME=PREFIX", help=f"The natural corpus. {WHERE_HELP}.")
@click.option("--synthetic", "synthetic", multiple=True, required=True, metavar="NAME=PREFIX",
              help="A synthetic corpus (repeat for several); PREFIX as for --natural.")
@click.option("--tokens", required=True, callback=_count, help="Training tokens D: 5e9, 5B, 200M.")
@click.option("--seq-length", required=True, type=click.IntRange(min=1))
@click.option("--output-dir", "-o", required=True, type=click.Path(file_okay=False), help="Folder for the blend files.")
@click.option("--ratios", default=None, help="Synthetic percentages, comma-separated [default: the paper's 0,0.5,1,2,5,10,15,20,33,50,67,100].")
@click.option("--max-epochs", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True))
@identity_options
@friendly_errors
def grid(natural, synthetic, tokens, seq_length, output_dir, ratios, max_epochs, families, generators):
    """Write one blend per synthetic ratio of the paper's grid (and per synthetic corpus).

    \b
    Example:
      data_prep grid --natural cc=data/cc --synthetic hq=data/hq --synthetic qa=data/qa \\
          --tokens 1B --seq-length 4096 --output-dir blends/ --ratios 0,33,67,100
    """
    from data_prep.blend import PAPER_RATIOS_PCT, make_grid

    ratio_list = PAPER_RATIOS_PCT
    if ratios:
        try:
            ratio_list = tuple(float(r) for r in ratios.split(",") if r.strip())
        except ValueError:
            raise ValueError(f"--ratios: expected comma-separated percentages, got {ratios!r}") from None
    natural_ds, = _datasets((natural,), "--natural")
    synthetic_ds = _datasets(synthetic, "--synthetic")
    families, generators = _named_values(families, "--family"), _named_values(generators, "--generator")
    known = {d.name for d in synthetic_ds}
    for option, given in (("--family", families), ("--generator", generators)):
        if set(given) - known:
            raise ValueError(f"{option}: no --synthetic for {sorted(set(given) - known)} (synthetic: {sorted(known)})")
    blends = make_grid(natural_ds, synthetic_ds, tokens, seq_length, ratio_list, max_epochs, families, generators)
    for spec in blends:
        path = Path(output_dir) / f"{spec.name}.yaml"
        spec.save(path)
        what = f", {spec.family} by {spec.generator or 'an unknown generator'}" if spec.family else ""
        click.echo(f"{path}: synthetic {spec.synthetic_fraction:.1%}{what}")


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", "-o", "output", required=True, help="Output PREFIX: writes PREFIX.bin/.idx/.manifest.json.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@friendly_errors
def merge(inputs, output, no_progress):
    """Merge tokenized INPUTS (prefixes, globs over prefixes, or files listing prefixes) into one.

    The data goes through megatron-core's IndexedDatasetBuilder.add_index, in the order given
    (a glob's matches in natural order): the result reads back as the concatenation of its
    parts. The manifest lists every part with its sha256s, their inputs, summed counts and
    origins. All parts must share one tokenizer. Written atomically, the manifest last.

    \b
    Example:
      data_prep merge 'data/cc/shard-*' --output data/cc
    """
    from data_prep.merge import merge as run_merge

    manifest = run_merge(list(inputs), output, show_progress=not no_progress)
    click.echo(f"merged {len(manifest['merged_from']):,} datasets: {manifest['documents']:,} documents, "
               f"{manifest['tokens']:,} tokens ({manifest['dtype']}) to {output}.bin/.idx")


@main.command("blend-check")
@click.argument("blend_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--samples", type=click.IntRange(min=1), default=None, help="Samples to draw [default: tokens / seq_length].")
@click.option("--tolerance", default=0.005, show_default=True, help="Allowed absolute share error.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@friendly_errors
def blend_check(blend_file, samples, tolerance, as_json):
    """Build BLEND_FILE with megatron-core and compare realised to requested token shares.

    Exits 1 when a share is off by more than --tolerance.

    \b
    Example:
      data_prep blend-check blends/hq-33.yaml --json
    """
    from data_prep.blend_spec import BlendSpec
    from data_prep.megatron_blend import realised_shares

    report = realised_shares(BlendSpec.load(blend_file), samples)
    report["tolerance"] = tolerance
    report["ok"] = report["max_abs_error"] <= tolerance
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"{report['blend']}: {report['samples']:,} samples of {report['seq_length']} tokens")
        click.echo(f"  {'source':<16} {'requested':>10} {'realised':>10} {'error':>8}")
        for row in report["sources"]:
            name = row["name"] if row.get("shards") is None else f"{row['name']} ({row['shards']:,} shards)"
            click.echo(f"  {name:<16} {row['requested_share']:>10.4f} "
                       f"{row['realised_share']:>10.4f} {row['abs_error']:>8.4f}")
        click.echo("OK" if report["ok"] else f"FAILED: an error exceeds {tolerance}")
    if not report["ok"]:
        raise SystemExit(1)
