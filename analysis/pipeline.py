"""One analysis, start to end: fits, bootstrap, holdout, extrapolation and findings.

`run_analysis(table, config)` returns an `Analysis` holding every fitted object (for the plots)
and `Analysis.to_json()` gives every number (for fits.json and the Markdown/HTML report).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from analysis.bootstrap import BootstrapSamples, bootstrap_fits, percentile_interval
from analysis.config import AnalysisConfig
from analysis.derive import derive_findings
from analysis.fit import FitResult, fit_units, shared_starts
from analysis.fit_inputs import FitUnit, UnfittableError, build_units, plan_units
from analysis.comparison import compare_to_baseline
from analysis.grouping import group_rows, seed_spread
from analysis.identification import identification_rows
from analysis.identify import DL_ZERO_RATIO, MIN_RESAMPLES, Identification, bootstrap_checked, interval_problems
from analysis.laws import get_law
from analysis.plateau import derive_plateaus
from analysis.rectified import compare_laws, data_law_for_comparison, log_dl_ratio, pre_learned
from analysis.table import ResultsTable, TableError, choose_baseline
from analysis.validation import Holdout, holdout_summary, holdout_validation
from analysis.workers import worker_pool


@dataclass
class Fitted:
    """A fit, its bootstrap resamples (None without bootstrap or convergence) and whether the
    runs identify its parameters (identify.py)."""

    fit: FitResult
    samples: BootstrapSamples | None = None
    identification: Identification | None = None

    @property
    def unit(self) -> FitUnit:
        return self.fit.unit

    def thetas(self, mixture: str) -> np.ndarray | None:
        return None if self.samples is None else self.samples.mixture_thetas(mixture)

    def identify(self, confidence: float) -> Identification:
        ident = Identification(self.fit.converged, list(self.fit.problems))
        if self.fit.converged and self.samples is not None:
            ident.problems += interval_problems(self._checked_intervals(confidence), self.samples.n_resamples,
                                                self.samples.n_failed, self.unit.shared,
                                                {"D_l": DL_ZERO_RATIO} if self.unit.law.pre_learned else None,
                                                self._smallest_losses())
            ident.bootstrap_checked = bootstrap_checked(self.samples.n_resamples)
        self.identification = ident
        return ident

    def _smallest_losses(self) -> dict[str, float]:
        unit = self.unit
        return {m: float(unit.loss[unit.groups == g].min()) for g, m in enumerate(unit.mixtures)}

    def _checked_intervals(self, confidence: float) -> dict[str, dict]:
        """The intervals identify.py judges: the parameters', with the rectified law's D_l as
        D_l / D_min^beta, each resample in units of its own beta (rectified.py)."""
        out = {m: self.samples.param_intervals(m, confidence) for m in self.unit.mixtures}
        if self.unit.law.pre_learned:
            for m in self.unit.mixtures:
                ratios = log_dl_ratio(self.unit.law, self.samples.mixture_thetas(m), float(self.unit.D.min()))
                with np.errstate(over="ignore"):
                    out[m]["D_l"] = percentile_interval(np.exp(ratios), confidence)
        return out

    @property
    def identified(self) -> bool:
        return (self.identification or self.identify(0.95)).identified

    def short(self) -> str:
        """A few words for compact tables and the summary."""
        if not self.fit.converged:
            return "no convergence"
        return (self.identification or self.identify(0.95)).short()

    def reason(self, mixture: str | None = None) -> str:
        """Why there are no numbers: the optimiser's message, or what leaves the fit unidentified."""
        if not self.fit.converged:
            return self.fit.message
        return (self.identification or self.identify(0.95)).reason(mixture)

    def to_dict(self, confidence: float) -> dict:
        out = self.fit.to_dict()
        ident = self.identification or self.identify(confidence)
        out.update(ident.to_dict())
        info = None
        if self.unit.law.pre_learned and self.fit.converged:
            samples = self.thetas(self.unit.mixtures[0]) if ident.bootstrap_checked else None
            info = pre_learned(self.fit, samples, confidence)
            if ident.identified:
                out["pre_learned"] = info
        if self.samples is not None:
            out["bootstrap"] = self.samples.summary()
            intervals = {m: self.samples.param_intervals(m, confidence) for m in self.unit.mixtures}
            out["intervals"] = intervals if self.unit.shared else intervals[self.unit.mixtures[0]]
        if self.fit.converged and not ident.identified:
            # Kept for diagnosis under a name no report prints: a boundary solution is no estimate.
            out["not_identified"] = {"reason": ident.reason(), "optimum": out.pop("params"),
                                     "intervals": out.pop("intervals", None)}
            if info is not None:
                out["not_identified"]["pre_learned"] = info
        return out


@dataclass
class Analysis:
    """One target (loss or loss.<domain>) of one condition (backend/recipe_hash)."""

    table: ResultsTable
    config: AnalysisConfig
    fits: dict[str, list[Fitted]] = field(default_factory=dict)
    shared: dict[str, list[Fitted]] = field(default_factory=dict)
    not_fitted: list[str] = field(default_factory=list)
    unfitted: list[tuple[FitUnit, str]] = field(default_factory=list)  # units too short of runs, and why
    holdouts: dict[str, list[Holdout]] = field(default_factory=dict)
    baseline: str | None = None
    baseline_note: str = ""
    extrapolations: list[dict] = field(default_factory=list)
    speedups: list[dict] = field(default_factory=list)
    best_ratios: list[dict] = field(default_factory=list)
    irreducible: list[dict] = field(default_factory=list)
    law_comparison: list[dict] = field(default_factory=list)  # rectified vs data law, per (mixture, N)
    plateaus: list[dict] = field(default_factory=list)  # D_p per (mixture, N, criterion)
    plateau_trends: list[dict] = field(default_factory=list)  # log D_p = a + b log N, per mixture and criterion
    groups: list[dict] = field(default_factory=list)
    seeds: dict = field(default_factory=dict)
    comparison: dict = field(default_factory=dict)  # model-free: each mixture against the baseline at equal (N, D)
    identification: list[dict] = field(default_factory=list)  # one row per planned fit (identification.py)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    prefix: str = ""  # of figure names, when several conditions share a report

    @property
    def condition(self) -> str | None:
        return self.table.condition

    def find(self, law: str, mixture: str, fixed: float | None = None) -> Fitted | None:
        for fitted in self.fits.get(law, []):
            if fitted.unit.mixtures[0] == mixture and (fixed is None or fitted.unit.fixed[1] == fixed):
                return fitted
        return None

    def to_json(self) -> dict:
        c = self.config.confidence
        return {
            "condition": self.condition,
            "target": self.table.target,
            "runs": int(len(self.table.runs)),
            "fits": {law: [f.to_dict(c) for f in fs] for law, fs in self.fits.items()},
            "shared_exponent_fits": {law: [f.to_dict(c) for f in fs] for law, fs in self.shared.items()},
            "not_fitted": self.not_fitted,
            "identification": self.identification,
            "model_free": self.comparison,
            "holdout": {
                law: {"summary": holdout_summary(hs), "units": [h.to_dict() for h in hs]}
                for law, hs in self.holdouts.items()
            },
            "baseline": {"mixture": self.baseline, "why": self.baseline_note},
            "extrapolation": self.extrapolations,
            "speedup": self.speedups,
            "best_ratio": self.best_ratios,
            "irreducible_loss": self.irreducible,
            "law_comparison": self.law_comparison,
            "plateau": self.plateaus,
            "plateau_trend": self.plateau_trends,
            "groups": self.groups,
            "seed_spread": self.seeds,
            "notes": self.notes,
            "seconds": self.seconds,
        }


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
