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
from analysis.findings import best_ratio, crossing_summary, ratio_families, speedup
from analysis.fit import FitResult, fit_units, shared_starts
from analysis.laws import get_law, natural_params
from analysis.table import ResultsTable, choose_baseline
from analysis.units import FitUnit, UnfittableError, build_units
from analysis.validation import Holdout, extrapolate, holdout_summary, holdout_validation
from analysis.workers import worker_pool


@dataclass
class Fitted:
    """A fit and its bootstrap resamples (None without bootstrap or without convergence)."""

    fit: FitResult
    samples: BootstrapSamples | None = None

    @property
    def unit(self) -> FitUnit:
        return self.fit.unit

    def thetas(self, mixture: str) -> np.ndarray | None:
        return None if self.samples is None else self.samples.mixture_thetas(mixture)

    def to_dict(self, confidence: float) -> dict:
        out = self.fit.to_dict()
        if self.samples is not None:
            out["bootstrap"] = self.samples.summary()
            intervals = {m: self.samples.param_intervals(m, confidence) for m in self.unit.mixtures}
            out["intervals"] = intervals if self.unit.shared else intervals[self.unit.mixtures[0]]
        return out


@dataclass
class Analysis:
    table: ResultsTable
    config: AnalysisConfig
    fits: dict[str, list[Fitted]] = field(default_factory=dict)
    shared: dict[str, list[Fitted]] = field(default_factory=dict)
    not_fitted: list[str] = field(default_factory=list)
    holdouts: dict[str, list[Holdout]] = field(default_factory=dict)
    baseline: str | None = None
    baseline_note: str = ""
    extrapolations: list[dict] = field(default_factory=list)
    speedups: list[dict] = field(default_factory=list)
    best_ratios: list[dict] = field(default_factory=list)
    irreducible: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def find(self, law: str, mixture: str, fixed: float | None = None) -> Fitted | None:
        for fitted in self.fits.get(law, []):
            if fitted.unit.mixtures[0] == mixture and (fixed is None or fitted.unit.fixed[1] == fixed):
                return fitted
        return None

    def to_json(self) -> dict:
        c = self.config.confidence
        return {
            "table": self.table.summary(),
            "settings": self.config.to_dict(),
            "fits": {law: [f.to_dict(c) for f in fs] for law, fs in self.fits.items()},
            "shared_exponent_fits": {law: [f.to_dict(c) for f in fs] for law, fs in self.shared.items()},
            "not_fitted": self.not_fitted,
            "holdout": {
                law: {"summary": holdout_summary(hs), "units": [h.to_dict() for h in hs]}
                for law, hs in self.holdouts.items()
            },
            "baseline": {"mixture": self.baseline, "why": self.baseline_note},
            "extrapolation": self.extrapolations,
            "speedup": self.speedups,
            "best_ratio": self.best_ratios,
            "irreducible_loss": self.irreducible,
            "notes": self.notes,
            "seconds": self.seconds,
        }


def run_analysis(table: ResultsTable, config: AnalysisConfig) -> Analysis:
    """Fit every law asked for, bootstrap, validate and derive the findings."""
    analysis = Analysis(table, config)
    units: dict[str, list[FitUnit]] = {}
    problems: list[str] = []
    for name in config.laws:
        units[name], unfit = build_units(table, get_law(name))
        problems += unfit
    if problems and not config.skip_unfittable:
        raise UnfittableError(problems)
    analysis.not_fitted = problems
    with worker_pool(config.workers) as pool:
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
        few = sorted({f.unit.label for f in everything if f.samples is not None and f.unit.n_points < 10})
        if few:
            analysis.notes.append(
                f"{len(few)} fit(s) have fewer than 10 runs; bootstrap intervals from so few runs understate "
                f"the uncertainty (e.g. {few[0]})")
        analysis.seconds["bootstrap"] = time.perf_counter() - tick

        tick = time.perf_counter()
        if config.holdout:
            for name, column in (("data", "D"), ("model", "N"), ("joint", "D")):
                if name in units and (name != "joint" or config.holdout_joint):
                    analysis.holdouts[name] = holdout_validation(units[name], column, config.fit, pool)
        analysis.seconds["holdout"] = time.perf_counter() - tick

    analysis.baseline, analysis.baseline_note = choose_baseline(table, config.baseline)
    _extrapolations(analysis)
    _speedups(analysis)
    _best_ratios(analysis)
    _irreducible(analysis)
    return analysis


def _fit_shared(analysis: Analysis, pool) -> None:
    for name in analysis.config.laws:
        law = get_law(name)
        units, problems = build_units(analysis.table, law, shared=True)
        units = [u for u in units if u.shared]
        analysis.not_fitted += [f"shared exponents: {p}" for p in problems]
        starts = []
        for unit in units:
            own = {f.unit.mixtures[0]: f.fit for f in analysis.fits[name] if f.unit.fixed == unit.fixed}
            starts.append(shared_starts(unit, own))
        analysis.shared[name] = [Fitted(r) for r in fit_units(units, analysis.config.fit, pool, starts)]


def _distinct(column: str, table: ResultsTable) -> list[float]:
    return sorted(set(table.runs[column].astype(float)))


def _extrapolations(analysis: Analysis) -> None:
    cfg = analysis.config
    if not (cfg.extrapolate_N or cfg.extrapolate_D):
        return
    N_values = list(cfg.extrapolate_N) or _distinct("N", analysis.table)
    D_values = list(cfg.extrapolate_D) or _distinct("D", analysis.table)
    for name, fitted in analysis.fits.items():
        if name == "data" and not cfg.extrapolate_D or name == "model" and not cfg.extrapolate_N:
            continue
        for f in fitted:
            analysis.extrapolations += extrapolate(f.fit, f.samples, N_values, D_values, cfg.confidence)


def _speedups(analysis: Analysis) -> None:
    cfg, table = analysis.config, analysis.table
    law_name = cfg.speedup_law
    if analysis.baseline is None:
        analysis.notes.append(f"speed-up not computed: no baseline, {analysis.baseline_note}")
        return
    if law_name not in analysis.fits:
        analysis.notes.append(f"speed-up not computed: it uses the {law_name} law, which was not fitted")
        return
    law = get_law(law_name)
    budgets = sorted(set(_distinct("D", table)) | set(cfg.extrapolate_D))
    d_range = (min(budgets), max(budgets))
    grid = np.geomspace(d_range[0], d_range[1], 60)
    sizes = _distinct("N", table) if law_name == "data" else sorted(set(_distinct("N", table)) | set(cfg.extrapolate_N))
    for N in sizes:
        base = analysis.find(law_name, analysis.baseline, N if law_name == "data" else None)
        if base is None or not base.fit.converged:
            analysis.notes.append(f"speed-up at N={N:g}: the baseline {analysis.baseline!r} has no converged {law_name} fit there")
            continue
        for mixture in table.mixtures:
            if mixture == analysis.baseline:
                continue
            mix = analysis.find(law_name, mixture, N if law_name == "data" else None)
            if mix is None or not mix.fit.converged:
                continue
            n_arg = None if law_name == "data" else N
            tm, tb = mix.fit.mixture_theta(mixture), base.fit.mixture_theta(analysis.baseline)
            sm, sb = mix.thetas(mixture), base.thetas(analysis.baseline)
            curve = speedup(law, tm, tb, grid, n_arg)
            band = speedup(law, sm, sb, grid, n_arg) if sm is not None and sb is not None else None
            at = speedup(law, tm, tb, np.array(budgets), n_arg)
            at_band = speedup(law, sm, sb, np.array(budgets), n_arg) if band is not None else None
            analysis.speedups.append({
                "law": law_name, "mixture": mixture, "baseline": analysis.baseline, "N": N,
                "at_budgets": [
                    {"D": d, "speedup": float(at[j]),
                     "interval": percentile_interval(at_band[:, j], cfg.confidence) if at_band is not None else None,
                     "beyond_data": bool(d > max(mix.unit.D.max(), base.unit.D.max())
                                         or N > max(mix.unit.N.max(), base.unit.N.max()))}
                    for j, d in enumerate(budgets)
                ],
                "curve": {
                    "D": grid.tolist(), "speedup": curve.tolist(),
                    "interval": None if band is None else [percentile_interval(band[:, j], cfg.confidence) for j in range(grid.size)],
                },
                "crossing": crossing_summary(law, tm, tb, sm, sb, d_range, n_arg, cfg.confidence),
            })


def _best_ratios(analysis: Analysis) -> None:
    cfg, table = analysis.config, analysis.table
    if not table.has_synthetic_fraction:
        analysis.notes.append("best ratio not computed: the table has no synthetic_fraction column")
        return
    if "joint" not in analysis.fits:
        analysis.notes.append("best ratio not computed: it uses the joint law, which was not fitted")
        return
    converged = {f.unit.mixtures[0]: f for f in analysis.fits["joint"] if f.fit.converged}
    fractions = {m: table.synthetic_fraction(m) for m in converged}
    families = ratio_families(fractions)
    if not families:
        analysis.notes.append("best ratio not computed: no family of mixtures with two or more synthetic ratios has converged joint fits")
        return
    sizes = sorted(set(_distinct("N", table)) | set(cfg.extrapolate_N))
    budgets = sorted(set(_distinct("D", table)) | set(cfg.extrapolate_D))
    law = get_law("joint")
    for family, members in families.items():
        thetas = {m: converged[m].fit.mixture_theta(m) for m in members}
        samples = {m: converged[m].thetas(m) for m in members}
        samples = samples if all(v is not None for v in samples.values()) else None
        for N in sizes:
            for D in budgets:
                entry = best_ratio(law, thetas, members, samples, N, D, cfg.confidence)
                analysis.best_ratios.append({"family": family, **entry})


def _irreducible(analysis: Analysis) -> None:
    cfg = analysis.config
    sources = [("joint", f) for f in analysis.fits.get("joint", [])]
    sources += [("joint, shared exponents", f) for f in analysis.shared.get("joint", [])]
    if not sources:
        analysis.notes.append("irreducible loss E not reported: it comes from the joint law, which was not fitted")
    for label, fitted in sources:
        if not fitted.fit.converged:
            continue
        for mixture in fitted.unit.mixtures:
            E = natural_params(fitted.fit.law, fitted.fit.mixture_theta(mixture))["E"]
            samples = fitted.thetas(mixture)
            interval = None if samples is None else percentile_interval(np.exp(samples[:, fitted.fit.law.param_names.index("e")]), cfg.confidence)
            analysis.irreducible.append({
                "fit": label, "mixture": mixture, "E": E, "interval": interval,
                "synthetic_fraction": analysis.table.synthetic_fraction(mixture),
            })
