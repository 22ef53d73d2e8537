"""`analysis`: scaling-law fits, findings, unigram diagnostics and the report."""

from __future__ import annotations

import sys
from dataclasses import replace

import click

from analysis.bootstrap import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES
from analysis.config import AnalysisConfig
from analysis.table import TableError, read_results
from analysis.unigram import DEFAULT_SMOOTHING, UnigramError

DOMAIN_BOOTSTRAP = 100  # default resamples of the per-domain fits (capped by --bootstrap)
from analysis.units import UnfittableError
from synthscale.files import write_json_atomic
from synthscale.units import format_count, parse_count


def _counts(values: tuple[str, ...], what: str) -> tuple[float, ...]:
    try:
        return tuple(float(parse_count(v, what)) for v in values)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _named_prefixes(values: tuple[str, ...], hint: str = "--unigram-train/--train", what: str = "PREFIX") -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, prefix = value.partition("=")
        if not sep or not name or not prefix:
            raise click.BadParameter(f"expected NAME={what}, got {value!r}", param_hint=hint)
        if name in out:
            raise click.BadParameter(f"name {name!r} given twice", param_hint=hint)
        out[name] = prefix
    return out


def fit_options(func):
    """Options shared by `fit` and `report`."""
    options = [
        click.option("--target", default="loss", show_default=True, help="Column to fit: loss or loss.<domain>."),
        click.option("--bootstrap", "bootstrap", type=int, default=DEFAULT_RESAMPLES, show_default=True,
                     help="Bootstrap resamples of runs (0: no intervals)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap."),
        click.option("--confidence", type=float, default=DEFAULT_CONFIDENCE, show_default=True,
                     help="Coverage of the percentile intervals."),
        click.option("--workers", type=int, default=1, show_default=True,
                     help="Worker processes for the grid fits and the bootstrap (0: all cores)."),
        click.option("--shared-exponents", is_flag=True, help="Also fit each law with exponents shared across mixtures."),
        click.option("--grid", "grid", type=click.Choice(["full", "coarse"]), default="full", show_default=True,
                     help="Starting grid: full (Hoffmann et al., 4,500 joint starts) or coarse (243, a quick look)."),
        click.option("--skip-unfittable", is_flag=True,
                     help="List fits lacking points and go on, instead of stopping with an error."),
        click.option("--plateau-tol", "plateau_tol_abs", type=float, default=0.01, show_default=True,
                     help="Rectified law: the plateau D_p is where doubling D lowers the predicted loss by less "
                          "than this many nats (from then on)."),
        click.option("--plateau-tol-rel", "plateau_tol_rel", type=float, default=0.05, show_default=True,
                     help="Rectified law: a second D_p, where doubling D lowers the predicted loss by less than this "
                          "share of the remaining reducible loss L(D) - E."),
        click.option("--plateau-max-multiple", type=float, default=10.0, show_default=True,
                     help="Rectified law: a D_p beyond this multiple of the largest budget is reported as not "
                          "identified."),
        click.option("--pool-conditions", is_flag=True,
                     help="Fit runs of different conditions (backend, recipe_hash) together; by default each "
                          "condition is analysed on its own."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _load(results: str, target: str):
    try:
        table = read_results(results, target)
    except TableError as exc:
        raise click.ClickException(str(exc)) from None
    for e in table.excluded:
        click.echo(f"warning: excluded row {e['row']} (run {e['run_id']}): {e['reason']}", err=True)
    for d in table.duplicates:
        click.echo(f"warning: dropped row {d['row']} (run {d['run_id']}): {d['reason']} (row {d['duplicate_of_row']})", err=True)
    for r in table.repeated:
        where = f" [{r['condition']}]" if r["condition"] else ""
        seeds = ", ".join("?" if x is None else str(x) for x in r["seeds"])
        click.echo(f"note: {r['kind']}: {len(r['run_ids'])} runs of {r['mixture']} at N={format_count(r['N'])}, "
                   f"D={format_count(r['D'])}{where}, seeds {seeds} (all kept): {', '.join(r['run_ids'])}", err=True)
    for note in table.notes:
        click.echo(f"note: {note}", err=True)
    return table


def _run(table, config, pool_conditions, **kwargs):
    from analysis.multi import run_all

    try:
        return run_all(table, config, pool_conditions=pool_conditions, **kwargs)
    except UnfittableError as exc:
        raise click.ClickException(f"{exc}\n(use --skip-unfittable to fit the rest and list these)") from None


def _config(grid: str = "full", **kwargs) -> AnalysisConfig:
    from analysis.fit import COARSE_GRID, FitSettings

    try:
        return AnalysisConfig(fit=FitSettings(grid=COARSE_GRID if grid == "coarse" else None), **kwargs)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group()
def main() -> None:
    """Scaling-law analysis of synthscale results (or any CSV/JSONL/Parquet with mixture, N, D, loss).

    Example: analysis report results.csv --output report/
    """


@main.command()
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--law", "laws", type=click.Choice(["data", "rectified", "model", "joint"]), multiple=True,
              default=("joint",), show_default=True,
              help="Law(s) to fit: data L(D) at each N, rectified L(D) = B / (D_l + D^beta) + E at each N (with "
                   "its plateau D_p), model L(N) at each D, joint L(N, D).")
@click.option("--holdout/--no-holdout", default=True, show_default=True,
              help="Refit without the largest D (data, joint) or N (model) and report the error on those runs.")
@click.option("--predict-N", "predict_n", multiple=True, help="Extrapolate to this size (e.g. 400B); repeatable.")
@click.option("--predict-D", "predict_d", multiple=True, help="Extrapolate to this budget (e.g. 8T); repeatable.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write every number to this JSON file.")
@fit_options
def fit(results, laws, holdout, predict_n, predict_d, json_out, target, bootstrap, seed, confidence, workers,
        shared_exponents, grid, skip_unfittable, plateau_tol_abs, plateau_tol_rel, plateau_max_multiple,
        pool_conditions):
    """Fit scaling laws to a results table and print the parameters with intervals.

    Example: analysis fit results.csv --law data --law joint --bootstrap 200 --predict-D 8T

    Rectified law and plateau: analysis fit curves.csv --law rectified --plateau-tol 0.01 --workers 0
    """
    from analysis.report import fits_document, fmt, interval_text

    config = _config(grid, laws=tuple(laws), bootstrap=bootstrap, seed=seed, confidence=confidence, workers=workers,
                     shared_exponents=shared_exponents, skip_unfittable=skip_unfittable, target=target,
                     holdout=holdout, holdout_joint=holdout and "joint" in laws, plateau_tol_abs=plateau_tol_abs,
                     plateau_tol_rel=plateau_tol_rel, plateau_max_multiple=plateau_max_multiple,
                     extrapolate_N=_counts(predict_n, "--predict-N"), extrapolate_D=_counts(predict_d, "--predict-D"))
    table = _load(results, target)
    aset = _run(table, config, pool_conditions)
    document = aset.to_json()
    for problem in document["not_fitted"]:
        click.echo(f"not fitted: {problem}", err=True)
    for analysis in aset.analyses:
        for law_fits in (*analysis.fits.values(), *analysis.shared.values()):
            for fitted in law_fits:
                click.echo(f"{fitted.unit.label}: {fitted.fit.law.formula}, {fitted.unit.n_points} runs")
                if not fitted.fit.converged:
                    click.echo(f"  {fitted.fit.message}")
                    continue
                if not fitted.identified:
                    click.echo(f"  not identified: {fitted.reason()}")
                    continue
                for mixture in fitted.unit.mixtures:
                    intervals = fitted.samples.param_intervals(mixture, confidence) if fitted.samples else {}
                    values = "  ".join(f"{k}={fmt(v)} {interval_text(intervals.get(k))}"
                                       for k, v in fitted.fit.params(mixture).items())
                    click.echo(f"  {mixture + ': ' if fitted.unit.shared else ''}{values}")
                pre = fitted.to_dict(confidence).get("pre_learned")
                if pre and pre["reduces_to_data_law"]:
                    click.echo("  D_l = 0: the rectified law reduces to the data law B / D^beta + E on these runs")
        for c in analysis.law_comparison:
            r, d = c["rectified"], c["data"]
            cells = [f"{k} {fmt(r.get(key), 3)} vs {fmt(d.get(key), 3)}" for k, key in
                     (("Huber", "huber_objective"), ("RMSD log loss", "rmsd_log_loss"), ("holdout RMAE", "holdout_rmae"))]
            click.echo(f"rectified vs data law, {c['mixture']} N={format_count(c['N'])}: " + ", ".join(cells))
        for p in analysis.plateaus:
            where = f" [{p['condition']}]" if p.get("condition") else ""
            what = (f"{format_count(p['D_p'])} {interval_text(p.get('interval'), format_count)}" if p["identified"]
                    else f"not identified: {p['reason']}")
            click.echo(f"plateau ({p['criterion']}, tol {p['tolerance']:g}) {p['mixture']}{where} "
                       f"N={format_count(p['N'])}: D_p {what}")
        for t in analysis.plateau_trends:
            if t["identified"]:
                click.echo(f"D_p vs N ({t['criterion']}) {t['mixture']}: log D_p = {t['intercept']:.4g} + "
                           f"{t['slope']:.4g} log N {interval_text(t['slope_interval'])} over {len(t['sizes'])} sizes: "
                           f"{t['direction']}")
            else:
                click.echo(f"D_p vs N ({t['criterion']}) {t['mixture']}: not fitted: {t['reason']}")
    for law, summary in document["holdout"].items():
        rmae = summary["summary"]["rmae"]
        click.echo(f"holdout {law}: RMAE {fmt(rmae * 100 if rmae is not None else None, 3)} % on "
                   f"{summary['summary']['held_out_runs']} held-out runs ({summary['summary']['skipped']} fits skipped)")
    for e in document["extrapolation"]:
        where = f" [{e['condition']}]" if e.get("condition") else ""
        click.echo(f"predicted {e['law']} {e['mixture']}{where} N={format_count(e['N'])} D={format_count(e['D'])}: "
                   f"{fmt(e['predicted_loss'])} {interval_text(e['interval'])}")
    for note in aset.all_notes():  # the findings are `report`'s: no notes on why they are missing
        if note not in table.notes and "not computed" not in note and "not reported" not in note:
            click.echo(f"note: {note}", err=True)
    if json_out:
        write_json_atomic(json_out, fits_document(aset, None))
        click.echo(f"wrote {json_out}", err=True)


@main.command()
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Folder for the report.")
@click.option("--law", "laws", type=click.Choice(["data", "rectified", "model", "joint"]), multiple=True,
              default=("data", "model", "joint"), show_default=True,
              help="Laws to fit (rectified: B / (D_l + D^beta) + E at each N, its comparison with the data law and "
                   "the plateau D_p).")
@click.option("--baseline", help="Baseline mixture (default: the one with synthetic_fraction 0).")
@click.option("--speedup-law", type=click.Choice(["data", "joint"]), default="data", show_default=True,
              help="Speed-ups from the per-N data-law fits (the paper) or the joint fits.")
@click.option("--extrapolate-N", "extrapolate_n", multiple=True, help="Size to predict at (e.g. 400B); repeatable.")
@click.option("--extrapolate-D", "extrapolate_d", multiple=True, help="Budget to predict at (e.g. 8T); repeatable.")
@click.option("--holdout-joint", is_flag=True, help="Also validate the joint law on the largest D (a full grid fit per mixture).")
@click.option("--unigram-train", multiple=True, metavar="NAME=PREFIX", help="Training set for unigram diagnostics; repeatable.")
@click.option("--unigram-test", metavar="PREFIX", help="Test set for unigram diagnostics.")
@click.option("--smoothing", type=float, default=DEFAULT_SMOOTHING, show_default=True, help="Additive smoothing of KL.")
@click.option("--domains/--no-domains", default=True, show_default=True,
              help="Also fit each loss.<domain> column of the table (cheaper settings, below).")
@click.option("--domain-bootstrap", type=int, default=None,
              help=f"Bootstrap resamples of the per-domain fits [default: the smaller of --bootstrap and "
                   f"{DOMAIN_BOOTSTRAP}].")
@click.option("--domain-grid", type=click.Choice(["full", "coarse"]), default="coarse", show_default=True,
              help="Starting grid of the per-domain fits.")
@click.option("--domain-law", "domain_laws", type=click.Choice(["data", "rectified", "model", "joint"]), multiple=True,
              help="Laws fitted per domain [default: joint (E and best ratio per domain) when --law has it, "
                   "else the --law laws].")
@click.option("--label", default=None, help='Label of the report and summary, e.g. "tiny-scale demonstration".')
@click.option("--corpus", "corpora", multiple=True, metavar="NAME=DIR",
              help="A synthetic corpus (a `generation run` output folder) whose recipe, generator and fidelity the "
                   "report lists; repeatable.")
@fit_options
def report(results, output, laws, baseline, speedup_law, extrapolate_n, extrapolate_d, holdout_joint,
           unigram_train, unigram_test, smoothing, domains, domain_bootstrap, domain_grid, domain_laws, label, corpora,
           target,
           bootstrap,
           seed, confidence, workers, shared_exponents, grid, skip_unfittable, plateau_tol_abs, plateau_tol_rel,
           plateau_max_multiple, pool_conditions):
    """Write report.html (self-contained), report.md with figures/, and fits.json to OUTPUT.

    Example: analysis report results.csv --output report/ --extrapolate-D 8T --workers 0

    Runs of different conditions (backend, recipe_hash) are analysed apart (--pool-conditions
    fits them together); mixtures are grouped by their family and generator columns. Each
    loss.<domain> column is fitted too, with --domain-bootstrap resamples on the --domain-grid.
    OUTPUT/summary.txt holds a summary of at most five lines, also printed at the end.
    """
    from analysis.report import write_report

    if bool(unigram_train) != bool(unigram_test):
        raise click.UsageError("--unigram-train and --unigram-test go together")
    trains = _named_prefixes(unigram_train)
    config = _config(grid, laws=tuple(laws), bootstrap=bootstrap, seed=seed, confidence=confidence, workers=workers,
                     shared_exponents=shared_exponents, skip_unfittable=skip_unfittable, target=target,
                     baseline=baseline, speedup_law=speedup_law, holdout_joint=holdout_joint,
                     plateau_tol_abs=plateau_tol_abs, plateau_tol_rel=plateau_tol_rel,
                     plateau_max_multiple=plateau_max_multiple,
                     extrapolate_N=_counts(extrapolate_n, "--extrapolate-N"),
                     extrapolate_D=_counts(extrapolate_d, "--extrapolate-D"))
    table = _load(results, target)
    if baseline is not None and baseline not in table.mixtures:
        raise click.BadParameter(f"{baseline!r} is not a mixture of the table; mixtures: {table.mixtures}",
                                 param_hint="--baseline")
    if domain_bootstrap is not None and domain_bootstrap < 0:
        raise click.BadParameter(f"must be 0 or more, got {domain_bootstrap}", param_hint="--domain-bootstrap")
    domain_tables, domain_config = {}, None
    if domains:
        domain_tables = _domain_tables(results, table, target)
        domain_config = _domain_config(config, domain_bootstrap, domain_grid, domain_laws)
    from analysis.corpora import CorpusError, read_corpora

    try:
        corpus_rows = read_corpora(_named_prefixes(corpora, "--corpus", "DIR"))
    except CorpusError as exc:
        raise click.BadParameter(str(exc), param_hint="--corpus") from None
    unigram = _unigram(trains, unigram_test, smoothing) if trains else None
    aset = _run(table, config, pool_conditions, domain_tables=domain_tables, domain_config=domain_config,
                label=label)
    paths = write_report(aset, output, unigram, corpus_rows)
    for note in aset.all_notes():
        if note not in table.notes:
            click.echo(f"note: {note}", err=True)
    click.echo(f"wrote {paths['html']}, {paths['markdown']}, {paths['json']}, {paths['summary']}")
    click.echo("summary:")
    click.echo(paths["summary"].read_text(encoding="utf-8").rstrip("\n"))


def _domain_tables(results: str, table, target: str) -> dict:
    """{loss.<domain>: table} for every domain column other than the fitted one; unreadable ones noted."""
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


def _domain_config(config: AnalysisConfig, domain_bootstrap: int | None, domain_grid: str,
                   domain_laws: tuple[str, ...]) -> AnalysisConfig:
    from analysis.fit import COARSE_GRID
    from analysis.multi import domain_settings

    resamples = min(config.bootstrap, DOMAIN_BOOTSTRAP) if domain_bootstrap is None else domain_bootstrap
    fit = replace(config.fit, grid=COARSE_GRID if domain_grid == "coarse" else None)
    laws = tuple(domain_laws) or (("joint",) if "joint" in config.laws else config.laws)
    speedup_law = config.speedup_law if config.speedup_law in laws else ("joint" if "joint" in laws else "data")
    try:
        return replace(domain_settings(config, config.target, resamples, fit), laws=laws, speedup_law=speedup_law)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--domain-law") from None


def _unigram(trains, test, smoothing, **kwargs):
    from analysis.unigram import unigram_diagnostics

    try:
        return unigram_diagnostics(trains, test, smoothing=smoothing, **kwargs)
    except UnigramError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--train", "trains", multiple=True, required=True, metavar="NAME=PREFIX",
              help="Training set (.bin/.idx prefix); repeatable.")
@click.option("--test", "test", required=True, metavar="PREFIX", help="Test set (.bin/.idx prefix).")
@click.option("--smoothing", type=float, default=DEFAULT_SMOOTHING, show_default=True,
              help="Additive smoothing alpha of the training distribution in KL(test||train).")
@click.option("--top", type=int, default=20, show_default=True, help="Tokens listed as frequent in test, rare in train.")
@click.option("--min-test-count", type=int, default=5, show_default=True, help="Test count for a token to be listed.")
@click.option("--keep-eod", is_flag=True, help="Count the end-of-document id (left out by default).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the diagnostics to this JSON file.")
def unigram(trains, test, smoothing, top, min_test_count, keep_eod, json_out):
    """Unigram statistics of tokenized datasets: Zipf fit, coverage, KL(test||train), surprising tokens.

    Example: analysis unigram --train natural=data/natural --train hq=data/hq --test data/heldout
    """
    from analysis.report import fmt, jsonable

    result = _unigram(_named_prefixes(trains), test, smoothing, top=top, min_test_count=min_test_count, keep_eod=keep_eod)
    data = result.to_dict()
    click.echo(f"test {test}: {data['test']['tokens']} tokens, {data['test']['types']} types, "
               f"Zipf s={fmt(data['zipf']['test'].get('exponent'), 3)}; smoothing alpha={smoothing:g} over V={result.vocab_size}")
    for name, v in data["per_train"].items():
        click.echo(f"{name}: token coverage {fmt(v['token_coverage'])}, type coverage {fmt(v['type_coverage'])}, "
                   f"KL(test||train) {fmt(v['kl_test_train_nats'])} nats, Zipf s={fmt(data['zipf'][name].get('exponent'), 3)}")
        rare = ", ".join(f"{t['token_id']} ({t['test_count']} vs {t['train_count']})" for t in v["frequent_in_test_rare_in_train"][:10])
        click.echo(f"  frequent in test, rare in {name} (test vs train count): {rare or 'none'}")
    if json_out:
        write_json_atomic(json_out, jsonable(data))
        click.echo(f"wrote {json_out}", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
