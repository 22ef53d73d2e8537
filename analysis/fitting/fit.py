"""Fitting a law to a unit: L-BFGS-B from every point of the starting grid, best kept.

The grid is the one of Hoffmann et al. as the issue states it: alpha, beta in {0, 0.5, ..., 2},
e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25} (4,500 starts for the joint law, 150 for the
data or model law); the rectified law adds log D_l in {-10, 0, 5, 10, 20} (750 starts). A fit is reported as converged when L-BFGS-B reported success at the best
loss found; otherwise the result carries the reason and no numbers. Converged is not identified:
`problems` lists what makes the optimum a boundary solution (a parameter on a bound, E driven
to zero; see core/identify.py), and the bootstrap adds its own checks in the pipeline.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from analysis.core.identify import Problem, point_problems
from analysis.core.laws import HuberObjective, Law, natural_params, predict_loss
from analysis.core.settings import GRID, FitSettings
from analysis.fitting.units import FitUnit
from analysis.fitting.workers import map_tasks, one_blas_thread


def starting_grid(law: Law, overrides: dict[str, tuple[float, ...]] | None = None) -> np.ndarray:
    """(S, p) single-mixture starting points in the law's parameter order."""
    axes = [np.asarray((overrides or {}).get(name, GRID[name]), float) for name in law.param_names]
    return np.array(list(itertools.product(*axes)), dtype=float)


def split_theta(law: Law, n_groups: int, theta: np.ndarray) -> list[np.ndarray]:
    """A (shared) parameter vector or stack (..., P) -> one single-mixture theta per group."""
    theta = np.asarray(theta, dtype=float)
    k = len(law.group_names)
    exps = theta[..., n_groups * k :]
    return [np.concatenate([theta[..., g * k : (g + 1) * k], exps], axis=-1) for g in range(n_groups)]


def join_theta(law: Law, thetas: list[np.ndarray], exponents: np.ndarray) -> np.ndarray:
    k = len(law.group_names)
    return np.concatenate([np.asarray(t, float)[:k] for t in thetas] + [np.asarray(exponents, float)])


def minimise(
    objective: HuberObjective, starts: np.ndarray, maxiter: int, ftol: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """L-BFGS-B (analytic gradient) from each start: (thetas, scaled losses, success flags).

    `ftol` None keeps scipy's default (about 2.2e-9, relative reduction of the loss).
    """
    options = {"maxiter": maxiter} if ftol is None else {"maxiter": maxiter, "ftol": ftol}
    thetas = np.empty((len(starts), objective.n_params))
    values = np.empty(len(starts))
    success = np.empty(len(starts), dtype=bool)
    bounds = objective.bounds()
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        for i, start in enumerate(starts):
            result = minimize(
                objective, start, jac=True, method="L-BFGS-B", bounds=bounds, options=options
            )
            thetas[i] = result.x
            values[i] = result.fun if np.isfinite(result.fun) else np.inf
            success[i] = bool(result.success)
    return thetas, values, success


def _minimise_task(task) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    objective, starts, maxiter, ftol = task
    return minimise(objective, starts, maxiter, ftol)


@dataclass
class FitResult:
    unit: FitUnit
    converged: bool
    message: str
    theta: np.ndarray | None  # log-space, shared layout for shared units
    objective: float | None  # unscaled Huber sum at theta
    n_starts: int
    n_succeeded: int
    warm_starts: np.ndarray = field(repr=False, default_factory=lambda: np.empty((0, 0)))
    problems: list[Problem] = field(default_factory=list)  # at the optimum: bounds, E driven to zero

    @property
    def law(self) -> Law:
        return self.unit.law

    def mixture_theta(self, mixture: str) -> np.ndarray:
        g = self.unit.mixtures.index(mixture)
        return split_theta(self.law, len(self.unit.mixtures), self.theta)[g]

    def params(self, mixture: str | None = None) -> dict[str, float] | None:
        """{A, B, E, alpha, beta} of a mixture (the only one unless shared); None if not converged."""
        if not self.converged:
            return None
        return natural_params(self.law, self.mixture_theta(mixture or self.unit.mixtures[0]))

    def predict(self, N=None, D=None, mixture: str | None = None) -> np.ndarray:
        if not self.converged:
            raise ValueError(f"{self.unit.label}: the fit did not converge, it predicts nothing")
        return predict_loss(self.law, self.mixture_theta(mixture or self.unit.mixtures[0]), N, D)

    def predict_points(self) -> np.ndarray:
        """Predicted loss at each of the unit's own points."""
        pred = np.empty(self.unit.n_points)
        for g, mixture in enumerate(self.unit.mixtures):
            idx = self.unit.groups == g
            pred[idx] = self.predict(self.unit.N[idx], self.unit.D[idx], mixture)
        return pred

    def log_residuals(self) -> np.ndarray:
        return np.log(self.unit.loss) - np.log(self.predict_points())

    def to_dict(self) -> dict:
        out = {
            **self.unit.key(),
            "formula": self.law.formula,
            "points": self.unit.n_points,
            "run_ids": list(self.unit.run_ids),
            "converged": self.converged,
            "message": self.message,
            "starts": self.n_starts,
            "starts_succeeded": self.n_succeeded,
        }
        if self.converged:
            out["huber_objective"] = self.objective
            out["params"] = {m: self.params(m) for m in self.unit.mixtures} if self.unit.shared else self.params()
            out["rms_log_residual"] = float(np.sqrt(np.mean(self.log_residuals() ** 2)))
        return out


def select_best(
    unit: FitUnit, objective: HuberObjective, thetas: np.ndarray, values: np.ndarray, success: np.ndarray,
    n_starts: int | None = None,
    warm: np.ndarray | None = None,
    check: bool = True,
) -> FitResult:
    """Keep the lowest loss and decide whether it converged (and, with `check`, list its problems).

    `n_starts` is what the result reports as the number of starts (default: all rows given);
    `warm` are the distinct optima kept for warm-starting bootstrap resamples.
    """
    n_starts = n_starts or len(values)
    n_ok = int(success[:n_starts].sum())  # polished rows, appended after the grid, not counted
    finite = np.isfinite(values)
    if not finite.any():
        return FitResult(unit, False, f"did not converge: no start of {n_starts} gave a finite loss",
                         None, None, n_starts, n_ok)
    order = np.argsort(np.where(finite, values, np.inf))
    best = order[0]
    tol = 1e-9 * max(1.0, abs(values[best]))
    reached = success & (values <= values[best] + tol)
    theta = thetas[best] if success[best] else (thetas[np.flatnonzero(reached)[0]] if reached.any() else thetas[best])
    warm = np.empty((0, thetas.shape[1])) if warm is None else warm
    if not reached.any():
        return FitResult(
            unit, False,
            f"did not converge: L-BFGS-B stopped without success at the best loss found "
            f"({n_ok} of {n_starts} starts succeeded, all at higher losses)",
            None, None, n_starts, n_ok, warm,
        )
    min_loss = {m: float(unit.loss[unit.groups == g].min()) for g, m in enumerate(unit.mixtures)} if check else {}
    problems = point_problems(unit.law, theta, unit.mixtures, min_loss) if check else []
    return FitResult(unit, True, "converged", theta, objective.huber_sum(theta), n_starts, n_ok, warm, problems)


def _distinct_minima(sorted_thetas: np.ndarray, k: int, spacing: float = 0.05) -> np.ndarray:
    """Up to k minima, best first, more than `spacing` apart (max norm, log space)."""
    kept: list[np.ndarray] = []
    for theta in sorted_thetas:
        if all(np.max(np.abs(theta - other)) > spacing for other in kept):
            kept.append(theta)
            if len(kept) == k:
                break
    return np.array(kept)


def fit_unit(
    unit: FitUnit,
    settings: FitSettings = FitSettings(),
    starts: np.ndarray | None = None,
    pool: cf.Executor | None = None,
) -> FitResult:
    """Fit `unit` from `starts` (default: the full grid for a one-mixture unit)."""
    return fit_units([unit], settings, pool, [starts])[0]


def fit_units(
    units: list[FitUnit],
    settings: FitSettings = FitSettings(),
    pool: cf.Executor | None = None,
    starts: list[np.ndarray | None] | None = None,
) -> list[FitResult]:
    """Fit many units in one pass over the pool.

    Stage 1 runs L-BFGS-B from every start (the full grid unless `starts` are given) with
    `grid_ftol`; stage 2 polishes the `polish` best distinct results with scipy's default,
    tighter ftol. Stage 1 is what costs: a looser ftol there makes the full grid about 1.5x
    faster, and the polish gives the best optimum the precision of a default run.
    """
    starts = starts or [None] * len(units)
    tasks, owners = [], []
    for i, (unit, unit_starts) in enumerate(zip(units, starts)):
        if unit_starts is None:
            if unit.shared:
                raise ValueError(f"{unit.label}: a shared-exponent unit needs starts (see shared_starts)")
            unit_starts = starting_grid(unit.law, settings.grid)
        objective = unit.objective(settings.delta)
        for chunk in _chunks(unit_starts, pool):
            tasks.append((objective, chunk, settings.maxiter, settings.grid_ftol))
            owners.append(i)
    parts = map_tasks(_minimise_task, tasks, pool, desc="grid fits")
    with one_blas_thread():
        return [_polish_and_select(unit, [p for p, owner in zip(parts, owners) if owner == i], settings)
                for i, unit in enumerate(units)]


def _polish_and_select(unit: FitUnit, parts: list, settings: FitSettings) -> FitResult:
    """Stage 2 of `fit_units` for one unit: polish the best grid results, keep the best."""
    thetas, values, success = (np.concatenate([p[j] for p in parts]) for j in range(3))
    objective = unit.objective(settings.delta)
    order = np.argsort(np.where(np.isfinite(values), values, np.inf))
    n_grid = len(values)
    best = _distinct_minima(thetas[order[np.isfinite(values[order])]], settings.polish, spacing=1e-3)
    polished = minimise(objective, best, settings.maxiter)
    thetas, values, success = (np.concatenate([a, b]) for a, b in zip((thetas, values, success), polished))
    # Warm starts for the bootstrap: the distinct optima among the polished results.
    p_order = np.argsort(np.where(np.isfinite(polished[1]), polished[1], np.inf))
    warm = _distinct_minima(polished[0][p_order[np.isfinite(polished[1][p_order])]], settings.resample_starts)
    return select_best(unit, objective, thetas, values, success, n_grid, warm)


def _chunks(starts: np.ndarray, pool: cf.Executor | None, size: int = 150) -> list[np.ndarray]:
    """One task per unit without a pool; with one, tasks of about `size` starts."""
    if pool is None or len(starts) <= size:
        return [starts]
    return np.array_split(starts, math.ceil(len(starts) / size))


def shared_starts(unit: FitUnit, own_fits: dict[str, FitResult]) -> np.ndarray:
    """Starts for a shared-exponent fit, from the mixtures' own (converged) fits.

    Each mixture starts from its own (a, b, e); the shared exponents start at the mean of the
    mixtures' exponents, at each mixture's exponents, and at every exponent pair of the grid.
    A full product grid over all mixtures would have 900^M points; this keeps the search
    anchored on the per-mixture optima. Mixtures without a converged fit of their own start
    from the best grid point of the law.
    """
    law = unit.law
    k = len(law.group_names)
    own = []
    for g, mixture in enumerate(unit.mixtures):
        fit = own_fits.get(mixture)
        if fit is not None and fit.converged:
            own.append(fit.mixture_theta(mixture))
        else:
            sub = unit.subset(np.flatnonzero(unit.groups == g))
            grid = starting_grid(law)
            objective = sub.objective()
            with one_blas_thread():
                own.append(grid[np.argmin([objective(t)[0] for t in grid])])
    own = np.array(own)
    exponent_sets = [own[:, k:].mean(axis=0)] + [row[k:] for row in own]
    exponent_sets += [np.array(p) for p in itertools.product(*[GRID[n] for n in law.exponent_names])]
    return np.array([join_theta(law, list(own), exps) for exps in exponent_sets])
