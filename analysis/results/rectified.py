"""The rectified data law of Lin et al. (2024), and its comparison with the data law.

    L(D) = B / (D_l + D^beta) + E      (at each N, per mixture)

D_l is the "pre-learned data size" of "Selecting Large Language Model to Fine-tune via
Rectified Scaling Law" (Lin et al., 2024), in units of D^beta; `D_l_tokens` = D_l^(1/beta) is
the budget whose D^beta equals it. It is fitted like every law here (laws.py, fit.py): in log
space, theta = (b, l, e, beta) with B = exp(b), D_l = exp(l), E = exp(e),

    log L_hat = log-sum-exp(b - log-sum-exp(l, beta log D),  e),

by the Huber loss (delta 1e-3) of log L_hat - log L, L-BFGS-B with analytic gradients from the
starting grid (fit.GRID's b, e, beta and l), warm-started bootstrap resamples (bootstrap.py).

D_l = 0 is the data law B / D^beta + E. In log space that is l -> -inf: the optimiser stops
wherever D_l no longer matters (often far inside its bound). So "D_l = 0" is judged by its
effect, not by the bound: D_l is *zero* when the ratio D_l / D_min^beta < DL_ZERO_RATIO (D_min:
the smallest budget of the fit), i.e. it changes the predicted reducible loss by less than 0.1%
at every budget run. That is a result ("reduces to the data law"), not a failure. The ratio is
dimensionless, so bootstrap resamples (each with its own beta) are compared through it
(`log_dl_ratio`), never through D_l itself; identify.py holds the rules.
D_l in tokens, D_l^(1/beta), is computed in log space and may overflow to inf (D_l on its bound).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from analysis.bootstrap import percentile_interval
from analysis.identify import DL_ZERO_RATIO
from analysis.laws import HUBER_DELTA, LOG_SCALE_BOUNDS, EXPONENT_BOUNDS, Law, get_law

if TYPE_CHECKING:  # pragma: no cover
    from analysis.fit import FitResult
    from analysis.pipeline import Analysis



class RectifiedObjective:
    """Huber loss of log loss for one mixture's rectified law, with its analytic gradient.

    theta = [b, l, e, beta]. Same interface as laws.HuberObjective (value and gradient scaled by
    1 / (n delta^2) for the optimiser, `huber_sum` unscaled); no shared exponents.
    """

    def __init__(self, law: Law, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray,
                 groups: np.ndarray | None = None, n_groups: int = 1, delta: float = HUBER_DELTA) -> None:
        if not law.pre_learned:
            raise ValueError(f"RectifiedObjective fits the rectified law, got the {law.name} law")
        if n_groups != 1:
            raise ValueError(f"rectified law: exponents are not shared across mixtures, got {n_groups} groups")
        self.law = law
        self.log_d = np.ascontiguousarray(log_d, dtype=float)
        self.log_loss = np.ascontiguousarray(log_loss, dtype=float)
        self.delta = float(delta)
        self.n_groups = 1
        self.n_points = self.log_loss.size
        self.scale = 1.0 / (self.n_points * self.delta**2)
        self.n_params = 4

    def bounds(self) -> list[tuple[float, float]]:
        return [LOG_SCALE_BOUNDS] * 3 + [EXPONENT_BOUNDS]

    def _parts(self, theta):
        b, l, e, beta = (float(v) for v in theta)
        u = beta * self.log_d
        m = np.maximum(u, l)
        s = m + np.log(np.exp(u - m) + np.exp(l - m))  # log(D_l + D^beta)
        t = b - s  # log of the reducible term
        m2 = np.maximum(t, e)
        log_pred = m2 + np.log(np.exp(t - m2) + np.exp(e - m2))
        return l, e, s, t, log_pred

    def log_predict(self, theta: np.ndarray) -> np.ndarray:
        return self._parts(theta)[-1]

    def huber_sum(self, theta: np.ndarray) -> float:
        r = self.log_predict(theta) - self.log_loss
        c = np.clip(r, -self.delta, self.delta)
        return float(c @ r - 0.5 * (c @ c))

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        l, e, s, t, log_pred = self._parts(theta)
        r = log_pred - self.log_loss
        c = np.clip(r, -self.delta, self.delta)
        value = (c @ r - 0.5 * (c @ c)) * self.scale
        c *= self.scale
        w = np.exp(t - log_pred)  # d log L_hat / d t; d log L_hat / d e = 1 - w
        p = np.exp(l - s)  # D_l / (D_l + D^beta): d s / d l; d s / d beta = (1 - p) log D
        cw = c * w
        g_b = cw.sum()
        g_l = -(cw @ p)
        g_e = c.sum() - g_b
        g_beta = -(cw @ ((1.0 - p) * self.log_d))
        return value, np.array([g_b, g_l, g_e, g_beta])


def log_dl_ratio(law: Law, thetas: np.ndarray, d_min: float) -> np.ndarray | float:
    """log(D_l / D_min^beta) of a theta (p,) or a stack (R, p): each row in units of its own beta."""
    thetas = np.asarray(thetas, float)
    l, beta = thetas[..., law.param_names.index("l")], thetas[..., law.param_names.index("beta")]
    out = l - beta * np.log(float(d_min))
    return float(out) if np.ndim(out) == 0 else out


def zero_threshold(law: Law, theta: np.ndarray, d_min: float) -> float:
    """D_l below this is zero (module docstring): DL_ZERO_RATIO x D_min^beta, at theta's beta."""
    beta = float(theta[law.param_names.index("beta")])
    return DL_ZERO_RATIO * float(d_min) ** beta


def _share(log_ratio):
    """D_l / (D_l + D_min^beta) from log(D_l / D_min^beta), without overflow."""
    return 1.0 / (1.0 + np.exp(-np.asarray(log_ratio, float)))


def _log_tokens(law: Law, thetas) -> np.ndarray:
    """log D_l^(1/beta) (NaN where beta is 0)."""
    thetas = np.asarray(thetas, float)
    beta = thetas[..., law.param_names.index("beta")]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(beta > 0, thetas[..., law.param_names.index("l")] / beta, np.nan)


def _exp(x) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.exp(np.asarray(x, float))


def pre_learned(fit: "FitResult", samples: np.ndarray | None = None, confidence: float = 0.95) -> dict | None:
    """D_l of a converged rectified fit: whether it is zero, D_l / D_min^beta, its share of the denominator
    at the smallest budget and D_l in tokens; with bootstrap `samples` (R, p), their intervals."""
    if not fit.converged or not fit.law.pre_learned:
        return None
    d_min = float(fit.unit.D.min())
    log_ratio = log_dl_ratio(fit.law, fit.theta, d_min)
    zero = log_ratio < np.log(DL_ZERO_RATIO)
    tokens = float(_exp(_log_tokens(fit.law, fit.theta))) if not zero else None
    out = {"reduces_to_data_law": bool(zero), "D_l_zero_below": zero_threshold(fit.law, fit.theta, d_min),
           "D_l_ratio": float(_exp(log_ratio)), "D_l_share_at_smallest_D": float(_share(log_ratio)),
           "D_l_tokens": None if tokens is None or np.isnan(tokens) else tokens}
    if samples is not None:
        ratios = log_dl_ratio(fit.law, samples, d_min)
        out["D_l_ratio_interval"] = percentile_interval(_exp(ratios), confidence)
        out["D_l_share_interval"] = percentile_interval(_share(ratios), confidence)
        out["D_l_tokens_interval"] = percentile_interval(_exp(_log_tokens(fit.law, samples)), confidence)
    return out


def _rmsd(fit: "FitResult") -> float:
    return float(np.sqrt(np.mean(fit.log_residuals() ** 2)))


def compare_laws(analysis: "Analysis", data_fits: dict, data_holdouts: dict) -> list[dict]:
    """Rectified vs data law on the same points, per (mixture, N): Huber objective, RMSD of log
    loss and the holdout error (largest D held out). `data_fits` and `data_holdouts` are keyed by
    (mixture, N)."""
    rect_holdouts = {(h.unit.mixtures[0], h.unit.fixed[1]): h for h in analysis.holdouts.get("rectified", [])}
    rows = []
    for fitted in analysis.fits.get("rectified", []):
        unit = fitted.unit
        key = (unit.mixtures[0], unit.fixed[1])
        row = {"condition": analysis.condition, "mixture": key[0], "N": key[1], "points": unit.n_points}
        for name, fit, holdout in (("rectified", fitted.fit, rect_holdouts.get(key)),
                                   ("data", data_fits.get(key), data_holdouts.get(key))):
            entry = {"converged": bool(fit is not None and fit.converged)}
            if fit is not None and fit.converged:
                entry.update(huber_objective=fit.objective, rmsd_log_loss=_rmsd(fit))
            if holdout is not None and holdout.usable:
                entry["holdout_rmae"] = float(holdout.relative_errors.mean())
                entry["holdout_runs"] = int(holdout.held.sum())
            elif holdout is not None:
                entry["holdout_skipped"] = holdout.skipped or holdout.fit.message
            row[name] = entry
        # Derived from the fit: stated only when the fit is identified.
        row["reduces_to_data_law"] = ((pre_learned(fitted.fit) or {}).get("reduces_to_data_law")
                                      if fitted.identified else None)
        row["identified"] = fitted.identified
        rows.append(row)
    return rows


def comparison_summary(rows: list[dict]) -> dict:
    """Totals over the (mixture, N) where both laws converged: Huber sums, mean RMSD, pooled RMAE."""
    both = [r for r in rows if r["rectified"]["converged"] and r["data"]["converged"]]
    out: dict = {"fits_compared": len(both)}
    for name in ("rectified", "data"):
        out[name] = {
            "huber_objective": float(sum(r[name]["huber_objective"] for r in both)) if both else None,
            "rmsd_log_loss": float(np.mean([r[name]["rmsd_log_loss"] for r in both])) if both else None,
        }
    held = [r for r in both if "holdout_rmae" in r["rectified"] and "holdout_rmae" in r["data"]]
    for name in ("rectified", "data"):
        runs = sum(r[name]["holdout_runs"] for r in held)
        out[name]["holdout_rmae"] = (float(sum(r[name]["holdout_rmae"] * r[name]["holdout_runs"] for r in held) / runs)
                                     if runs else None)
    out["holdouts_compared"] = len(held)
    out["rectified_lower_holdout_error"] = sum(r["rectified"]["holdout_rmae"] < r["data"]["holdout_rmae"] for r in held)
    return out


def data_law_for_comparison(analysis: "Analysis", pool) -> tuple[dict, dict]:
    """The data-law fits and holdouts at the rectified fits' (mixture, N): the analysis's own when
    it fitted the data law, else fitted here (no bootstrap) on the same units."""
    from analysis.fit import fit_units
    from analysis.fit_inputs import build_units
    from analysis.validation import holdout_validation

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
