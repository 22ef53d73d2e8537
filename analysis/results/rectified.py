"""The rectified law's D_l of a fit: whether it reduces to the data law, D_l / D_min^beta, its share at the
smallest budget and D_l in tokens, with bootstrap intervals (the law itself: core/rectified_law.py).

D_l in tokens, D_l^(1/beta), is computed in log space and may overflow to inf (D_l on its bound).
"""

from __future__ import annotations

import numpy as np

from analysis.core.identify import DL_ZERO_RATIO
from analysis.core.laws import Law
from analysis.core.rectified_law import log_dl_ratio, zero_threshold
from analysis.core.statistics import percentile_interval
from analysis.fitting.fit import FitResult


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
