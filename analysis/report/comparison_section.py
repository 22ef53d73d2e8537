"""The report's first section: each mixture against natural text at equal (N, D), beside the seed noise.

A table (a row per (N, D), a column per mixture) and a figure (a panel per N), from data/comparison.py:
the measured differences, no law fitted.
"""

from __future__ import annotations

import numpy as np
from matplotlib import pyplot as plt

from analysis.multi import AnalysisSet
from analysis.report.figures import MAX_WIDTH_IN, count_ticks, grid_shape, render, where
from analysis.report.textfmt import Figure
from analysis.report.textfmt import Section
from analysis.results.model import Analysis
from synthscale.units import format_count

MARKS = {"worse": "↑", "better": "↓", "within noise": "", None: ""}


def noise_text(comparison: dict) -> str:
    noise = comparison["noise"]
    if noise is None:
        return ("No configuration was trained with several seeds: the noise of a single run is not measured, so no "
                "difference can be called larger than it.")
    where_ = "; ".join(f"{m['mixture']} at N={format_count(m['N'])}, D={format_count(m['D'])} (n={m['n']})"
                       for m in noise["measured_at"])
    return (f"Seed noise: standard deviation {noise['std']:.3g} nats, pooled over the configurations trained with "
            f"several seeds ({where_}; {noise['df']} degrees of freedom), assumed the same at every (N, D). A "
            f"difference d exceeds it when |d| > t x sd x sqrt(1/n_mixture + 1/n_natural), t = {comparison['t']:.3g} "
            f"(two-sided Student-t, {comparison['confidence']:.0%}, {noise['df']} df): ↑ the mixture's loss is higher "
            f"(worse) beyond the noise, ↓ lower (better), unmarked: within the noise.")


def verdict_text(comparison: dict) -> str:
    """'14 of 15 differences are worse beyond the noise, 0 better, 1 within it; hq-33pct: ...'."""
    rows = comparison["rows"]
    if not rows:
        return "No mixture was trained at the same (N, D) as the baseline."
    d = np.array([r["difference"] for r in rows])
    span = f"mixture − {comparison['baseline']}: {d.min():+.3f} to {d.max():+.3f} nats over {len(rows)} (N, D, mixture)"
    if comparison["noise"] is None:
        return span + "."
    c = comparison["counts"]
    per = []
    for mixture in dict.fromkeys(r["mixture"] for r in rows):
        mine = [r["verdict"] for r in rows if r["mixture"] == mixture]
        per.append(f"{mixture} " + "/".join(str(mine.count(v)) for v in ("worse", "better", "within noise")))
    return (f"{span}: {c['worse']} worse beyond the noise, {c['better']} better, {c['within noise']} within it "
            f"(per mixture worse/better/within: {', '.join(per)}).")


def comparison_table(comparison: dict) -> tuple[list[str], list[list[str]]]:
    rows = comparison["rows"]
    mixtures = list(dict.fromkeys(r["mixture"] for r in rows))
    cells = {(r["N"], r["D"], r["mixture"]): f"{r['difference']:+.3f}{MARKS[r['verdict']]}" for r in rows}
    places = sorted({(r["N"], r["D"]) for r in rows})
    return (["N", "D", *mixtures],
            [[format_count(n), format_count(d), *[cells.get((n, d, m), "–") for m in mixtures]] for n, d in places])


def comparison_section(aset: AnalysisSet) -> Section:
    s = Section("Each mixture against natural text at equal (N, D)", [
        "Measured, no law fitted: at each (N, D) where a mixture and natural text were both trained, the mixture's "
        "mean loss minus natural text's (nats; positive: the mixture is worse)."])
    for a in aset.analyses:
        comparison = a.comparison
        prefix = f"[{a.condition}] " if aset.many_conditions and a.condition else ""
        if not comparison.get("baseline"):
            s.text(prefix + f"No baseline: {a.baseline_note}.")
            continue
        s.text(prefix + verdict_text(comparison), noise_text(comparison))
        if comparison["rows"]:
            s.table(*comparison_table(comparison))
        if (f := comparison_figure(a)) is not None:
            s.figures.append(f)
    return s


def comparison_figure(analysis: Analysis) -> Figure | None:
    comparison = analysis.comparison
    rows = comparison.get("rows") or []
    if not rows:
        return None
    sizes = sorted({r["N"] for r in rows})
    mixtures = list(dict.fromkeys(r["mixture"] for r in rows))
    palette = dict(zip(mixtures, plt.get_cmap("tab10")(np.arange(len(mixtures)) % 10)))
    n_rows, cols = grid_shape(len(sizes), 4)
    fig, axes = plt.subplots(n_rows, cols, figsize=(min(MAX_WIDTH_IN, 2.9 * cols + 1.6), 2.4 * n_rows),
                             squeeze=False, sharey=True)
    spread = np.geomspace(0.93, 1.07, len(mixtures))  # side by side at each D
    for ax, N in zip(axes.ravel(), sizes):
        for j, mixture in enumerate(mixtures):
            mine = [r for r in rows if r["N"] == N and r["mixture"] == mixture]
            if not mine:
                continue
            D = np.array([r["D"] for r in mine]) * spread[j]
            d = np.array([r["difference"] for r in mine])
            err = np.array([r["threshold"] if r["threshold"] is not None else 0.0 for r in mine])
            ax.errorbar(D, d, yerr=err if err.any() else None, fmt="o", ms=3, lw=0.8, capsize=1.5,
                        color=palette[mixture], label=mixture)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xscale("log")
        count_ticks(ax.xaxis, [r["D"] for r in rows])
        ax.set_title(f"N = {format_count(N)}", fontsize=8)
        ax.set_xlabel("D (tokens)", fontsize=7)
        ax.tick_params(labelsize=6.5)
    axes[0, 0].set_ylabel(f"mixture − {comparison['baseline']} (nats)", fontsize=7)
    for ax in axes.ravel()[len(sizes):]:
        ax.axis("off")
    axes[0, -1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    noise = comparison["noise"]
    caption = (f"Each mixture's mean loss minus {comparison['baseline']}'s at the same (N, D), one panel per size; "
               + (f"bars: ± the noise threshold t x sd x sqrt(1/n_m + 1/n_b) (sd {noise['std']:.3g} nats); a dot "
                  "whose bar does not reach 0 differs beyond the seed noise." if noise else
                  "no bars: the seed noise is not measured (no configuration trained with several seeds).")
               + " Dots at one D are spread slightly sideways to keep them apart.")
    return Figure(f"{analysis.prefix}vs_natural", f"Loss against natural text at equal (N, D){where(analysis)}",
                  caption, render(fig))
