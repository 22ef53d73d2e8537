"""The paper's findings from fitted laws: speed-up, crossings, best ratio, irreducible loss.

Speed-up of mixture m over the baseline b at budget D (at a fixed N):

    speedup(D) = D_b(L_m(D)) / D,   D_b(L) = (B_b / (L - E_b'))^(1 / beta_b),

the budget the baseline needs to reach the mixture's loss, over D. E_b' is the baseline's loss
floor at that N: E_b for the data law, A_b / N^alpha_b + E_b for the joint law. Where L_m(D) is
at or below the baseline's floor, the baseline never gets there and the speed-up is infinite.
Every number is computed for the point fit and for each bootstrap resample (intervals).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

from analysis.core.laws import Law, natural_params, predict_loss
from analysis.core.statistics import percentile_interval


def baseline_floor_and_scale(law: Law, theta: np.ndarray, N: float | None):
    """(E_b', B_b, beta_b) of the baseline's D-curve at size N; arrays for stacks of thetas."""
    p = natural_params(law, theta)
    floor = np.asarray(p["E"], dtype=float)
    if law.uses_n:
        floor = floor + np.asarray(p["A"]) / float(N) ** np.asarray(p["alpha"])
    return floor, np.asarray(p["B"], dtype=float), np.asarray(p["beta"], dtype=float)


def speedup(law: Law, theta_mix: np.ndarray, theta_base: np.ndarray, D: np.ndarray, N: float | None = None) -> np.ndarray:
    """Speed-up at budgets D (n,); theta stacks (R, p) give (R, n). inf where unreachable."""
    D = np.asarray(D, dtype=float)
    loss_mix = predict_loss(law, theta_mix, N=N, D=D)
    floor, scale, beta = baseline_floor_and_scale(law, theta_base, N)
    if np.ndim(floor):
        floor, scale, beta = floor[:, None], scale[:, None], beta[:, None]
    gap = loss_mix - floor
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        needed = np.where(gap > 0, (scale / np.where(gap > 0, gap, 1.0)) ** (1.0 / beta), np.inf)
    needed = np.where(np.isnan(gap), np.nan, needed)  # failed resamples stay NaN
    return needed / D


def crossings(law: Law, theta_mix: np.ndarray, theta_base: np.ndarray, D_range: tuple[float, float],
              N: float | None = None, points: int = 400) -> list[float]:
    """Budgets D in D_range where the mixture's and the baseline's fitted curves cross."""
    log_d = np.linspace(np.log(D_range[0]), np.log(D_range[1]), points)

    def diff(x):
        d = np.exp(np.atleast_1d(x))
        return predict_loss(law, theta_mix, N=N, D=d) - predict_loss(law, theta_base, N=N, D=d)

    values = diff(log_d)
    out = []
    for i in np.flatnonzero(np.sign(values[:-1]) * np.sign(values[1:]) < 0):
        root = brentq(lambda x: float(diff(x)[0]), log_d[i], log_d[i + 1], xtol=1e-10)
        out.append(float(np.exp(root)))
    return out


def crossing_summary(law, theta_mix, theta_base, samples_mix, samples_base, D_range, N, confidence) -> dict:
    """Crossings of the point fits, and how often / where resampled curves first cross."""
    point = crossings(law, theta_mix, theta_base, D_range, N)
    out = {"D_range": [float(D_range[0]), float(D_range[1])], "crossings_D": point}
    if samples_mix is not None and samples_base is not None:
        firsts = []
        valid = 0
        for tm, tb in zip(samples_mix, samples_base):
            if np.isnan(tm).any() or np.isnan(tb).any():
                continue
            valid += 1
            found = crossings(law, tm, tb, D_range, N, points=100)
            if found:
                firsts.append(found[0])
        out["resamples_with_crossing"] = len(firsts)
        out["resamples_valid"] = valid
        out["first_crossing_interval"] = percentile_interval(np.array(firsts), confidence) if firsts else None
    return out


def best_ratio(law: Law, thetas: dict[str, np.ndarray], fractions: dict[str, float],
               samples: dict[str, np.ndarray] | None, N: float, D: float, confidence: float) -> dict:
    """The lowest predicted loss over the family's ratios at (N, D), with the curve across ratios."""
    mixtures = list(fractions)
    losses = np.array([float(predict_loss(law, thetas[m], N=[N], D=[D])[0]) for m in mixtures])
    best = int(np.argmin(losses))
    out = {
        "N": float(N), "D": float(D),
        "best_mixture": mixtures[best], "best_ratio": fractions[mixtures[best]],
        "curve": [{"mixture": m, "ratio": fractions[m], "predicted_loss": float(v)} for m, v in zip(mixtures, losses)],
    }
    if samples is not None:
        stack = np.stack([predict_loss(law, samples[m], N=[N], D=[D])[:, 0] for m in mixtures], axis=1)
        ok = ~np.isnan(stack).any(axis=1)
        winners = np.argmin(stack[ok], axis=1) if ok.any() else np.array([], dtype=int)
        for j, entry in enumerate(out["curve"]):
            entry["interval"] = percentile_interval(stack[:, j], confidence)
            entry["share_of_resamples_best"] = float(np.mean(winners == j)) if winners.size else None
        out["resamples_valid"] = int(ok.sum())
        # The best ratio is a choice among the family's ratios: its interval is the percentile
        # interval of the ratio that wins in each resample.
        ratios = np.array([fractions[m] for m in mixtures])[winners]
        tail = (1.0 - confidence) / 2.0 * 100.0
        out["best_ratio_interval"] = (
            [float(np.percentile(ratios, tail, method="lower")), float(np.percentile(ratios, 100 - tail, method="higher"))]
            if winners.size >= 2 else None)
    return out
