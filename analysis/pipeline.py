"""One analysis, start to end: fits, bootstrap, holdout, extrapolation and findings.

`run_analysis(table, config)` returns an `Analysis` (results/model.py) holding every fitted
object (for the plots); `Analysis.to_json()` gives every number (for fits.json and the report).
"""

from __future__ import annotations

import time

from analysis.core.identify import MIN_RESAMPLES, bootstrap_checked
from analysis.core.laws import get_law
from analysis.core.settings import AnalysisConfig
from analysis.data.comparison import compare_to_baseline
from analysis.data.grouping import group_rows, seed_spread
from analysis.data.table import ResultsTable, TableError, choose_baseline
from analysis.fitting.bootstrap import bootstrap_fits
from analysis.fitting.fit import fit_units, shared_starts
from analysis.fitting.holdout import holdout_validation
from analysis.fitting.units import FitUnit, UnfittableError, build_units, plan_units
from analysis.fitting.workers import worker_pool
from analysis.results.derive import derive_findings
from analysis.results.identification import identification_rows
from analysis.results.law_comparison import compare_laws
from analysis.results.model import Analysis, Fitted
from analysis.results.plateau import derive_plateaus


def run_analysis(table: ResultsTable, config: AnalysisConfig, pool=None) -> Analysis:
    """Fit every law asked for, bootstrap, identify, validate and derive the findings.

    `table` holds one condition (grouping.split_conditions); `pool` is reused when given.
    """
    if table.condition is None and len(table.conditions) > 1:
        raise ValueError(f"the table mixes conditions {table.conditions}: split it with grouping.split_conditions "
                         f"(or pool them there) before fitting")
    if pool is None:
        with worker_pool(config.workers) as own_pool:
            return _run_analysis(table, config, own_pool)
    return _run_analysis(table, config, pool)


def _run_analysis(table: ResultsTable, config: AnalysisConfig, pool) -> Analysis:
    analysis = Analysis(table, config)
    units: dict[str, list[FitUnit]] = {}
    problems: list[str] = []
    for name in config.laws:
        planned = plan_units(table, get_law(name))
        units[name] = [u for u, message in planned if message is None]
        problems += [message for _, message in planned if message is not None]
        analysis.unfitted += [(u, message) for u, message in planned if message is not None]
    if problems and not config.skip_unfittable:
        raise UnfittableError(problems)
    analysis.not_fitted = problems
    tick = time.perf_counter()
    for name in config.laws:
        results = fit_units(units[name], config.fit, pool)
        analysis.fits[name] = [Fitted(r) for r in results]
    if config.shared_exponents:
        _fit_shared(analysis, pool)
    analysis.seconds["grid_fits"] = time.perf_counter() - tick

    tick = time.perf_counter()
    everything = [f for fs in (*analysis.fits.values(), *analysis.shared.values()) for f in fs]
    samples = bootstrap_fits([f.fit for f in everything], config.bootstrap, config.seed, config.fit, pool)
    for i, fitted in enumerate(everything):
        fitted.samples = samples.get(i)
        fitted.identify(config.confidence)
    few = sorted({f.unit.label for f in everything if f.samples is not None and f.unit.n_points < 10})
    if few:
        analysis.notes.append(
            f"{len(few)} fit(s) have fewer than 10 runs; bootstrap intervals from so few runs understate "
            f"the uncertainty (e.g. {few[0]})")
    if config.bootstrap == 0:
        analysis.notes.append("no bootstrap: identification checks only bounds and E, not the width of intervals")
    elif not bootstrap_checked(config.bootstrap):
        analysis.notes.append(f"{config.bootstrap} bootstrap resample(s): fewer than {MIN_RESAMPLES} give no interval, "
                              "so the fits are not bootstrap-checked (bounds and E alone decide)")
    analysis.seconds["bootstrap"] = time.perf_counter() - tick

    tick = time.perf_counter()
    if config.holdout:
        for name, column in (("data", "D"), ("rectified", "D"), ("model", "N"), ("joint", "D")):
            if name in units and (name != "joint" or config.holdout_joint):
                analysis.holdouts[name] = holdout_validation(units[name], column, config.fit, pool)
    analysis.seconds["holdout"] = time.perf_counter() - tick

    if "rectified" in analysis.fits:
        tick = time.perf_counter()
        analysis.law_comparison = compare_laws(analysis, *data_law_for_comparison(analysis, pool))
        analysis.seconds["law_comparison"] = time.perf_counter() - tick

    try:
        analysis.baseline, analysis.baseline_note = choose_baseline(table, config.baseline)
    except TableError as exc:
        if table.condition is None:
            raise
        analysis.baseline, analysis.baseline_note = None, f"{exc} (in condition {table.condition})"
    analysis.groups = group_rows(table)
    analysis.seeds = seed_spread(table, analysis.baseline)
    analysis.comparison = compare_to_baseline(table, analysis.baseline, config.confidence)
    derive_findings(analysis)
    derive_plateaus(analysis)
    analysis.identification = identification_rows(analysis)
    return analysis


def _fit_shared(analysis: Analysis, pool) -> None:
    for name in analysis.config.laws:
        law = get_law(name)
        if law.pre_learned:
            analysis.notes.append(f"{name} law: no shared-exponent fit (its D_l and beta are per mixture)")
            continue
        units, problems = build_units(analysis.table, law, shared=True)
        units = [u for u in units if u.shared]
        analysis.not_fitted += [f"shared exponents: {p}" for p in problems]
        starts = []
        for unit in units:
            own = {f.unit.mixtures[0]: f.fit for f in analysis.fits[name] if f.unit.fixed == unit.fixed}
            starts.append(shared_starts(unit, own))
        analysis.shared[name] = [Fitted(r) for r in fit_units(units, analysis.config.fit, pool, starts)]


def data_law_for_comparison(analysis: Analysis, pool) -> tuple[dict, dict]:
    """The data-law fits and holdouts at the rectified fits' (mixture, N): the analysis's own when
    it fitted the data law, else fitted here (no bootstrap) on the same units."""
    cfg = analysis.config
    fits = {(f.unit.mixtures[0], f.unit.fixed[1]): f.fit for f in analysis.fits.get("data", [])}
    holdouts = {(h.unit.mixtures[0], h.unit.fixed[1]): h for h in analysis.holdouts.get("data", [])}
    if "data" in analysis.fits and (holdouts or not cfg.holdout):
        return fits, holdouts
    units, _ = build_units(analysis.table, get_law("data"))
    if "data" not in analysis.fits:
        fits = {(u.mixtures[0], u.fixed[1]): r for u, r in zip(units, fit_units(units, cfg.fit, pool))}
    if cfg.holdout:
        holdouts = {(h.unit.mixtures[0], h.unit.fixed[1]): h for h in holdout_validation(units, "D", cfg.fit, pool)}
    return fits, holdouts
