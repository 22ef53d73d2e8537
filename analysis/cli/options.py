"""What `analysis fit` and `analysis report` share: their options, reading the table, running the fits.

Nothing heavy is imported at module level (numpy, scipy, pandas and matplotlib load inside the
commands), so that `analysis --help` and every `analysis SUB --help` start in a blink.
"""

from __future__ import annotations

import click

from analysis.core.defaults import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, LAW_NAMES, MAX_MULTIPLE, TOL_ABS, TOL_REL
from synthscale.cli import usage_error, workers_option
from synthscale.errors import SynthscaleError

POSITIVE = click.FloatRange(min=0, min_open=True)


def fit_options(func):
    """Options shared by `fit` and `report`."""
    options = [
        click.option("--target", default="loss", show_default=True, help="Column to fit: loss or loss.<domain>."),
        click.option("--bootstrap", "bootstrap", type=click.IntRange(min=0), default=DEFAULT_RESAMPLES,
                     show_default=True, help="Bootstrap resamples of runs (0: no intervals)."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the bootstrap."),
        click.option("--confidence", type=click.FloatRange(0.5, 1.0, max_open=True), default=DEFAULT_CONFIDENCE,
                     show_default=True, help="Coverage of the percentile intervals, in [0.5, 1)."),
        workers_option(help="Worker processes for the grid fits and the bootstrap (0: all cores)."),
        click.option("--shared-exponents", is_flag=True, help="Also fit each law with exponents shared across mixtures."),
        click.option("--grid", "grid", type=click.Choice(["full", "coarse"]), default="full", show_default=True,
                     help="Starting grid: full (Hoffmann et al., 4,500 joint starts) or coarse (243, a quick look)."),
        click.option("--skip-unfittable", is_flag=True,
                     help="List fits lacking points and go on, instead of stopping with an error."),
        click.option("--plateau-tol", "plateau_tol_abs", type=POSITIVE, default=TOL_ABS, show_default=True,
                     help="Rectified law: the plateau D_p is where doubling D lowers the predicted loss by less "
                          "than this many nats (from then on)."),
        click.option("--plateau-tol-rel", "plateau_tol_rel", type=POSITIVE, default=TOL_REL, show_default=True,
                     help="Rectified law: a second D_p, where doubling D lowers the predicted loss by less than this "
                          "share of the remaining reducible loss L(D) - E."),
        click.option("--plateau-max-multiple", type=click.FloatRange(min=1), default=MAX_MULTIPLE, show_default=True,
                     help="Rectified law: a D_p beyond this multiple of the largest budget is reported as not "
                          "identified."),
        click.option("--pool-conditions", is_flag=True,
                     help="Fit runs of different conditions (backend, recipe_hash) together; by default each "
                          "condition is analysed on its own."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def law_option(default: tuple[str, ...], help: str):
    return click.option("--law", "laws", type=click.Choice(LAW_NAMES), multiple=True, default=default,
                        show_default=True, help=help)


def load_table(results: str, target: str):
    """Read the results table; what was excluded, dropped or guessed goes to stderr."""
    from analysis.data.table import read_results
    from synthscale.units import format_count

    table = read_results(results, target)
    for e in table.excluded:
        click.echo(f"warning: excluded row {e['row']} (run {e['run_id']}): {e['reason']}", err=True)
    for d in table.duplicates:
        click.echo(f"warning: dropped row {d['row']} (run {d['run_id']}): {d['reason']} (row {d['duplicate_of_row']})",
                   err=True)
    for r in table.repeated:
        where = f" [{r['condition']}]" if r["condition"] else ""
        seeds = ", ".join("?" if x is None else str(x) for x in r["seeds"])
        click.echo(f"note: {r['kind']}: {len(r['run_ids'])} runs of {r['mixture']} at N={format_count(r['N'])}, "
                   f"D={format_count(r['D'])}{where}, seeds {seeds} (all kept): {', '.join(r['run_ids'])}", err=True)
    for note in table.notes:
        click.echo(f"note: {note}", err=True)
    return table


def run_fits(table, config, pool_conditions: bool, **kwargs):
    """Every condition (and domain) of the table; fits lacking points stop it, with the way around."""
    from analysis.fitting.units import UnfittableError
    from analysis.multi import run_all

    try:
        return run_all(table, config, pool_conditions=pool_conditions, **kwargs)
    except UnfittableError as exc:
        raise SynthscaleError(f"{exc}\n(use --skip-unfittable to fit the rest and list these)") from None


def analysis_config(grid: str = "full", **kwargs):
    """The AnalysisConfig of the command's flags; a value it rejects is a usage error (exit 2)."""
    from analysis.core.settings import AnalysisConfig
    from analysis.core.settings import COARSE_GRID, FitSettings

    try:
        return AnalysisConfig(fit=FitSettings(grid=COARSE_GRID if grid == "coarse" else None), **kwargs)
    except SynthscaleError as exc:
        raise usage_error(str(exc)) from None

