"""The short answers: a summary of at most five lines, and the per-domain findings table.

Summary lines (`summary_lines`), each with intervals or "not identified (why)":
1. what was analysed (and the label, e.g. "tiny-scale demonstration");
2. the best synthetic ratio per (family, generator) at the largest N and D of the runs;
3. the speed-up of each mixture over the baseline, at the largest N it was trained at and that N's
   own largest budget (never a budget beyond that N's runs);
4. the irreducible loss E per mixture (joint law);
5. seed-to-seed noise beside the differences between mixtures.
With several conditions, each line holds every condition, prefixed [condition].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from synthscale.units import format_count

if TYPE_CHECKING:  # pragma: no cover
    from analysis.multi import AnalysisSet
    from analysis.pipeline import Analysis


def _num(x, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, str):
        return "∞" if x == "inf" else x
    x = float(x)
    if x != x:
        return "–"
    if x in (float("inf"), float("-inf")):
        return "∞" if x > 0 else "-∞"
    return f"{x:.{digits}g}"


def _iv(interval, digits: int = 3, pct: bool = False) -> str:
    if not interval:
        return ""
    if pct:
        return f" [{interval[0]:.0%}, {interval[1]:.0%}]"
    return f" [{_num(interval[0], digits)}, {_num(interval[1], digits)}]"


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
    """'family/generator: 33% [0%, 67%] (joint law, 30 runs ...; measured)' at the largest (N, D) of the runs."""
    N, D = largest(analysis)
    out = []
    for r in analysis.best_ratios:
        name = family_name(r["family"], r["generator"])
        if not r["identified"]:
            if not any(o.startswith(name + ":") for o in out):
                out.append(f"{name}: not identified ({r['short']})")
            continue
        if r["N"] == N and r["D"] == D:
            out.append(f"{name}: {r['best_ratio']:.0%}{_iv(r.get('best_ratio_interval'), pct=True)} ({r['best_mixture']}; "
                       f"joint law, {rests_on_text(r['rests_on'])}; {where_text(r['beyond_data'])})")
    return out


def speedup_at_largest_run(entry: dict) -> dict | None:
    """The speed-up of an identified entry at its N's own largest budget (the largest D both mixtures ran at N)."""
    if not entry["identified"] or entry.get("largest_run_D") is None:
        return None
    return next((a for a in entry["at_budgets"] if a["D"] == entry["largest_run_D"]), None)


def speedup_texts(analysis: "Analysis") -> list[str]:
    """Per mixture, at the largest N it has a speed-up entry: the value at that N's own largest run."""
    out = []
    for mixture in dict.fromkeys(s["mixture"] for s in analysis.speedups):
        entries = [s for s in analysis.speedups if s["mixture"] == mixture and s.get("largest_run_D") is not None]
        if not entries:
            continue
        s = max(entries, key=lambda e: e["N"])
        at = speedup_at_largest_run(s)
        if at is None:
            out.append(f"{mixture} not identified ({s['short']})")
            continue
        rest = s["rests_on"]
        out.append(f"{mixture} {_num(at['speedup'], 3)}{_iv(at['interval'])} at N={format_count(s['N'])}, "
                   f"D={format_count(at['D'])} ({s['law']} law; {rest['mixture']['runs']}+{rest['baseline']['runs']} "
                   f"runs; {where_text(at['beyond_data'])})")
    return out


def irreducible_texts(analysis: "Analysis", fit: str = "joint") -> list[str]:
    out = []
    for r in analysis.irreducible:
        if r["fit"] != fit:
            continue
        if r["identified"]:
            out.append(f"{r['mixture']} {_num(r['E'])}{_iv(r['interval'])} ({rests_on_text(r['rests_on'])}; "
                       "extrapolated: the law's asymptote)")
        else:
            out.append(f"{r['mixture']} not identified ({r['short']})")
    return out


def seed_text(analysis: "Analysis") -> str | None:
    effects = analysis.seeds.get("effects", [])
    if not effects:
        return None
    e = max(effects, key=lambda x: (x["N"], x["D"]))
    who = ", ".join(f"{r['mixture']} n={r['n']}" for r in e["repeated"])
    diff = e["mixture_differences"]
    text = (f"at N={format_count(e['N'])}, D={format_count(e['D'])} ({who}) seed std {_num(e['seed_std'], 3)}, "
            f"range {_num(e['seed_range'], 3)}")
    if diff and diff["pairs"] == 1:
        text += (f" vs. the mixture difference {_num(diff['max'], 3)} "
                 f"({'beyond' if diff['beyond_seed_range'] else 'within'} the seed range)")
    elif diff:
        text += (f" vs. mixture differences {_num(diff['min'], 3)}–{_num(diff['max'], 3)} "
                 f"(median {_num(diff['median'], 3)}; {diff['beyond_seed_range']} of {diff['pairs']} pairs beyond the seed range)")
    return text


def _joined(aset: "AnalysisSet", texts_of) -> str:
    parts = []
    for a in aset.analyses:
        texts = texts_of(a)
        body = "; ".join(texts) if texts else "none"
        parts.append((f"[{a.condition}] " if aset.many_conditions and a.condition else "") + body)
    return " | ".join(parts)


def summary_lines(aset: "AnalysisSet") -> list[str]:
    table, cfg = aset.table, aset.config
    first = aset.analyses[0]
    conditions = [a.condition or "all runs" for a in aset.analyses]
    head = (f"{aset.label}: " if aset.label else "") + (
        f"{table.path.name}, {table.target}, {len(table.runs)} runs, "
        f"condition{'s' if len(conditions) > 1 else ''} {', '.join(conditions)}; "
        f"{cfg.confidence:.0%} bootstrap intervals ({cfg.bootstrap} resamples)")
    N, D = largest(first)
    lines = [head]
    if any(a.best_ratios for a in aset.analyses):
        lines.append(f"best ratio at the largest N={format_count(N)}, D={format_count(D)}: "
                     + _joined(aset, best_ratio_texts))
    else:
        lines.append(_first_note(aset, "best ratio not computed", "best ratio: none"))
    if any(a.speedups for a in aset.analyses):
        lines.append(f"speed-up over {first.baseline}, each N at its own largest run: " + _joined(aset, speedup_texts))
    else:
        lines.append(_first_note(aset, "speed-up not computed", "speed-up: none"))
    if any(a.irreducible for a in aset.analyses):
        lines.append("E (joint law): " + _joined(aset, irreducible_texts))
    else:
        lines.append(_first_note(aset, "irreducible loss E not reported", "E: none"))
    seeds = [(a, seed_text(a)) for a in aset.analyses]
    if any(t for _, t in seeds):
        lines.append("seed noise: " + " | ".join(
            (f"[{a.condition}] " if aset.many_conditions and a.condition else "") + t for a, t in seeds if t))
    else:
        lines.append("seed noise: no configuration was trained with several seeds")
    return lines[:5]


def _first_note(aset: "AnalysisSet", topic: str, default: str) -> str:
    """The note that says why a finding is missing (notes of several conditions are prefixed)."""
    return next((n for n in aset.all_notes() if topic in n), default)


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
                               "text": (f"{_num(r['E'])}{_iv(r['interval'])}" if r["identified"]
                                        else f"not identified ({r['short']})"),
                               "E": r["E"], "interval": r["interval"], "identified": r["identified"]})
            for text in best_ratio_texts(a):
                name, _, value = text.partition(": ")
                ratio_rows.append({"target": target, "condition": a.condition, "family": name, "text": value})
    return e_rows, ratio_rows
