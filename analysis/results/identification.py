"""One identification table: a row per planned fit, (law, mixture, N or D), with a short reason code.

The report shows every fit the analysis planned in one table, identified or not, with the runs it
rests on, how well the law describes them (RMS of the log residuals: shown even when a parameter
is not identified, since it says how well the curve is described, not what a parameter is) and
why it is not identified, as codes explained in one legend (CODES). Everything else the report
says about a fit that is not identified is one line per section pointing here.
"""

from __future__ import annotations

from collections import Counter
import numpy as np

from analysis.core.identify import bootstrap_checked
from analysis.results.model import Analysis, Fitted


# Reason codes, in the order the legend lists them: code -> what it means.
CODES = {
    "too few runs": "not fitted: fewer runs, or fewer distinct sizes or budgets, than the law's parameters need",
    "no convergence": "L-BFGS-B did not succeed at the best loss found: no numbers",
    "E→0": "E driven to zero: the runs show no loss floor",
    "at bound": "a parameter on an optimiser bound (named after the code)",
    "wide": "a bootstrap interval too wide for its rule (parameter named after the code)",
    "resamples": "too few bootstrap resamples converged",
}


def _where(unit) -> dict:
    return {} if unit.fixed is None else {unit.fixed[0]: unit.fixed[1]}


def fitted_row(law: str, fitted: "Fitted") -> dict:
    unit, fit = fitted.unit, fitted.fit
    who = unit.mixtures[0] if not unit.shared else "+".join(unit.mixtures) + " (shared exponents)"
    row = {"law": law, "mixture": who, **_where(unit), "condition": unit.condition, "runs": unit.n_points,
           "rms_log_residual": float(np.sqrt(np.mean(fit.log_residuals() ** 2))) if fit.converged else None}
    samples = fitted.samples
    row["bootstrap"] = None if samples is None else {
        "resamples": samples.n_resamples, "failed": samples.n_failed, "checked": bootstrap_checked(samples.n_resamples)}
    if not fit.converged:
        return {**row, "status": "no convergence", "codes": ["no convergence"], "reason": fit.message}
    if fitted.identified:
        return {**row, "status": "identified", "codes": [], "reason": ""}
    codes = list(dict.fromkeys(p.short for p in fitted.identification.problems))  # core/identify.py's short codes
    return {**row, "status": "not identified", "codes": codes, "reason": fitted.reason()}


def unfitted_row(law: str, unit, message: str) -> dict:
    who = unit.mixtures[0] if not unit.shared else "+".join(unit.mixtures) + " (shared exponents)"
    return {"law": law, "mixture": who, **_where(unit), "condition": unit.condition, "runs": unit.n_points,
            "rms_log_residual": None, "bootstrap": None, "status": "not fitted", "codes": ["too few runs"],
            "reason": message}


def identification_rows(analysis: "Analysis") -> list[dict]:
    """Every planned fit of the analysis's laws (and shared-exponent fits), in law order, then mixture and N or D."""
    rows = []
    for law in analysis.config.laws:
        these = [fitted_row(law, f) for f in analysis.fits.get(law, [])]
        these += [unfitted_row(law, u, m) for u, m in analysis.unfitted if u.law.name == law]
        these += [fitted_row(law, f) for f in analysis.shared.get(law, [])]
        rows += sorted(these, key=lambda r: (r["mixture"] != analysis.baseline, r["mixture"], r.get("N", 0),
                                             r.get("D", 0)))
    return rows


def tally(rows: list[dict]) -> dict:
    """{fits, identified, per law {fits, identified}, codes: {code: count}} of identification rows."""
    laws: dict[str, dict] = {}
    for r in rows:
        entry = laws.setdefault(r["law"], {"fits": 0, "identified": 0})
        entry["fits"] += 1
        entry["identified"] += r["status"] == "identified"
    codes = Counter(c for r in rows for c in r["codes"])
    return {"fits": len(rows), "identified": sum(r["status"] == "identified" for r in rows), "laws": laws,
            "codes": dict(codes.most_common())}


def tally_text(rows: list[dict]) -> str:
    """'0 of 37 fits identified (data 0/28, joint 0/9); reasons: E→0 37'."""
    t = tally(rows)
    laws = ", ".join(f"{law} {v['identified']}/{v['fits']}" for law, v in t["laws"].items())
    codes = ", ".join(f"{code} {n}" for code, n in t["codes"].items())
    return f"{t['identified']} of {t['fits']} fits identified ({laws})" + (f"; reasons: {codes}" if codes else "")
