"""The rectified law against the data law on the same points, per (mixture, N): Huber objective, RMSD of
log loss and the holdout error (the fair comparison: the rectified law contains the data law)."""

from __future__ import annotations

import numpy as np

from analysis.fitting.fit import FitResult
from analysis.results.model import Analysis
from analysis.results.rectified import pre_learned


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
