"""The report's identification section: the rules, one table of every planned fit, and a legend."""

from __future__ import annotations

from analysis.core.identify import RECTIFIED_RULES, RULES
from analysis.multi import AnalysisSet
from analysis.report.textfmt import Section, fmt
from analysis.results.identification import CODES, tally_text
from analysis.results.plateau import plateau_rules
from synthscale.units import format_count


def _bootstrap_cell(row: dict) -> str:
    b = row["bootstrap"]
    if b is None:
        return "–"
    if not b["checked"]:
        return f"not checked ({b['resamples']} resample)"
    return f"{b['resamples'] - b['failed']}/{b['resamples']}"


def _where_cell(row: dict) -> str:
    for column in ("N", "D"):
        if column in row:
            return f"{column}={format_count(row[column])}"
    return "all runs"


def identification_section(aset: AnalysisSet, data: dict) -> Section:
    rows = data["identification"]
    cfg = aset.config
    s = Section("Identification: which fits the runs pin down", [
        f"{tally_text(rows)}. A fit is identified when the runs pin its parameters down; only identified fits "
        "give numbers (parameters, speed-up, best ratio, E, plateau). Fits that converged but are not identified "
        "are still drawn with their residuals below: they show how well the law describes the runs.",
        f"Rules: {RULES}."])
    if "rectified" in cfg.laws:
        s.text(f"Rules of the rectified law: {RECTIFIED_RULES}. Plateau: {plateau_rules(cfg)}.")
    legend = [f"'{code}': {CODES[code]}" for code in dict.fromkeys(_base(c) for r in rows for c in r["codes"])]
    if legend:
        s.text("Reason codes: " + "; ".join(legend) + ".")
    cond = ["condition"] if aset.many_conditions else []
    s.table(["law", "mixture", *cond, "at", "runs", "RMS log residual", "status", "reason codes", "bootstrap valid"],
            [[r["law"], r["mixture"], *([str(r.get("condition") or "")] if cond else []), _where_cell(r), str(r["runs"]),
              "–" if r["rms_log_residual"] is None else fmt(r["rms_log_residual"], 2), r["status"],
              ", ".join(r["codes"]) or "–", _bootstrap_cell(r)] for r in rows])
    unchecked = [r for r in rows if r["bootstrap"] is not None and not r["bootstrap"]["checked"]]
    if unchecked:
        s.text(f"{len(unchecked)} fit(s) are not bootstrap-checked (fewer than 2 resamples): their intervals are "
               "unknown, and bounds and E alone decided.")
    return s


def _base(code: str) -> str:
    """'beta at bound' -> 'at bound', 'E wide' -> 'wide'; other codes as they are."""
    for suffix in ("at bound", "wide"):
        if code.endswith(suffix):
            return suffix
    return code
