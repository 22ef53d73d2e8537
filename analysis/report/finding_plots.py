"""Figures of the findings from identified fits: irreducible loss, speed-up, best synthetic ratio."""

from __future__ import annotations

import numpy as np
from matplotlib import pyplot as plt

from analysis.data.labels import slug
from analysis.report.figures import colors, count_ticks, plain_log_axis, render, where
from analysis.report.textfmt import Figure
from analysis.results.model import Analysis
from synthscale.units import format_count


def irreducible_figure(analysis: Analysis) -> Figure | None:
    rows = [r for r in analysis.irreducible if r["fit"] == "joint" and r["identified"]]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.0, 0.5 + 0.3 * len(rows) + 1.0))
    y = np.arange(len(rows))
    E = np.array([r["E"] for r in rows])
    lo = np.array([r["interval"][0] if r["interval"] else r["E"] for r in rows])
    hi = np.array([r["interval"][1] if r["interval"] else r["E"] for r in rows])
    # a percentile interval need not contain the point fit (few resamples): bars never negative
    ax.errorbar(E, y, xerr=np.clip([E - lo, hi - E], 0, None), fmt="o", capsize=4, color="navy")
    ax.set_yticks(y, [f"{r['mixture']}" + (f" ({r['synthetic_fraction']:.0%} synthetic)" if np.isfinite(r["synthetic_fraction"]) else "") for r in rows])
    ax.set_xlabel("irreducible loss E")
    ax.set_title(f"Irreducible loss per mixture{where(analysis)}", fontsize=10)
    c = analysis.config
    caption = (f"E of the joint law {analysis.fits['joint'][0].fit.law.formula} fitted per mixture on all its runs; "
               f"bars: {c.confidence:.0%} bootstrap percentile intervals ({c.bootstrap} resamples of runs)"
               if c.bootstrap else "E of the joint law per mixture (no bootstrap: no intervals)")
    caption += ". Mixtures whose fit is not identified are left out."
    return Figure(f"{analysis.prefix}irreducible_loss", f"Irreducible loss E{where(analysis)}", caption, render(fig))


def speedup_figure(analysis: Analysis) -> Figure | None:
    speedups = [s for s in analysis.speedups if s["identified"]]
    if not speedups:
        return None
    sizes = sorted({s["N"] for s in speedups})
    cols = min(3, len(sizes))
    rows = (len(sizes) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.5 * rows), squeeze=False)
    mixtures = sorted({s["mixture"] for s in speedups})
    palette = dict(zip(mixtures, colors(len(mixtures))))
    largest_run = float(analysis.table.runs["D"].max())
    for ax, N in zip(axes.ravel(), sizes):
        entries = [s for s in speedups if s["N"] == N]
        values = np.concatenate([np.asarray(s["curve"]["speedup"], float) for s in entries])
        values = values[np.isfinite(values) & (values > 0)]
        for s in entries:
            D = np.array(s["curve"]["D"])
            ax.plot(D, np.array(s["curve"]["speedup"], float), color=palette[s["mixture"]], label=s["mixture"])
            if s["curve"]["interval"] is not None:
                band = np.array([iv if iv is not None else [np.nan, np.nan] for iv in s["curve"]["interval"]], float)
                ax.fill_between(D, band[:, 0], np.minimum(band[:, 1], 1e12), color=palette[s["mixture"]], alpha=0.2)
            for d in s["crossing"]["crossings_D"]:
                ax.axvline(d, color=palette[s["mixture"]], ls=":", lw=1)
        ax.axhline(1.0, color="grey", lw=1)
        if largest_run < D.max():
            ax.axvspan(largest_run, D.max(), color="grey", alpha=0.08, lw=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        if values.size:  # the point curves decide the view; open-ended bands are cut
            ax.set_ylim(min(0.5, values.min() / 2), max(2.0, values.max() * 4))
        plain_log_axis(ax.yaxis)
        count_ticks(ax.xaxis, analysis.table.runs["D"], 5)
        ax.tick_params(labelsize=7)
        ax.set_title(f"N = {format_count(N)}", fontsize=9)
        ax.set_xlabel("budget D (tokens)")
        ax.set_ylabel(f"speed-up over {analysis.baseline}")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(sizes):]:
        ax.axis("off")
    fig.tight_layout()
    law = analysis.config.speedup_law
    caption = (
        f"Speed-up D_baseline(L_mixture(D)) / D of each mixture over {analysis.baseline!r}, from the "
        f"{law}-law fits ({'per N, on the runs at that N' if law == 'data' else 'per mixture, on all its runs'}); "
        f"bands: {analysis.config.confidence:.0%} bootstrap intervals; dotted lines: budgets where the fitted "
        "curves cross (speed-up 1); grey: budgets beyond the largest run (extrapolated). Above 1 the mixture "
        "reaches a loss the baseline needs more tokens for. Pairs whose fits are not identified are left out."
    )
    return Figure(f"{analysis.prefix}speedup", f"Speed-up over the baseline{where(analysis)}", caption, render(fig))


def best_ratio_figures(analysis: Analysis) -> list[Figure]:
    figures = []
    identified = [r for r in analysis.best_ratios if r["identified"]]
    for family, generator in sorted({(r["family"], r["generator"]) for r in identified}):
        rows = [r for r in identified if r["family"] == family and r["generator"] == generator]
        name = f"{family}/{generator}" if generator else family
        sizes = sorted({r["N"] for r in rows})
        budgets = sorted({r["D"] for r in rows})
        grid = np.full((len(sizes), len(budgets)), np.nan)
        for r in rows:
            grid[sizes.index(r["N"]), budgets.index(r["D"])] = r["best_ratio"]
        ratios = sorted({c["ratio"] for c in rows[0]["curve"]})
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10.5, 0.4 * len(sizes) + 2.4))
        image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=max(ratios), aspect="auto", origin="lower")
        for i in range(len(sizes)):
            for j in range(len(budgets)):
                light = grid[i, j] > 0.6 * max(ratios)  # the top of viridis is light: dark text there
                ax.text(j, i, f"{grid[i, j]:.0%}", ha="center", va="center", fontsize=7,
                        color="black" if light else "white")
        ax.set_xticks(range(len(budgets)), [format_count(d) for d in budgets], rotation=45, fontsize=7)
        ax.set_yticks(range(len(sizes)), [format_count(n) for n in sizes], fontsize=7)
        ax.set_xlabel("D (tokens)")
        ax.set_ylabel("N (parameters)")
        ax.set_title(f"Best synthetic ratio ({name}){where(analysis)}", fontsize=9)
        fig.colorbar(image, ax=ax, label="synthetic fraction")
        N = sizes[-1]
        for color, D in zip(colors(len(budgets)), budgets):
            r = next(r for r in rows if r["N"] == N and r["D"] == D)
            x = [c["ratio"] for c in r["curve"]]
            y = [c["predicted_loss"] for c in r["curve"]]
            ax2.plot(x, y, marker="o", color=color, label=f"D={format_count(D)}")
            iv = [c.get("interval") for c in r["curve"]]
            if all(v is not None for v in iv):
                ax2.fill_between(x, [v[0] for v in iv], [v[1] for v in iv], color=color, alpha=0.15)
        ax2.set_xlabel("synthetic fraction")
        ax2.set_ylabel("predicted loss")
        ax2.set_title(f"Loss across ratios at N = {format_count(N)}")
        ax2.legend(fontsize=7)
        caption = (
            f"Left: the synthetic fraction with the lowest predicted loss at each (N, D), over the "
            f"mixtures of family {family!r} from generator {generator!r} and the natural mixture "
            f"({', '.join(f'{x:.0%}' for x in ratios)}), each predicted by its "
            "joint-law fit on all its runs (cells beyond the table's N and D are extrapolations). "
            "Right: predicted loss across the ratios at the largest N, with bootstrap intervals."
        )
        figures.append(Figure(f"{analysis.prefix}best_ratio_{slug(family)}" + (f"_{slug(generator)}" if generator else ""),
                              f"Best synthetic ratio, {name}{where(analysis)}", caption, render(fig)))
    return figures
