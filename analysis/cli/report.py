"""`analysis report`: the fits, findings and figures of a results table, as HTML, Markdown and JSON.

Its ~30 options can come from a YAML file (`--config report.yaml`), grouped in the sections
below for reading; `--set KEY=VALUE` overrides one value and `--print-config` shows the result.
The resolved configuration is written beside the report (REPORT/report.config.yaml), so
`analysis report --config REPORT/report.config.yaml` runs the same report again.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from analysis.cli.options import analysis_config, fit_options, law_option, load_table, run_fits
from analysis.core.defaults import DEFAULT_SMOOTHING, DOMAIN_BOOTSTRAP, LAW_NAMES
from synthscale.cli import COUNT, named_values_callback, usage_error
from synthscale.config import ConfigCommand, resolved_config, write_resolved_config

CONFIG_NAME = "report.config.yaml"

# Sections of the report's config file (names only: `fits: {grid: coarse}` sets --grid). The names
# differ from every option's, as the config reader requires.
SECTIONS = {
    "input": ("results", "output", "label", "target", "baseline", "pool_conditions"),
    "fits": ("laws", "grid", "shared_exponents", "skip_unfittable", "speedup_law"),
    "uncertainty": ("bootstrap", "seed", "confidence", "workers"),
    "validation": ("holdout_joint", "extrapolate_n", "extrapolate_d"),
    "plateau": ("plateau_tol_abs", "plateau_tol_rel", "plateau_max_multiple"),
    "per_domain": ("domains", "domain_bootstrap", "domain_grid", "domain_laws"),
    "unigram": ("unigram_train", "unigram_test", "smoothing"),
    "synthetic_corpora": ("corpora",),
}


class ReportCommand(ConfigCommand):
    """`analysis report`: a ConfigCommand whose resolved configuration is grouped in SECTIONS."""

    def resolved(self, ctx: click.Context) -> dict:
        flat = resolved_config(ctx)
        for name in ("unigram_train", "corpora"):  # the callbacks made {NAME: PATH}: back to NAME=PATH
            flat[name] = [f"{k}={v}" for k, v in (flat.get(name) or {}).items()]
        grouped = {section: {key: flat.pop(key) for key in keys if key in flat} for section, keys in SECTIONS.items()}
        assert not flat, f"report options missing from SECTIONS: {sorted(flat)}"
        return grouped


@click.command(cls=ReportCommand)
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Folder for the report.")
@law_option(("data", "model", "joint"), "Laws to fit (rectified: B / (D_l + D^beta) + E at each N, its comparison "
                                        "with the data law and the plateau D_p).")
@click.option("--baseline", help="Baseline mixture (default: the one with synthetic_fraction 0).")
@click.option("--speedup-law", type=click.Choice(["data", "joint"]), default="data", show_default=True,
              help="Speed-ups from the per-N data-law fits (the paper) or the joint fits.")
@click.option("--extrapolate-N", "extrapolate_n", type=COUNT, multiple=True,
              help="Size to predict at (e.g. 400B); repeatable.")
@click.option("--extrapolate-D", "extrapolate_d", type=COUNT, multiple=True,
              help="Budget to predict at (e.g. 8T); repeatable.")
@click.option("--holdout-joint", is_flag=True, help="Also validate the joint law on the largest D (a full grid fit per mixture).")
@click.option("--unigram-train", multiple=True, metavar="NAME=PREFIX", callback=named_values_callback("PREFIX"),
              help="Training set (.bin/.idx prefix) for unigram diagnostics; repeatable. Needs synthscale[data_prep].")
@click.option("--unigram-test", metavar="PREFIX", help="Test set for unigram diagnostics.")
@click.option("--smoothing", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_SMOOTHING,
              show_default=True, help="Additive smoothing of KL.")
@click.option("--domains/--no-domains", default=True, show_default=True,
              help="Also fit each loss.<domain> column of the table (cheaper settings, below).")
@click.option("--domain-bootstrap", type=click.IntRange(min=0), default=None,
              help=f"Bootstrap resamples of the per-domain fits [default: the smaller of --bootstrap and "
                   f"{DOMAIN_BOOTSTRAP}].")
@click.option("--domain-grid", type=click.Choice(["full", "coarse"]), default="coarse", show_default=True,
              help="Starting grid of the per-domain fits.")
@click.option("--domain-law", "domain_laws", type=click.Choice(LAW_NAMES), multiple=True,
              help="Laws fitted per domain [default: joint (E and best ratio per domain) when --law has it, "
                   "else the --law laws].")
@click.option("--label", default=None, help='Label of the report and summary, e.g. "tiny-scale demonstration".')
@click.option("--corpus", "corpora", multiple=True, metavar="NAME=DIR", callback=named_values_callback("DIR"),
              help="A synthetic corpus (a `generation run` output folder) whose recipe, generator and fidelity the "
                   "report lists; repeatable.")
@fit_options
@click.pass_context
def report(ctx, results, output, laws, baseline, speedup_law, extrapolate_n, extrapolate_d, holdout_joint,
           unigram_train, unigram_test, smoothing, domains, domain_bootstrap, domain_grid, domain_laws, label, corpora,
           target, bootstrap, seed, confidence, workers, shared_exponents, grid, skip_unfittable, plateau_tol_abs,
           plateau_tol_rel, plateau_max_multiple, pool_conditions):
    """Write report.html (self-contained), report.md with figures/, fits.json and report.config.yaml to OUTPUT.

    Runs of different conditions (backend, recipe_hash) are analysed apart (--pool-conditions
    fits them together); mixtures are grouped by their family and generator columns. Each
    loss.<domain> column is fitted too, with --domain-bootstrap resamples on the --domain-grid.
    OUTPUT/summary.txt holds a summary of at most five lines, also printed at the end.

    Options may come from a YAML file (--config), in sections for reading (input, fits,
    uncertainty, validation, plateau, per_domain, unigram, synthetic_corpora); `--print-config`
    shows them all. OUTPUT/report.config.yaml is the configuration the report ran with.

    \b
    Example:
      analysis report results.csv --output report/ --extrapolate-D 8T --workers 0
      analysis report --config report.yaml --set uncertainty.bootstrap=200 --print-config
    """
    from analysis.report.render import write_report
    from analysis.report.cache import inputs_key, reusable

    if bool(unigram_train) != bool(unigram_test):
        raise click.UsageError("--unigram-train and --unigram-test go together")
    key = inputs_key(results, resolved_config(ctx)) if Path(results).is_file() else None
    if key is not None and reusable(output, key):
        click.echo(f"reused {output}: made from the same results table, settings and inputs, nothing refitted "
                   f"(inputs key {key[:12]}; remove the folder to fit again)")
        click.echo("summary:")
        click.echo((Path(output) / "summary.txt").read_text(encoding="utf-8").rstrip("\n"))
        return
    config = analysis_config(grid, laws=tuple(laws), bootstrap=bootstrap, seed=seed, confidence=confidence,
                             workers=workers, shared_exponents=shared_exponents, skip_unfittable=skip_unfittable,
                             target=target, baseline=baseline, speedup_law=speedup_law, holdout_joint=holdout_joint,
                             plateau_tol_abs=plateau_tol_abs, plateau_tol_rel=plateau_tol_rel,
                             plateau_max_multiple=plateau_max_multiple, extrapolate_N=tuple(map(float, extrapolate_n)),
                             extrapolate_D=tuple(map(float, extrapolate_d)))
    table = load_table(results, target)
    if baseline is not None and baseline not in table.mixtures:
        raise usage_error(f"{baseline!r} is not a mixture of the table; mixtures: {table.mixtures}", "--baseline")
    domain_tables, domain_config = {}, None
    if domains:
        domain_tables = _domain_tables(results, table, target)
        domain_config = _domain_config(config, domain_bootstrap, domain_grid, domain_laws)
    from analysis.data.corpora import read_corpora

    corpus_rows = read_corpora(corpora)
    unigram = None
    if unigram_train:  # before the fits: a missing token file or extra should not wait for them
        from analysis.data.unigram import unigram_diagnostics

        unigram = unigram_diagnostics(unigram_train, unigram_test, smoothing=smoothing)
    aset = run_fits(table, config, pool_conditions, domain_tables=domain_tables, domain_config=domain_config,
                    label=label)
    paths = write_report(aset, output, unigram, corpus_rows, config_file=Path(output) / CONFIG_NAME, inputs_key=key)
    write_resolved_config(ctx, Path(output) / CONFIG_NAME)
    for note in aset.all_notes():
        if note not in table.notes:
            click.echo(f"note: {note}", err=True)
    click.echo(f"wrote {paths['html']}, {paths['markdown']}, {paths['json']}, {paths['summary']}, "
               f"{Path(output) / CONFIG_NAME}")
    click.echo("summary:")
    click.echo(paths["summary"].read_text(encoding="utf-8").rstrip("\n"))


def _domain_tables(results: str, table, target: str) -> dict:
    """{loss.<domain>: table} for every domain column other than the fitted one; unreadable ones noted."""
    from analysis.data.table import TableError, read_results

    out = {}
    for domain in table.domains:
        column = f"loss.{domain}"
        if column == target:
            continue
        try:
            out[column] = read_results(results, column)
        except TableError as exc:
            click.echo(f"note: domain {domain!r} not fitted: {exc}", err=True)
    return out


def _domain_config(config, domain_bootstrap: int | None, domain_grid: str, domain_laws: tuple[str, ...]):
    from analysis.core.settings import COARSE_GRID
    from analysis.multi import domain_settings
    from synthscale.errors import SynthscaleError

    resamples = min(config.bootstrap, DOMAIN_BOOTSTRAP) if domain_bootstrap is None else domain_bootstrap
    fit = replace(config.fit, grid=COARSE_GRID if domain_grid == "coarse" else None)
    laws = tuple(domain_laws) or (("joint",) if "joint" in config.laws else config.laws)
    speedup_law = config.speedup_law if config.speedup_law in laws else ("joint" if "joint" in laws else "data")
    try:
        return replace(domain_settings(config, config.target, resamples, fit), laws=laws, speedup_law=speedup_law)
    except SynthscaleError as exc:
        raise usage_error(str(exc), "--domain-law") from None
