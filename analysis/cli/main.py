"""`analysis`: scaling-law fits, findings, unigram diagnostics and the report.

Heavy libraries (numpy, scipy, pandas, matplotlib) are imported inside the commands, so that
`analysis --help` and `analysis SUB --help` answer at once.
"""

from __future__ import annotations

import sys

import click

from analysis.cli.options import analysis_config, fit_options, law_option, load_table, run_fits
from analysis.cli.report import report
from analysis.core.defaults import DEFAULT_SMOOTHING
from synthscale.cli import COUNT, StageCommand, emit_json, json_options, named_values_callback, stage_group


@stage_group()
def main() -> None:
    """Scaling-law analysis of synthscale results (or any CSV/JSONL/Parquet with mixture, N, D, loss).

    Errors in the input are one line (exit 1; --debug shows the traceback); a bad flag exits 2.

    \b
    Example:
      analysis report results.csv --output report/ --workers 0
      analysis fit results.csv --law data --json > fits.json
    """


main.add_command(report)


@main.command(cls=StageCommand)
@click.argument("results", type=click.Path(dir_okay=False))
@law_option(("joint",), "Law(s) to fit: data L(D) at each N, rectified L(D) = B / (D_l + D^beta) + E at each N "
                        "(with its plateau D_p), model L(N) at each D, joint L(N, D).")
@click.option("--holdout/--no-holdout", default=True, show_default=True,
              help="Refit without the largest D (data, joint) or N (model) and report the error on those runs.")
@click.option("--predict-N", "predict_n", type=COUNT, multiple=True, help="Extrapolate to this size (e.g. 400B); repeatable.")
@click.option("--predict-D", "predict_d", type=COUNT, multiple=True, help="Extrapolate to this budget (e.g. 8T); repeatable.")
@json_options
@fit_options
def fit(results, laws, holdout, predict_n, predict_d, as_json, json_file, target, bootstrap, seed, confidence,
        workers, shared_exponents, grid, skip_unfittable, plateau_tol_abs, plateau_tol_rel, plateau_max_multiple,
        pool_conditions):
    """Fit scaling laws to a results table and print the parameters with intervals.

    With --json, every fitted number goes to stdout as JSON (fits.json's layout) instead of the
    text; --json-file writes the same JSON to a file beside the text.

    \b
    Example:
      analysis fit results.csv --law data --law joint --bootstrap 200 --predict-D 8T
      analysis fit curves.csv --law rectified --plateau-tol 0.01 --workers 0 --json-file fits.json
    """
    from analysis.report.render import fits_document

    config = analysis_config(grid, laws=tuple(laws), bootstrap=bootstrap, seed=seed, confidence=confidence,
                             workers=workers, shared_exponents=shared_exponents, skip_unfittable=skip_unfittable,
                             target=target, holdout=holdout, holdout_joint=holdout and "joint" in laws,
                             plateau_tol_abs=plateau_tol_abs, plateau_tol_rel=plateau_tol_rel,
                             plateau_max_multiple=plateau_max_multiple,
                             extrapolate_N=tuple(map(float, predict_n)), extrapolate_D=tuple(map(float, predict_d)))
    table = load_table(results, target)
    aset = run_fits(table, config, pool_conditions)
    document = aset.to_json()
    for problem in document["not_fitted"]:
        click.echo(f"not fitted: {problem}", err=True)
    if not as_json:
        _print_fits(aset, document, confidence)
    for note in aset.all_notes():  # the findings are `report`'s: no notes on why they are missing
        if note not in table.notes and "not computed" not in note and "not reported" not in note:
            click.echo(f"note: {note}", err=True)
    if as_json or json_file:
        emit_json(fits_document(aset, None), as_json, json_file)


def _print_fits(aset, document: dict, confidence: float) -> None:
    """The text of `analysis fit`: each fit's parameters with intervals, comparisons, plateaus, predictions."""
    from analysis.report.textfmt import fmt, interval_text
    from synthscale.units import format_count

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
            what = (f"{format_count(p['D_p'])} {interval_text(p.get('interval'), format_count)} "
                    f"({'extrapolated' if p['beyond_data'] else 'measured'}, {p['rests_on']['runs']} runs)"
                    if p["identified"] else f"not identified: {p['reason']}")
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
                   f"{fmt(e['predicted_loss'])} {interval_text(e['interval'])} "
                   f"({'extrapolated' if e['beyond_data'] else 'measured'}, {e['rests_on']['runs']} runs)")


@main.command(cls=StageCommand)
@click.option("--train", "trains", multiple=True, required=True, metavar="NAME=PREFIX", callback=named_values_callback("PREFIX"),
              help="Training set (.bin/.idx prefix); repeatable.")
@click.option("--test", "test", required=True, metavar="PREFIX", help="Test set (.bin/.idx prefix).")
@click.option("--smoothing", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_SMOOTHING,
              show_default=True, help="Additive smoothing alpha of the training distribution in KL(test||train).")
@click.option("--top", type=click.IntRange(min=0), default=20, show_default=True,
              help="Tokens listed as frequent in test, rare in train.")
@click.option("--min-test-count", type=click.IntRange(min=1), default=5, show_default=True,
              help="Test count for a token to be listed.")
@click.option("--keep-eod", is_flag=True, help="Count the end-of-document id (left out by default).")
@json_options
def unigram(trains, test, smoothing, top, min_test_count, keep_eod, as_json, json_file):
    """Unigram statistics of tokenized datasets: Zipf fit, coverage, KL(test||train), surprising tokens.

    Reads .bin/.idx token files with data_prep's reader: needs `pip install 'synthscale[data_prep]'`.

    \b
    Example:
      analysis unigram --train natural=data/natural --train hq=data/hq --test data/heldout --json
    """
    from analysis.report.textfmt import jsonable
    from analysis.data.unigram import unigram_diagnostics

    result = unigram_diagnostics(trains, test, smoothing=smoothing, top=top, min_test_count=min_test_count,
                                 keep_eod=keep_eod)
    data = result.to_dict()
    if not as_json:
        _print_unigram(result, data)
    if as_json or json_file:
        emit_json(jsonable(data), as_json, json_file)


def _print_unigram(result, data: dict) -> None:
    from analysis.report.textfmt import fmt

    click.echo(f"test {result.test.prefix}: {data['test']['tokens']} tokens, {data['test']['types']} types, "
               f"Zipf s={fmt(data['zipf']['test'].get('exponent'), 3)}; smoothing alpha={result.smoothing:g} over "
               f"V={result.vocab_size}")
    for name, v in data["per_train"].items():
        click.echo(f"{name}: token coverage {fmt(v['token_coverage'])}, type coverage {fmt(v['type_coverage'])}, "
                   f"KL(test||train) {fmt(v['kl_test_train_nats'])} nats, "
                   f"Zipf s={fmt(data['zipf'][name].get('exponent'), 3)}")
        rare = ", ".join(f"{t['token_id']} ({t['test_count']} vs {t['train_count']})"
                         for t in v["frequent_in_test_rare_in_train"][:10])
        click.echo(f"  frequent in test, rare in {name} (test vs train count): {rare or 'none'}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
