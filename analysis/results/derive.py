"""The findings of one analysis, from its identified fits only.

Speed-up (per N, per mixture over the natural baseline), best ratio (per (family, generator)
at each (N, D)), irreducible loss E (per mixture) and extrapolations. Each entry names its
condition, family and generator. A finding that needs a fit which is missing or not identified
is still listed, with `identified: false` and the reason, and no number.
"""

from __future__ import annotations

import numpy as np

from analysis.core.laws import get_law, natural_params
from analysis.core.statistics import percentile_interval
from analysis.data.grouping import inside, inside_runs, mixture_labels, runs_span
from analysis.data.grouping import ratio_families
from analysis.results.extrapolation import extrapolate
from analysis.results.findings import best_ratio, crossing_summary, speedup
from analysis.results.model import Analysis


def derive_findings(analysis: "Analysis") -> None:
    _extrapolations(analysis)
    _speedups(analysis)
    _best_ratios(analysis)
    _irreducible(analysis)


def _distinct(column: str, analysis: "Analysis") -> list[float]:
    return sorted(set(analysis.table.runs[column].astype(float)))


def _who(analysis: "Analysis", mixture: str) -> dict:
    family, generator = analysis.table.label(mixture)
    return {"condition": analysis.condition, "mixture": mixture, "family": family or None,
            "generator": generator or None}


def _extrapolations(analysis: "Analysis") -> None:
    cfg = analysis.config
    if not (cfg.extrapolate_N or cfg.extrapolate_D):
        return
    N_values = list(cfg.extrapolate_N) or _distinct("N", analysis)
    D_values = list(cfg.extrapolate_D) or _distinct("D", analysis)
    skipped = []
    for name, fitted in analysis.fits.items():
        fixed = get_law(name).fixed
        if fixed == "N" and not cfg.extrapolate_D or fixed == "D" and not cfg.extrapolate_N:
            continue
        for f in fitted:
            if f.fit.converged and not f.identified:
                skipped.append(f.unit.label)
                continue
            for row in extrapolate(f.fit, f.samples, N_values, D_values, cfg.confidence):
                analysis.extrapolations.append({**row, "condition": analysis.condition})
    if skipped:
        analysis.notes.append(f"no extrapolation from {len(skipped)} fit(s) that are not identified "
                              f"(e.g. {skipped[0]})")


def _speedups(analysis: "Analysis") -> None:
    """Speed-up of each mixture over the baseline, per N, at every budget; where the mixture or the
    baseline has no run at an N (a design choice, with the data law), nothing is planned there."""
    cfg, table = analysis.config, analysis.table
    law_name = cfg.speedup_law
    if analysis.baseline is None:
        analysis.notes.append(f"speed-up not computed: no baseline, {analysis.baseline_note}")
        return
    if law_name not in analysis.fits:
        analysis.notes.append(f"speed-up not computed: it uses the {law_name} law, which was not fitted")
        return
    law = get_law(law_name)
    budgets = sorted(set(_distinct("D", analysis)) | set(cfg.extrapolate_D))
    d_range = (min(budgets), max(budgets))
    grid = np.geomspace(d_range[0], d_range[1], 60)
    sizes = _distinct("N", analysis) if law_name == "data" else sorted(set(_distinct("N", analysis)) | set(cfg.extrapolate_N))
    base_name, runs = analysis.baseline, table.runs
    unplanned = []
    for N in sizes:
        fixed = N if law_name == "data" else None
        base = analysis.find(law_name, base_name, fixed)
        base_span = runs_span(runs[(runs["mixture"] == base_name) & (runs["N"] == N)])
        for mixture in table.mixtures:
            if mixture == base_name:
                continue
            mix_span = runs_span(runs[(runs["mixture"] == mixture) & (runs["N"] == N)])
            if law_name == "data" and not (mix_span["runs"] and base_span["runs"]):
                unplanned.append(mixture)
                continue
            mix = analysis.find(law_name, mixture, fixed)
            entry = {"law": law_name, **_who(analysis, mixture), "baseline": base_name, "N": N,
                     "rests_on": {"mixture": _fit_span(mix, mix_span), "baseline": _fit_span(base, base_span)},
                     "largest_run_D": (min(mix_span["D"][1], base_span["D"][1])
                                       if mix_span["runs"] and base_span["runs"] else None)}
            where = f" at N={N:g}" if law_name == "data" else ""
            if base is None or mix is None:
                who = base_name if base is None else mixture
                analysis.speedups.append({**entry, "identified": False, "short": f"{who}: too few runs",
                                          "reason": f"{who!r} has no {law_name}-law fit{where} (too few runs)"})
                continue
            if not (base.identified and mix.identified):
                bad, name = (base, base_name) if not base.identified else (mix, mixture)
                analysis.speedups.append({**entry, "identified": False, "short": f"{name}: {bad.short()}",
                                          "reason": f"{name!r} {law_name}-law fit{where}: {bad.reason()}"})
                continue
            n_arg = None if law_name == "data" else N
            tm, tb = mix.fit.mixture_theta(mixture), base.fit.mixture_theta(base_name)
            sm, sb = mix.thetas(mixture), base.thetas(base_name)
            curve = speedup(law, tm, tb, grid, n_arg)
            band = speedup(law, sm, sb, grid, n_arg) if sm is not None and sb is not None else None
            at = speedup(law, tm, tb, np.array(budgets), n_arg)
            at_band = speedup(law, sm, sb, np.array(budgets), n_arg) if band is not None else None
            analysis.speedups.append({
                **entry, "identified": True,
                "at_budgets": [
                    {"D": d, "speedup": float(at[j]), "baseline_budget": float(at[j] * d),
                     "interval": percentile_interval(at_band[:, j], cfg.confidence) if at_band is not None else None,
                     # measured: D among the mixture's runs at N, and the budget the baseline needs among its own
                     "beyond_data": not (inside(mix_span, D=d) and inside(base_span, D=float(at[j] * d)))}
                    for j, d in enumerate(budgets)
                ],
                "curve": {
                    "D": grid.tolist(), "speedup": curve.tolist(),
                    "interval": None if band is None else [percentile_interval(band[:, j], cfg.confidence)
                                                           for j in range(grid.size)],
                },
                "crossing": crossing_summary(law, tm, tb, sm, sb, d_range, n_arg, cfg.confidence),
            })
    if unplanned:
        analysis.notes.append(f"speed-up ({law_name} law) left out where a mixture or the baseline has no run at an N: "
                              f"{len(unplanned)} (mixture, N) pair(s) the runs do not cover, by design")


def _fit_span(fitted, span: dict) -> dict:
    """The runs a fit rests on (its unit's), else those of the table at that place."""
    if fitted is None:
        return span
    unit = fitted.unit
    return {"runs": unit.n_points, "N": [float(unit.N.min()), float(unit.N.max())],
            "D": [float(unit.D.min()), float(unit.D.max())]}


def _best_ratios(analysis: "Analysis") -> None:
    cfg, table = analysis.config, analysis.table
    if not table.has_synthetic_fraction:
        analysis.notes.append("best ratio not computed: the table has no synthetic_fraction column")
        return
    if "joint" not in analysis.fits:
        analysis.notes.append("best ratio not computed: it uses the joint law, which was not fitted")
        return
    joint = {f.unit.mixtures[0]: f for f in analysis.fits["joint"]}
    families = ratio_families(mixture_labels(table))
    if not families:
        analysis.notes.append("best ratio not computed: no (family, generator) has two or more ratios "
                              "(the natural mixture included)")
        return
    sizes = sorted(set(_distinct("N", analysis)) | set(cfg.extrapolate_N))
    budgets = sorted(set(_distinct("D", analysis)) | set(cfg.extrapolate_D))
    law = get_law("joint")
    for (family, generator), members in families.items():
        head = {"condition": analysis.condition, "family": family, "generator": generator,
                "mixtures": list(members)}
        missing = [m for m in members if m not in joint]
        bad = [m for m in members if m in joint and not joint[m].identified]
        if missing or bad:
            reasons = [f"{m!r} has no joint fit (too few runs)" for m in missing]
            reasons += [f"{m!r} joint fit: {joint[m].reason()}" for m in bad]
            short = [f"{m}: too few runs" for m in missing] + [f"{m}: {joint[m].short()}" for m in bad]
            analysis.best_ratios.append({**head, "identified": False, "reason": "; ".join(reasons),
                                         "short": "; ".join(short)})
            continue
        thetas = {m: joint[m].fit.mixture_theta(m) for m in members}
        samples = {m: joint[m].thetas(m) for m in members}
        samples = samples if all(v is not None for v in samples.values()) else None
        spans = {m: _fit_span(joint[m], {}) for m in members}
        runs = table.runs
        rests_on = {"runs": sum(sp["runs"] for sp in spans.values()),
                    "N": [min(sp["N"][0] for sp in spans.values()), max(sp["N"][1] for sp in spans.values())],
                    "D": [min(sp["D"][0] for sp in spans.values()), max(sp["D"][1] for sp in spans.values())]}
        for N in sizes:
            for D in budgets:
                entry = best_ratio(law, thetas, members, samples, N, D, cfg.confidence)
                # measured when (N, D) lies within every member's own runs (the joint law interpolates)
                measured = all(inside_runs(runs[runs["mixture"] == m], N, D) for m in members)
                analysis.best_ratios.append({**head, "identified": True, "law": "joint", "rests_on": rests_on,
                                             "beyond_data": not measured, **entry})


def _irreducible(analysis: "Analysis") -> None:
    cfg = analysis.config
    sources = [("joint", f) for f in analysis.fits.get("joint", [])]
    sources += [("joint, shared exponents", f) for f in analysis.shared.get("joint", [])]
    if not sources:
        analysis.notes.append("irreducible loss E not reported: it comes from the joint law, which was not fitted")
    for label, fitted in sources:
        for mixture in fitted.unit.mixtures:
            runs = analysis.table.runs
            row = {"fit": label, "law": "joint", **_who(analysis, mixture),
                   "synthetic_fraction": analysis.table.synthetic_fraction(mixture),
                   "rests_on": runs_span(runs[runs["mixture"] == mixture]),
                   "beyond_data": True}  # E is the law's asymptote: an extrapolation to infinite N and D
            if not fitted.identified:
                analysis.irreducible.append({**row, "E": None, "interval": None, "identified": False,
                                             "reason": fitted.reason(mixture), "short": fitted.short()})
                continue
            E = natural_params(fitted.fit.law, fitted.fit.mixture_theta(mixture))["E"]
            samples = fitted.thetas(mixture)
            e_col = fitted.fit.law.param_names.index("e")
            interval = None if samples is None else percentile_interval(np.exp(samples[:, e_col]), cfg.confidence)
            analysis.irreducible.append({**row, "E": E, "interval": interval, "identified": True})
