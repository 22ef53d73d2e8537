"""Where the gains of more data stop: the plateau budget D_p of each rectified-law fit.

With the fitted law L(D) = B / (D_l + D^beta) + E (core/rectified_law.py) at one (mixture, N), the
predicted drop from doubling D is

    drop(D) = L(D) - L(2D) = B (2^beta - 1) D^beta / ((D_l + D^beta)(D_l + 2^beta D^beta)),

computed in log space (no cancellation). D_p is the budget *beyond which* doubling lowers the
predicted loss by less than a tolerance: the smallest D with drop(D') < tol for every D' >= D
(with D_l > 0 the drop first rises, so "the first D where it is small" would be the wrong one).
Two criteria, each its own D_p:

- absolute: drop(D) < tol_abs nats (default 0.01);
- relative: drop(D) < tol_rel x (L(D) - E), a share of the remaining reducible loss (default 5%).
  Under this law that share, (2^beta - 1) D^beta / (D_l + 2^beta D^beta), *rises* with D toward
  1 - 2^-beta: the criterion holds beyond some budget only if 1 - 2^-beta < tol_rel, and then
  from the start. Computed as asked, it usually says "no plateau" (a power law removes a fixed
  share of what remains at every doubling); the report says so.

Solved numerically: the criterion on a log grid of D from the smallest budget of the fit, D_min,
to SEARCH_MULTIPLE x the largest, D_max, then bisection on log D in the last grid step where the
drop is still at or above the tolerance; the same for every bootstrap resample at once.

PLATEAU_RULES says when D_p is reported as a number; otherwise the report says why, without it.
"Larger models peak with fewer tokens": per mixture, log D_p = a + b log N by least squares over
the sizes whose D_p is identified, with bootstrap intervals from the resamples (resample r of
each size's fit together); fewer than 2 such sizes and the trend is not fitted, with the reason.
A resample in which some size has no plateau (D_p infinite) is counted as such, not dropped
silently; the slope's interval and its verdict need MIN_VALID_SHARE of the resamples to have a
plateau at every size, as every other interval does.
"""

from __future__ import annotations

import numpy as np

from analysis.core.identify import MAX_INTERVAL_RATIO, MIN_RESAMPLES, MIN_VALID_SHARE
from analysis.core.laws import Law, natural_params
from analysis.core.statistics import percentile_interval
from synthscale.units import format_count
from analysis.results.model import Analysis, Fitted


SEARCH_MULTIPLE = 1e6
GRID_POINTS = 256
BISECTIONS = 60
CRITERIA = ("absolute", "relative")
PLATEAU_RULES = (
    "D_p is reported only when: the rectified fit is identified (D_l = 0 allowed); D_min <= D_p <= "
    "{multiple:g} x D_max (D_min, D_max: the smallest and largest budgets of the fit); with a bootstrap, at "
    f"least {MIN_VALID_SHARE:.0%} of the resamples converged and the {{confidence:.0%}} percentile interval of D_p "
    f"lies within [D_min, {{multiple:g}} x D_max] and spans at most a factor {MAX_INTERVAL_RATIO:g} (hi/lo)"
)


def plateau_rules(config) -> str:
    return PLATEAU_RULES.format(multiple=config.plateau_max_multiple, confidence=config.confidence)


def log_drops(law: Law, thetas: np.ndarray, log_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log drop(D), log drop(D) / (L(D) - E)) for thetas (p,) or (R, p) at log D (K,) or (R, K)."""
    p = natural_params(law, np.atleast_2d(thetas))
    col = lambda v: np.log(np.asarray(v, float))[:, None]  # noqa: E731
    b, beta = col(p["B"]), np.asarray(p["beta"], float)[:, None]
    l = col(p["D_l"]) if law.pre_learned else np.full_like(b, -np.inf)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_x = beta * log_d
        log_k = beta * np.log(2.0)
        log_km1 = np.log(np.expm1(log_k))
        s1 = np.logaddexp(l, log_x)
        s2 = np.logaddexp(l, log_x + log_k)
        log_share = log_x + log_km1 - s2
        return b - s1 + log_share, log_share


def plateau_budgets(law: Law, thetas: np.ndarray, d_lo: float, d_hi: float, tol: float, criterion: str,
                    points: int = GRID_POINTS) -> np.ndarray:
    """D_p (R,) for thetas (R, p): d_lo where the criterion holds from d_lo on, inf where it still
    fails at d_hi, NaN for NaN rows (failed resamples)."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion: expected one of {CRITERIA}, got {criterion!r}")
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"tolerance: must be a positive number, got {tol!r}")
    which = CRITERIA.index(criterion)
    thetas = np.atleast_2d(np.asarray(thetas, float))
    grid = np.linspace(np.log(d_lo), np.log(d_hi), points)
    log_tol = np.log(tol)
    above = log_drops(law, thetas, grid[None, :])[which] >= log_tol  # (R, K)
    out = np.full(len(thetas), np.nan)
    valid = ~np.isnan(thetas).any(axis=1)
    last = points - 1 - np.argmax(above[:, ::-1], axis=1)
    out[valid & ~above.any(axis=1)] = d_lo
    out[valid & above[:, -1]] = np.inf
    todo = np.flatnonzero(valid & above.any(axis=1) & ~above[:, -1])
    if todo.size:
        lo, hi = grid[last[todo]], grid[last[todo] + 1]
        sub = thetas[todo]
        for _ in range(BISECTIONS):
            mid = 0.5 * (lo + hi)
            still = log_drops(law, sub, mid[:, None])[which][:, 0] >= log_tol
            lo, hi = np.where(still, mid, lo), np.where(still, hi, mid)
        out[todo] = np.exp(hi)
    return out


def _status(value: float, d_min: float, limit: float) -> str:
    if np.isnan(value):
        return "failed"
    if value <= d_min:
        return "before"
    if np.isinf(value):
        return "none"
    return "beyond" if value > limit else "within"


def _why(status: str, criterion: str, tol: float, d_min: float, limit: float, multiple: float) -> str:
    gain = f"{tol:g} nats" if criterion == "absolute" else f"{tol:.0%} of the remaining reducible loss"
    if status == "before":
        return (f"doubling D lowers the predicted loss by less than {gain} at every budget from the smallest "
                f"run (D={format_count(d_min)}) on: the plateau starts at or before the runs (D_p <= D_min)")
    if status == "none":
        return (f"doubling D still lowers the predicted loss by at least {gain} at {SEARCH_MULTIPLE:g} x the largest "
                "budget: no plateau under this fit")
    return (f"the predicted plateau lies beyond {multiple:g} x the largest budget (D={format_count(limit)}): "
            "the runs do not reach it")


def plateau_entry(fitted: "Fitted", criterion: str, tol: float, multiple: float, confidence: float) -> dict:
    """D_p of one rectified fit for one criterion, with its interval or the reason it is not identified."""
    unit = fitted.unit
    mixture = unit.mixtures[0]
    d_min, d_max = float(unit.D.min()), float(unit.D.max())
    limit = multiple * d_max
    entry = {"mixture": mixture, "N": unit.fixed[1], "criterion": criterion, "tolerance": tol,
             "smallest_D": d_min, "largest_D": d_max, "limit_D": limit, "law": "rectified",
             "rests_on": {"runs": unit.n_points, "N": [unit.fixed[1]] * 2, "D": [d_min, d_max]}}
    if not fitted.fit.converged:
        return {**entry, "identified": False, "status": "no fit", "reason": fitted.fit.message, "short": "no fit"}
    law = unit.law
    point = float(plateau_budgets(law, fitted.fit.theta, d_min, SEARCH_MULTIPLE * d_max, tol, criterion)[0])
    status = _status(point, d_min, limit)
    entry["status"] = status
    samples = fitted.thetas(mixture)
    interval = None
    if samples is not None:
        values = plateau_budgets(law, samples, d_min, SEARCH_MULTIPLE * d_max, tol, criterion)
        interval = percentile_interval(values, confidence)
        valid = int((~np.isnan(values)).sum())
        entry.update(resamples=len(values), resamples_valid=valid,
                     resamples_within=int(((values > d_min) & (values <= limit)).sum()))
    reasons = []
    if not fitted.identified:
        reasons.append(("fit", f"the rectified fit is not identified: {fitted.reason()}"))
    if status != "within":
        reasons.append((status, _why(status, criterion, tol, d_min, limit, multiple)))
    if samples is not None:
        if interval is None or entry["resamples_valid"] < MIN_VALID_SHARE * entry["resamples"]:
            reasons.append(("resamples", f"only {entry['resamples_valid']} of {entry['resamples']} resamples converged"))
        elif status == "within":
            lo, hi = interval
            if not np.isfinite(hi) or hi > limit:
                reasons.append(("interval", f"its {confidence:.0%} interval reaches beyond {multiple:g} x the largest "
                                            f"budget (D={format_count(limit)})"))
            elif hi / lo > MAX_INTERVAL_RATIO:
                reasons.append(("interval", f"its {confidence:.0%} interval spans a factor {hi / lo:.3g} (hi/lo), "
                                            "more than a decade"))
    if reasons:
        shorts = {"fit": "fit not identified", "before": "≤ smallest budget", "none": "no plateau",
                  "beyond": f"beyond {multiple:g}x largest budget", "resamples": "resamples fail",
                  "interval": "interval too wide"}
        return {**entry, "identified": False, "reason": "; ".join(r for _, r in reasons),
                "short": ", ".join(shorts[k] for k, _ in reasons),
                "not_identified": {"D_p": point, "interval": interval}}
    return {**entry, "identified": True, "D_p": point, "interval": interval, "beyond_data": point > d_max}


def _line(log_n: np.ndarray, log_dp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares (intercept, slope) of log_dp (R, k) on log_n (k,), row by row."""
    x = log_n - log_n.mean()
    slope = (log_dp - log_dp.mean(axis=1, keepdims=True)) @ x / (x @ x)
    return log_dp.mean(axis=1) - slope * log_n.mean(), slope


def plateau_trend(entries: list[dict], fits: dict[float, "Fitted"], confidence: float) -> dict:
    """log D_p = a + b log N over the sizes whose D_p is identified (entries: one mixture, one criterion)."""
    good = sorted((e for e in entries if e["identified"]), key=lambda e: e["N"])
    head = {"mixture": entries[0]["mixture"], "criterion": entries[0]["criterion"],
            "tolerance": entries[0]["tolerance"], "sizes": [e["N"] for e in good],
            "excluded": [{"N": e["N"], "short": e["short"]} for e in entries if not e["identified"]]}
    if len(good) < 2:
        return {**head, "identified": False,
                "reason": f"{len(good)} size(s) with an identified D_p of {len(entries)}; a trend needs at least 2"}
    log_n = np.log([e["N"] for e in good])
    a, b = _line(log_n, np.log([[e["D_p"] for e in good]]))
    out = {**head, "identified": True, "D_p": [e["D_p"] for e in good], "intercept": float(a[0]), "slope": float(b[0]),
           "slope_interval": None, "intercept_interval": None}
    samples = [fits[e["N"]].thetas(e["mixture"]) for e in good]
    if all(s is not None for s in samples):
        rows = min(len(s) for s in samples)
        dp = np.stack([plateau_budgets(fits[e["N"]].unit.law, s[:rows], e["smallest_D"],
                                       SEARCH_MULTIPLE * e["largest_D"], e["tolerance"], e["criterion"])
                       for e, s in zip(good, samples)], axis=1)
        failed = np.isnan(dp).any(axis=1)
        no_plateau = ~failed & np.isinf(dp).any(axis=1)  # a size without a plateau in this resample
        usable = ~failed & ~no_plateau
        out.update(resamples=rows, resamples_used=int(usable.sum()), resamples_failed=int(failed.sum()),
                   resamples_no_plateau=int(no_plateau.sum()))
        if usable.sum() >= max(MIN_RESAMPLES, MIN_VALID_SHARE * rows):
            ra, rb = _line(log_n, np.log(dp[usable]))
            out["slope_interval"] = percentile_interval(rb, confidence)
            out["intercept_interval"] = percentile_interval(ra, confidence)
        elif rows >= MIN_RESAMPLES:
            out["identified"] = False
            out["reason"] = (f"only {int(usable.sum())} of {rows} resamples have a plateau at every size "
                             f"({int(no_plateau.sum())} have none at some size, {int(failed.sum())} failed); "
                             f"the trend needs {MIN_VALID_SHARE:.0%}")
            out["not_identified"] = {"slope": out.pop("slope"), "intercept": out.pop("intercept")}
    iv = out["slope_interval"]
    if iv is None:
        out["direction"] = "no interval: the direction is not established"
    elif iv[1] < 0:
        out["direction"] = "larger models reach the plateau with fewer tokens"
    elif iv[0] > 0:
        out["direction"] = "larger models reach the plateau with more tokens"
    else:
        out["direction"] = "no trend established: the interval of the slope includes 0"
    return out


def derive_plateaus(analysis: "Analysis") -> None:
    """Fill analysis.plateaus (per mixture, N and criterion) and analysis.plateau_trends."""
    cfg = analysis.config
    fits = analysis.fits.get("rectified", [])
    tolerances = {"absolute": cfg.plateau_tol_abs, "relative": cfg.plateau_tol_rel}
    for fitted in fits:
        for criterion in CRITERIA:
            entry = plateau_entry(fitted, criterion, tolerances[criterion], cfg.plateau_max_multiple, cfg.confidence)
            analysis.plateaus.append({"condition": analysis.condition, **entry})
    for mixture in sorted({f.unit.mixtures[0] for f in fits}):
        by_n = {f.unit.fixed[1]: f for f in fits if f.unit.mixtures[0] == mixture}
        for criterion in CRITERIA:
            entries = [e for e in analysis.plateaus if e["mixture"] == mixture and e["criterion"] == criterion]
            analysis.plateau_trends.append({"condition": analysis.condition,
                                            **plateau_trend(entries, by_n, cfg.confidence)})
