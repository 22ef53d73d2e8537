"""The result model: a fit with its resamples and identification (`Fitted`), and one analysis
(`Analysis`: one target of one condition) with every fit and finding; `to_json` gives fits.json's body."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.core.identify import DL_ZERO_RATIO, Identification, bootstrap_checked, interval_problems
from analysis.core.rectified_law import log_dl_ratio
from analysis.core.settings import AnalysisConfig
from analysis.core.statistics import percentile_interval
from analysis.data.table import ResultsTable
from analysis.fitting.bootstrap import BootstrapSamples
from analysis.fitting.fit import FitResult
from analysis.fitting.holdout import Holdout, holdout_summary
from analysis.fitting.units import FitUnit
from analysis.results.rectified import pre_learned


@dataclass
class Fitted:
    """A fit, its bootstrap resamples (None without bootstrap or convergence) and whether the
    runs identify its parameters (core/identify.py)."""

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
        """The intervals core/identify.py judges: the parameters', with the rectified law's D_l as
        D_l / D_min^beta, each resample in units of its own beta (core/rectified_law.py)."""
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
