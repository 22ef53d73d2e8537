"""Bootstrap over runs: percentile intervals for every fitted and derived number.

A resample draws, within each mixture of a unit, as many runs as it has, with replacement,
and refits. Refitting from the whole 4,500-point grid a thousand times would take hours, so a
resample is warm-started from the full-data fit: its best optimum plus the other distinct optima
that polishing the best grid results found (up to `FitSettings.resample_starts`, more than 0.05
apart in some log-space parameter; usually one or two), best kept. Resamples are drawn from one seed per unit (the seed and the
unit's label), so results do not depend on the number of workers or on which units are fitted.
A resample that cannot pin down the curve (too few distinct N or D drawn) or does not converge
is counted as failed and left out of the intervals; the count is reported. A resample whose
optimum sits on a bound is kept: leaving it out would narrow the intervals of exactly the fits
whose parameters the runs do not pin down (core/identify.py then flags the wide interval).
"""

from __future__ import annotations

import concurrent.futures as cf
import zlib
from dataclasses import dataclass

import numpy as np

from analysis.core.defaults import DEFAULT_RESAMPLES
from analysis.core.laws import natural_params
from analysis.core.rectified_law import zero_threshold
from analysis.core.settings import FitSettings
from analysis.core.statistics import percentile_interval
from analysis.fitting.fit import FitResult, minimise, select_best, split_theta
from analysis.fitting.units import FitUnit, check_unit
from analysis.fitting.workers import map_tasks

WARM_START_SPACING = 0.05


@dataclass
class BootstrapSamples:
    """Refitted parameters of one unit, one row per resample (NaN where it failed)."""

    unit: FitUnit
    thetas: np.ndarray  # (R, P) log-space, the unit's own layout
    n_failed: int

    @property
    def n_resamples(self) -> int:
        return len(self.thetas)

    def mixture_thetas(self, mixture: str) -> np.ndarray:
        """(R, p) single-mixture thetas (NaN rows where the resample failed)."""
        g = self.unit.mixtures.index(mixture)
        return split_theta(self.unit.law, len(self.unit.mixtures), self.thetas)[g]

    def param_intervals(self, mixture: str, confidence: float) -> dict[str, list[float] | None]:
        params = natural_params(self.unit.law, self.mixture_thetas(mixture))
        return {name: percentile_interval(values, confidence) for name, values in params.items()}

    def summary(self) -> dict:
        return {"resamples": self.n_resamples, "failed": self.n_failed}


def resample_indices(unit: FitUnit, n_resamples: int, seed: int) -> np.ndarray:
    """(R, n) point indices: within each mixture, its runs drawn with replacement."""
    rng = np.random.default_rng([seed, zlib.crc32(unit.label.encode())])
    out = np.empty((n_resamples, unit.n_points), dtype=np.intp)
    start = 0
    for stratum in unit.strata():
        draws = rng.integers(0, stratum.size, size=(n_resamples, stratum.size))
        out[:, start : start + stratum.size] = stratum[draws]
        start += stratum.size
    return out


def warm_starts(fit: FitResult, k: int) -> np.ndarray:
    """The best fit and up to k-1 other grid minima, each >= WARM_START_SPACING from the kept.

    For the rectified law, optima differing only in a D_l that is zero (core/rectified_law.py) are one
    curve: their log D_l is compared from the zero threshold up.
    """
    def key(theta: np.ndarray) -> np.ndarray:
        if not fit.law.pre_learned:
            return theta
        i = fit.law.param_names.index("l")
        out = theta.copy()
        out[i] = max(out[i], np.log(zero_threshold(fit.law, theta, float(fit.unit.D.min()))))
        return out

    kept = [fit.theta]
    for theta in fit.warm_starts:
        if len(kept) == k:
            break
        if all(np.max(np.abs(key(theta) - key(other))) > WARM_START_SPACING for other in kept):
            kept.append(theta)
    return np.array(kept)


def _refit_task(task) -> np.ndarray:
    unit, indices, starts, settings = task
    out = np.full((len(indices), starts.shape[1]), np.nan)
    for row, index in enumerate(indices):
        sample = unit.subset(index)
        if check_unit(sample) is not None:
            continue  # this draw cannot pin the curve down
        objective = sample.objective(settings.delta)
        thetas, values, success = minimise(objective, starts, settings.maxiter)
        result = select_best(sample, objective, thetas, values, success, check=False)
        if result.converged:
            out[row] = result.theta
    return out


def bootstrap_fits(
    fits: list[FitResult],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    settings: FitSettings = FitSettings(),
    pool: cf.Executor | None = None,
    chunk: int = 50,
) -> dict[int, BootstrapSamples]:
    """Bootstrap every converged fit; keyed by the position of the fit in `fits`."""
    if n_resamples < 0:
        raise ValueError(f"bootstrap: resamples must be 0 or more, got {n_resamples}")
    tasks, owners = [], []
    for i, fit in enumerate(fits):
        if not fit.converged or n_resamples == 0:
            continue
        indices = resample_indices(fit.unit, n_resamples, seed)
        starts = warm_starts(fit, settings.resample_starts)
        for lo in range(0, n_resamples, chunk):
            tasks.append((fit.unit, indices[lo : lo + chunk], starts, settings))
            owners.append(i)
    parts = map_tasks(_refit_task, tasks, pool, desc="bootstrap")
    samples: dict[int, BootstrapSamples] = {}
    for i in sorted(set(owners)):
        thetas = np.concatenate([p for p, owner in zip(parts, owners) if owner == i])
        failed = int(np.isnan(thetas).any(axis=1).sum())
        samples[i] = BootstrapSamples(fits[i].unit, thetas, failed)
    return samples
