"""Holdout validation.

Holdout, as the paper does it: within a unit, the runs at the largest budget D (data law, and
optionally the joint law) or the largest size N (model law) are held out, the law is fitted on
the rest from the full starting grid, and the held-out runs are predicted. The error reported is
the relative mean absolute error, RMAE = mean over held-out runs of |predicted - observed| /
observed (the paper: 0.41% for data scaling, 0.30% for model scaling).
"""

from __future__ import annotations

import concurrent.futures as cf
from dataclasses import dataclass

import numpy as np

from analysis.core.settings import FitSettings
from analysis.fitting.fit import FitResult, fit_unit
from analysis.fitting.units import FitUnit, check_unit
from synthscale.units import format_count


@dataclass
class Holdout:
    unit: FitUnit  # the whole unit
    column: str  # "D" or "N"
    held_value: float
    held: np.ndarray  # boolean mask of held-out points in `unit`
    fit: FitResult | None  # fitted on the points not held out
    skipped: str | None = None

    @property
    def predicted(self) -> np.ndarray:
        held = self.unit.subset(np.flatnonzero(self.held))
        out = np.empty(held.n_points)
        for g, mixture in enumerate(held.mixtures):
            idx = held.groups == g
            if idx.any():
                out[idx] = self.fit.predict(held.N[idx], held.D[idx], mixture)
        return out

    @property
    def observed(self) -> np.ndarray:
        return self.unit.loss[self.held]

    @property
    def relative_errors(self) -> np.ndarray:
        return np.abs(self.predicted - self.observed) / self.observed

    @property
    def usable(self) -> bool:
        return self.skipped is None and self.fit is not None and self.fit.converged

    def to_dict(self) -> dict:
        out = {**self.unit.key(), "held_out": f"largest {self.column}", self.column + "_held_out": self.held_value}
        if not self.usable:
            reason = self.skipped or (self.fit.message if self.fit else "not fitted")
            return {**out, "skipped": reason}
        return {
            **out,
            "fit_on_runs": int((~self.held).sum()),
            "fit_params": self.fit.to_dict()["params"],
            "predictions": [
                {"run_id": r, "N": float(n), "D": float(d), "observed": float(o), "predicted": float(p),
                 "relative_error": float(e)}
                for r, n, d, o, p, e in zip(self.unit.run_ids[self.held], self.unit.N[self.held],
                                             self.unit.D[self.held], self.observed, self.predicted,
                                             self.relative_errors)
            ],
            "rmae": float(self.relative_errors.mean()),
        }


def split_largest(unit: FitUnit, column: str) -> Holdout:
    """Hold out the runs at the unit's largest `column`; say why when the rest cannot be fitted."""
    values = unit.N if column == "N" else unit.D
    largest = float(values.max())
    held = values == largest
    train = unit.subset(np.flatnonzero(~held))
    problem = check_unit(train) if train.n_points else "no runs left"
    skipped = None
    if problem is not None:
        skipped = f"without the runs at {column}={format_count(largest)} the rest cannot be fitted: {problem}"
    return Holdout(unit, column, largest, held, None, skipped)


def holdout_validation(
    units: list[FitUnit],
    column: str,
    settings: FitSettings = FitSettings(),
    pool: cf.Executor | None = None,
    starts_for=None,
) -> list[Holdout]:
    """Fit each unit without its largest `column` and predict the held-out runs.

    `starts_for(train_unit)` gives the starts of shared-exponent units (None: the full grid).
    """
    results = []
    for unit in units:
        holdout = split_largest(unit, column)
        if holdout.skipped is None:
            train = unit.subset(np.flatnonzero(~holdout.held))
            starts = starts_for(train) if starts_for is not None else None
            holdout.fit = fit_unit(train, settings, starts=starts, pool=pool)
        results.append(holdout)
    return results


def holdout_summary(holdouts: list[Holdout]) -> dict:
    """RMAE over all held-out runs of all usable holdouts (the paper's single figure)."""
    usable = [h for h in holdouts if h.usable]
    if not usable:
        return {"rmae": None, "held_out_runs": 0, "units": 0, "skipped": len(holdouts)}
    errors = np.concatenate([h.relative_errors for h in usable])
    return {
        "rmae": float(errors.mean()),
        "max_relative_error": float(errors.max()),
        "held_out_runs": int(errors.size),
        "units": len(usable),
        "skipped": len(holdouts) - len(usable),
    }
