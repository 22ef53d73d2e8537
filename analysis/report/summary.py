"""The short answers: a summary of at most five lines of about LINE_LIMIT characters, and the
per-domain findings table.

Summary lines (`summary_lines`):
1. what was analysed (and the label, e.g. "tiny-scale demonstration");
2. measured, no law: each mixture against natural text at equal (N, D), beside the seed noise,
   and which way the differences point;
3. how many fits the runs identify, per law, and the commonest reasons they do not;
4. the speed-up of each mixture over the baseline at the largest N it was trained at and that
   N's own largest budget, or, when no finding can be stated, one line saying so;
5. the best synthetic ratio and the irreducible loss E.
Every finding names its law, the runs it rests on and whether it is measured or extrapolated;
items that do not fit a line are counted ("+k more in the report"). With several conditions the
counts are summed and items carry their [condition].
"""

from __future__ import annotations

from analysis.report.textfmt import fmt
from analysis.results.identification import tally, tally_text
from synthscale.units import format_count
from analysis.multi import AnalysisSet
from analysis.results.model import Analysis


LINE_LIMIT = 200


def _iv(interval, digits: int = 3, pct: bool = False) -> str:
    if not interval:
        return ""
    if pct:
        return f" [{interval[0]:.0%}, {interval[1]:.0%}]"
    return f" [{fmt(interval[0], digits)}, {fmt(interval[1], digits)}]"


def family_name(family: str | None, generator: str | None) -> str:
    if not family:
        return "natural"
    return f"{family}/{generator}" if generator else family


def largest(analysis: "Analysis") -> tuple[float, float]:
    runs = analysis.table.runs
    return float(runs["N"].max()), float(runs["D"].max())


def _range(values) -> str:
    lo, hi = values
    return format_count(lo) if lo == hi else f"{format_count(lo)}–{format_count(hi)}"


def rests_on_text(span: dict) -> str:
    """'10 runs, N 1.05M, D 26K–100K': the runs a finding rests on."""
    if not span or not span.get("runs"):
        return "no runs"
    return f"{span['runs']} runs, N {_range(span['N'])}, D {_range(span['D'])}"


def where_text(beyond: bool) -> str:
    return "extrapolated" if beyond else "measured"


def best_ratio_texts(analysis: "Analysis") -> list[str]:
    """'family/generator 33% [0%, 67%] (joint law, 30 runs ...; measured)' at the largest (N, D), per family."""
    N, D = largest(analysis)
    out = []
    for r in analysis.best_ratios:
        if r["identified"] and r["N"] == N and r["D"] == D:
            out.append(f"{family_name(r['family'], r['generator'])} {r['best_ratio']:.0%}"
                       f"{_iv(r.get('best_ratio_interval'), pct=True)} at N={format_count(N)}, D={format_count(D)} "
                       f"(joint law, {rests_on_text(r['rests_on'])}; {where_text(r['beyond_data'])})")
    return out


def speedup_at_largest_run(entry: dict) -> dict | None:
    """The speed-up of an identified entry at its N's own largest budget (the largest D both ran at N)."""
    if not entry["identified"] or entry.get("largest_run_D") is None:
        return None
    return next((a for a in entry["at_budgets"] if a["D"] == entry["largest_run_D"]), None)


def speedup_texts(analysis: "Analysis") -> list[str]:
    """Per mixture, at the largest N where its speed-up is identified: the value at that N's own largest run."""
    found = []
    for mixture in dict.fromkeys(s["mixture"] for s in analysis.speedups):
        entries = [s for s in analysis.speedups if s["mixture"] == mixture and speedup_at_largest_run(s)]
        if not entries:
            continue
        s = max(entries, key=lambda e: e["N"])
        at, rest = speedup_at_largest_run(s), s["rests_on"]
        found.append((at["speedup"], f"{mixture} {fmt(at['speedup'], 3)}{_iv(at['interval'])} at N={format_count(s['N'])}, "
                                     f"D={format_count(at['D'])} ({s['law']} law; {rest['mixture']['runs']}+"
                                     f"{rest['baseline']['runs']} runs; {where_text(at['beyond_data'])})"))
    return [text for _, text in sorted(found, key=lambda x: -x[0])]


def irreducible_texts(analysis: "Analysis", fit: str = "joint") -> list[str]:
    return [f"E {r['mixture']} {fmt(r['E'])}{_iv(r['interval'])} ({fit} law, {r['rests_on']['runs']} runs; "
            "extrapolated: the asymptote)" for r in analysis.irreducible if r["fit"] == fit and r["identified"]]


def fit_items(prefix: str, items: list[str], limit: int = LINE_LIMIT) -> str:
    """prefix + items joined by '; ' while the line stays within `limit` (the first item always),
    then '+k more in the report'."""
    line, shown = prefix, 0
    for item in items:
        candidate = line + ("; " if shown else "") + item
        if shown and len(candidate) > limit - 24:
            break
        line, shown = candidate, shown + 1
    return line + (f"; +{len(items) - shown} more in the report" if shown < len(items) else "")


def _tagged(aset: "AnalysisSet", texts_of) -> list[str]:
    return [(f"[{a.condition}] " if aset.many_conditions and a.condition else "") + t
            for a in aset.analyses for t in texts_of(a)]


def model_free_line(aset: "AnalysisSet") -> str:
    rows = [r for a in aset.analyses for r in a.comparison.get("rows", [])]
    baseline = aset.analyses[0].baseline or "the baseline"
    if not rows:
        return f"vs {baseline} at equal (N, D): no mixture was trained at the same (N, D) as {baseline}"
    d = [r["difference"] for r in rows]
    span = f"mixture − {baseline} {min(d):+.3f} to {max(d):+.3f} nats over {len(rows)} (N, D, mixture)"
    noises = [a.comparison["noise"] for a in aset.analyses if a.comparison.get("noise")]
    if not noises:
        return f"measured vs {baseline} at equal (N, D): {span}; seed noise not measured (no seed repeats)"
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("worse", "better", "within noise")}
    sd = "/".join(f"{n['std']:.2g}" for n in noises)
    return (f"measured vs {baseline} at equal (N, D): {counts['worse']} of {len(rows)} worse beyond the seed noise "
            f"(sd {sd} nats), {counts['better']} better, {counts['within noise']} within; {span}")


def summary_lines(aset: "AnalysisSet") -> list[str]:
    table, cfg = aset.table, aset.config
    conditions = [a.condition or "all runs" for a in aset.analyses]
    head = (f"{aset.label}: " if aset.label else "") + (
        f"{table.path.name}, {table.target}, {len(table.runs)} runs, "
        f"condition{'s' if len(conditions) > 1 else ''} {', '.join(conditions)}; "
        f"{cfg.bootstrap} bootstrap resamples, {cfg.confidence:.0%} intervals")
    rows = [r for a in aset.analyses for r in a.identification]
    lines = [head, model_free_line(aset), "fits: " + tally_text(rows)]
    speedups, ratios = _tagged(aset, speedup_texts), _tagged(aset, best_ratio_texts)
    energies = _tagged(aset, irreducible_texts)
    if not (speedups or ratios or energies):
        planned = [k for k, v in (("speed-up", "speedups"), ("best ratio", "best_ratios"), ("E", "irreducible"))
                   if aset.flat(v)]
        named = " or ".join(", ".join(planned).rsplit(", ", 1)) if planned else "finding"
        lines.append(f"no {named} can be stated: the fits they need are not identified"
                     + (" (the runs show no loss floor)" if "E→0" in tally(rows)["codes"] else ""))
        return lines[:5]
    baseline = aset.analyses[0].baseline
    lines.append(fit_items(f"speed-up over {baseline}, each N at its largest run: ", speedups) if speedups else
                 "speed-up: none identified" + (" (no baseline)" if baseline is None else ""))
    lines.append(fit_items("best ratio: ", ratios + energies) if ratios else fit_items("", energies) if energies
                 else "best ratio and E: none identified")
    return lines[:5]


def domain_rows(aset: "AnalysisSet") -> tuple[list[dict], list[dict]]:
    """Per target (the mean loss, then each domain) and condition: E per mixture and the best
    ratio per family at the largest (N, D)."""
    targets = {aset.table.target: aset.analyses, **aset.domains}
    e_rows, ratio_rows = [], []
    for target, analyses in targets.items():
        for a in analyses:
            for r in a.irreducible:
                if r["fit"] != "joint":
                    continue
                e_rows.append({"target": target, "condition": a.condition, "mixture": r["mixture"],
                               "text": (f"{fmt(r['E'])}{_iv(r['interval'])}" if r["identified"]
                                        else f"not identified ({r['short']})"),
                               "E": r["E"], "interval": r["interval"], "identified": r["identified"]})
            N, D = largest(a)
            for r in a.best_ratios:
                name = family_name(r["family"], r["generator"])
                if r["identified"] and (r["N"], r["D"]) == (N, D):
                    text = f"{r['best_ratio']:.0%}{_iv(r.get('best_ratio_interval'), pct=True)}"
                elif not r["identified"]:
                    text = f"not identified ({r['short']})"
                else:
                    continue
                ratio_rows.append({"target": target, "condition": a.condition, "family": name, "text": text,
                                   "identified": r["identified"]})
    return e_rows, ratio_rows
