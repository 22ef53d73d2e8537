"""The report's findings from the fitted laws: speed-up, best ratio, irreducible loss E, extrapolation.

Each finding from identified fits is a row naming the law, the runs it rests on and whether it is
measured inside them or extrapolated. The findings whose fits are not identified collapse into one
line per kind, counting why (the identification table has the details): no reason list is repeated.
"""

from __future__ import annotations

from collections import Counter

from analysis.multi import AnalysisSet
from analysis.report.finding_plots import best_ratio_figures, irreducible_figure, speedup_figure
from analysis.report.summary import family_name, rests_on_text, where_text
from analysis.report.textfmt import Section, fmt, interval_text, with_interval
from synthscale.units import format_count


def collapsed(what: str, bad: list[dict], total: int, needs: str) -> str:
    """'24 of 24 speed-ups cannot be stated: the data-law fits they need are not identified (E→0: 24).'"""
    return f"{len(bad)} of {total} {what} cannot be stated: {needs} ({_count([b['short'] for b in bad])}); see Identification."


def _cond(aset: AnalysisSet, entry: dict) -> list[str]:
    return [str(entry.get("condition") or "")] if aset.many_conditions else []


def speedup_block(aset: AnalysisSet, data: dict, s: Section) -> None:
    speedups = data["speedup"]
    cond = ["condition"] if aset.many_conditions else []
    s.text(f"Speed-up over the natural baseline ({aset.config.speedup_law} law): the budget the baseline needs to "
           "reach the mixture's loss, over the mixture's budget, at each N's own largest run. Baseline"
           f"{' per condition' if cond else ''}: " + "; ".join(b["why"] for b in data["baseline"]) + ".")
    if not speedups:
        return
    good = [sp for sp in speedups if sp["identified"]]
    asked = sorted(aset.config.extrapolate_D)
    rows = []
    for sp in good:
        at = {a["D"]: a for a in sp["at_budgets"]}
        own = at.get(sp["largest_run_D"])
        rest = sp["rests_on"]
        cells = [with_interval(own["speedup"], own["interval"]) + f" at D={format_count(own['D'])}, "
                 + where_text(own["beyond_data"]) if own else "–"]
        cells += [with_interval(at[d]["speedup"], at[d]["interval"]) + ", " + where_text(at[d]["beyond_data"])
                  for d in asked if d in at]
        rows.append([sp["mixture"], family_name(sp["family"], sp["generator"]), *_cond(aset, sp),
                     format_count(sp["N"]), f"{rest['mixture']['runs']} + {rest['baseline']['runs']}", *cells])
    if rows:
        s.table(["mixture", "family/generator", *cond, "N", "runs (mixture + baseline)", "speed-up at the largest run",
                 *[f"at D={format_count(d)}" for d in asked]], rows)
        s.text("Measured: the budget lies within the mixture's runs at that N and the budget the baseline needs "
               "within the baseline's; otherwise extrapolated (the figure shows every budget).")
        crossing = [sp for sp in good if sp["crossing"]["crossings_D"] or sp["crossing"].get("resamples_with_crossing")]
        if crossing:
            s.table(["mixture", *cond, "N", "curves cross at D", "resamples with a crossing", "first crossing interval"],
                    [[sp["mixture"], *_cond(aset, sp), format_count(sp["N"]),
                      ", ".join(format_count(d) for d in sp["crossing"]["crossings_D"]) or "none in range",
                      f"{sp['crossing'].get('resamples_with_crossing', '–')}/{sp['crossing'].get('resamples_valid', '–')}",
                      interval_text(sp["crossing"].get("first_crossing_interval"), format_count)] for sp in crossing])
        else:
            s.text("No fitted curve crosses the baseline's within the budgets, in the point fits or any resample.")
        s.figures += [f for a in aset.analyses if (f := speedup_figure(a)) is not None]
    bad = [sp for sp in speedups if not sp["identified"]]
    if bad:
        s.text(collapsed("speed-ups", bad, len(speedups), f"the {aset.config.speedup_law}-law fits they need are not "
                                                          "identified or not made"))


def best_ratio_block(aset: AnalysisSet, data: dict, s: Section) -> None:
    ratios = data["best_ratio"]
    if not ratios:
        return
    cond = ["condition"] if aset.many_conditions else []
    good = [r for r in ratios if r["identified"]]
    if good:
        s.text("Best synthetic ratio per (family, generator): the ratio with the lowest predicted loss (joint law) "
               "at each N (rows) and D (columns); [interval]: the ratios that win across the bootstrap resamples; "
               "* extrapolated (outside some member's runs).")
    budgets = sorted({r["D"] for r in good})
    cells: dict[tuple, dict] = {}
    for r in good:
        key = (family_name(r["family"], r["generator"]), *_cond(aset, r), rests_on_text(r["rests_on"]))
        iv = r.get("best_ratio_interval")
        cells.setdefault((key, r["N"]), {})[r["D"]] = (f"{r['best_ratio']:.0%}" + (f" [{iv[0]:.0%}, {iv[1]:.0%}]" if iv
                                                                                  else "")
                                                      + ("*" if r["beyond_data"] else ""))
    if cells:
        s.table(["family/generator", *cond, "rests on", "N", *[f"D={format_count(d)}" for d in budgets]],
                [[*key, format_count(N), *[by_d.get(d, "–") for d in budgets]] for (key, N), by_d in cells.items()])
        for a in aset.analyses:
            s.figures += best_ratio_figures(a)
    bad = [r for r in ratios if not r["identified"]]
    families = len({(r["family"], r["generator"], r.get("condition")) for r in ratios})
    if bad:
        shorts = [part for r in bad for part in r["short"].split("; ")]
        s.text(f"{len(bad)} of {families} families' best ratios cannot be stated: a member's joint-law fit is not "
               f"identified or not made ({_count(shorts)}); see Identification.")


def _count(shorts: list[str]) -> str:
    """'E→0: 20, too few runs: 4' from short reasons 'mixture: code, code'."""
    why = Counter(code for short in shorts for code in short.split(": ", 1)[-1].split(", "))
    return ", ".join(f"{k}: {n}" for k, n in why.most_common())


def irreducible_block(aset: AnalysisSet, data: dict, s: Section) -> None:
    rows = data["irreducible_loss"]
    if not rows:
        return
    cond = ["condition"] if aset.many_conditions else []
    good = [r for r in rows if r["identified"]]
    if good:
        s.text("Irreducible loss E (joint law): the law's asymptote at infinite N and D, so always an extrapolation.")
        s.table(["fit", "mixture", "family/generator", *cond, "synthetic fraction", "E", "rests on"],
                [[r["fit"], r["mixture"], family_name(r["family"], r["generator"]), *_cond(aset, r),
                  fmt(r["synthetic_fraction"], 3), with_interval(r["E"], r["interval"]), rests_on_text(r["rests_on"])]
                 for r in good])
        s.figures += [f for a in aset.analyses if (f := irreducible_figure(a)) is not None]
    bad = [r for r in rows if not r["identified"]]
    if bad:
        s.text(collapsed("irreducible losses E", bad, len(rows), "their joint-law fits are not identified"))


def extrapolation_block(aset: AnalysisSet, data: dict, s: Section) -> None:
    if not data["extrapolation"]:
        return
    cond = ["condition"] if aset.many_conditions else []
    s.text("Predicted losses at the sizes and budgets asked for, from identified fits only:")
    s.table(["law", "mixture", *cond, "N", "D", "predicted loss", "rests on", "measured?"],
            [[e["law"], e["mixture"], *_cond(aset, e), format_count(e["N"]), format_count(e["D"]),
              with_interval(e["predicted_loss"], e["interval"]), rests_on_text(e["rests_on"]),
              where_text(e["beyond_data"])] for e in data["extrapolation"]])


def findings_section(aset: AnalysisSet, data: dict) -> Section:
    s = Section("Findings from the fitted laws")
    speedup_block(aset, data, s)
    best_ratio_block(aset, data, s)
    irreducible_block(aset, data, s)
    extrapolation_block(aset, data, s)
    return s
