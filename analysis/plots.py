"""The report's figures (matplotlib, Agg), each with a caption saying what was fitted on what."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.labels import slug  # noqa: E402
from analysis.pipeline import Analysis  # noqa: E402
from synthscale.units import format_count  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from analysis.unigram import UnigramResult


@dataclass
class Figure:
    name: str  # file stem
    title: str
    caption: str
    png: bytes


def _render(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _plain_log_axis(axis) -> None:
    """Log scale with plain numbers (4.5, not 4.5 x 10^0); minor ticks labelled within a decade."""
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    lo, hi = axis.get_view_interval()
    axis.set_major_formatter(FormatStrFormatter("%.3g"))
    axis.set_minor_formatter(FormatStrFormatter("%.3g") if hi / max(lo, 1e-300) < 10 else NullFormatter())


def _quiet_minor_ticks(axis) -> None:
    """No labels on minor ticks of a log axis spanning a decade or more (they collide)."""
    from matplotlib.ticker import NullFormatter

    lo, hi = axis.get_view_interval()
    if hi / max(lo, 1e-300) >= 10:
        axis.set_minor_formatter(NullFormatter())


def _where(analysis: Analysis) -> str:
    """The condition in titles, when a report holds several."""
    return f" [{analysis.condition}]" if analysis.prefix and analysis.condition else ""


def _colors(n: int):
    return plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(n, 1)))


def scaling_figure(analysis: Analysis, law: str, mixture: str) -> Figure | None:
    """Data law (loss vs D, a curve per N) or model law (loss vs N, a curve per D)."""
    fits = [f for f in analysis.fits.get(law, []) if f.unit.mixtures[0] == mixture]
    if not fits:
        return None
    x_col = "D" if law == "data" else "N"
    fixed_col = "N" if law == "data" else "D"
    holdouts = {h.unit.fixed[1]: h for h in analysis.holdouts.get(law, []) if h.unit.mixtures[0] == mixture}
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for color, fitted in zip(_colors(len(fits)), fits):
        unit, fixed = fitted.unit, fitted.unit.fixed[1]
        x = unit.D if law == "data" else unit.N
        holdout = holdouts.get(fixed)
        held = holdout.held if holdout is not None and holdout.usable else np.zeros(unit.n_points, bool)
        ax.scatter(x[~held], unit.loss[~held], color=color, s=18, zorder=3)
        ax.scatter(x[held], unit.loss[held], facecolors="none", edgecolors=color, s=60, linewidths=1.5, zorder=3)
        grid = np.geomspace(x.min() / 1.5, x.max() * 1.5, 100)
        label = f"{fixed_col}={format_count(fixed)}"
        if fitted.fit.converged:
            kw = {"D": grid} if law == "data" else {"N": grid}
            identified = fitted.identified
            ax.plot(grid, fitted.fit.predict(**kw), color=color, lw=1.4 if identified else 1.0,
                    ls="-" if identified else ":", label=label + ("" if identified else " (not identified)"))
        else:
            ax.plot([], [], color=color, lw=0, label=label + " (fit did not converge)")
        if holdout is not None and holdout.usable:
            kw = {"D": grid} if law == "data" else {"N": grid}
            ax.plot(grid, holdout.fit.predict(**kw), color=color, lw=1.0, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_axis(ax.yaxis)
    _quiet_minor_ticks(ax.xaxis)
    ax.set_xlabel(f"{x_col} ({'training tokens' if x_col == 'D' else 'non-embedding parameters'})")
    ax.set_ylabel(f"{analysis.table.target}")
    ax.set_title(f"{'Data' if law == 'data' else 'Model'} scaling: {mixture}{_where(analysis)}", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    formula = fits[0].fit.law.formula
    caption = (
        f"{formula} fitted separately at each {fixed_col} on the runs of mixture {mixture!r} at that "
        f"{fixed_col} (dots). Solid: fit on all those runs. Dashed: the holdout fit, made without the "
        f"runs at the largest {x_col}; hollow circles: those held-out runs. Dotted: a fit that converged "
        f"but is not identified (its parameters are not reported)."
    )
    return Figure(f"{analysis.prefix}{law}_scaling_{slug(mixture)}",
                  f"{'Data' if law == 'data' else 'Model'} scaling, {mixture}{_where(analysis)}", caption, _render(fig))


def predicted_vs_observed_figure(analysis: Analysis) -> Figure | None:
    law = "joint" if analysis.fits.get("joint") else next(iter(analysis.fits), None)
    if law is None:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    fits = [f for f in analysis.fits[law] if f.fit.converged]
    mixtures = analysis.table.mixtures
    colors = dict(zip(mixtures, _colors(len(mixtures))))
    lo, hi = np.inf, -np.inf
    labelled: set[str] = set()
    for fitted in fits:
        obs, pred = fitted.unit.loss, fitted.fit.predict_points()
        m = fitted.unit.mixtures[0]
        ax.scatter(obs, pred, s=14, color=colors[m], label=None if m in labelled else m)
        labelled.add(m)
        lo, hi = min(lo, obs.min(), pred.min()), max(hi, obs.max(), pred.max())
    held = [h for h in analysis.holdouts.get("data", []) if h.usable]
    for h in held:
        ax.scatter(h.observed, h.predicted, marker="x", color="crimson", s=30,
                   label="held out (data-law holdout)" if h is held[0] else None)
        lo, hi = min(lo, h.observed.min(), h.predicted.min()), max(hi, h.observed.max(), h.predicted.max())
    if not np.isfinite(lo):
        plt.close(fig)
        return None
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls=":")
    ax.set_xlabel(f"observed {analysis.table.target}")
    ax.set_ylabel("predicted")
    ax.set_title(f"Predicted vs observed ({law} law){_where(analysis)}", fontsize=10)
    ax.legend(fontsize=7)
    caption = (
        f"Each dot: a run, predicted by the {law}-law fit of its mixture made on all runs of that "
        f"mixture{' at its fixed size or budget' if law != 'joint' else ''}. Crosses: runs at the "
        "largest D predicted by data-law fits made without them. Dotted: y = x."
    )
    return Figure(f"{analysis.prefix}predicted_vs_observed", f"Predicted vs observed{_where(analysis)}", caption,
                  _render(fig))


def irreducible_figure(analysis: Analysis) -> Figure | None:
    rows = [r for r in analysis.irreducible if r["fit"] == "joint" and r["identified"]]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.0, 0.5 + 0.45 * len(rows) + 1.5))
    y = np.arange(len(rows))
    E = np.array([r["E"] for r in rows])
    lo = np.array([r["interval"][0] if r["interval"] else r["E"] for r in rows])
    hi = np.array([r["interval"][1] if r["interval"] else r["E"] for r in rows])
    ax.errorbar(E, y, xerr=[E - lo, hi - E], fmt="o", capsize=4, color="navy")
    ax.set_yticks(y, [f"{r['mixture']}" + (f" ({r['synthetic_fraction']:.0%} synthetic)" if np.isfinite(r["synthetic_fraction"]) else "") for r in rows])
    ax.set_xlabel("irreducible loss E")
    ax.set_title(f"Irreducible loss per mixture{_where(analysis)}", fontsize=10)
    c = analysis.config
    caption = (f"E of the joint law {analysis.fits['joint'][0].fit.law.formula} fitted per mixture on all its runs; "
               f"bars: {c.confidence:.0%} bootstrap percentile intervals ({c.bootstrap} resamples of runs)"
               if c.bootstrap else "E of the joint law per mixture (no bootstrap: no intervals)")
    caption += ". Mixtures whose fit is not identified are left out."
    return Figure(f"{analysis.prefix}irreducible_loss", f"Irreducible loss E{_where(analysis)}", caption, _render(fig))


def speedup_figure(analysis: Analysis) -> Figure | None:
    speedups = [s for s in analysis.speedups if s["identified"]]
    if not speedups:
        return None
    sizes = sorted({s["N"] for s in speedups})
    cols = min(3, len(sizes))
    rows = (len(sizes) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    mixtures = sorted({s["mixture"] for s in speedups})
    colors = dict(zip(mixtures, _colors(len(mixtures))))
    largest_run = float(analysis.table.runs["D"].max())
    for ax, N in zip(axes.ravel(), sizes):
        entries = [s for s in speedups if s["N"] == N]
        values = np.concatenate([np.asarray(s["curve"]["speedup"], float) for s in entries])
        values = values[np.isfinite(values) & (values > 0)]
        for s in entries:
            D = np.array(s["curve"]["D"])
            ax.plot(D, np.array(s["curve"]["speedup"], float), color=colors[s["mixture"]], label=s["mixture"])
            if s["curve"]["interval"] is not None:
                band = np.array([iv if iv is not None else [np.nan, np.nan] for iv in s["curve"]["interval"]], float)
                ax.fill_between(D, band[:, 0], np.minimum(band[:, 1], 1e12), color=colors[s["mixture"]], alpha=0.2)
            for d in s["crossing"]["crossings_D"]:
                ax.axvline(d, color=colors[s["mixture"]], ls=":", lw=1)
        ax.axhline(1.0, color="grey", lw=1)
        if largest_run < D.max():
            ax.axvspan(largest_run, D.max(), color="grey", alpha=0.08, lw=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        if values.size:  # the point curves decide the view; open-ended bands are cut
            ax.set_ylim(min(0.5, values.min() / 2), max(2.0, values.max() * 4))
        _plain_log_axis(ax.yaxis)
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
    return Figure(f"{analysis.prefix}speedup", f"Speed-up over the baseline{_where(analysis)}", caption, _render(fig))


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
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11.5, 0.6 * len(sizes) + 3.0))
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
        ax.set_title(f"Best synthetic ratio ({name}){_where(analysis)}", fontsize=9)
        fig.colorbar(image, ax=ax, label="synthetic fraction")
        N = sizes[-1]
        for color, D in zip(_colors(len(budgets)), budgets):
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
                              f"Best synthetic ratio, {name}{_where(analysis)}", caption, _render(fig)))
    return figures


def unigram_figures(result: UnigramResult) -> list[Figure]:
    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    sets = [result.test, *result.trains]
    for color, counts in zip(_colors(len(sets)), sets):
        c = counts.padded(result.vocab_size)
        freq = np.sort(c[c > 0])[::-1] / c.sum()
        ranks = np.arange(1, freq.size + 1)
        ax.loglog(ranks, freq, color=color, lw=1.2, label=f"{counts.name}")
        z = result.zipf[counts.name]
        if z.get("exponent") is not None:
            ax.loglog(ranks[: z["ranks_used"]], 10 ** z["log10_intercept"] * ranks[: z["ranks_used"]] ** -z["exponent"],
                      color=color, ls=":", lw=1, label=f"  Zipf fit s={z['exponent']:.2f}")
    ax.set_xlabel("rank")
    ax.set_ylabel("relative frequency")
    ax.set_title("Rank-frequency (Zipf)")
    ax.legend(fontsize=7)
    zipf = Figure("zipf", "Zipf rank-frequency", (
        "Token rank-frequency of the test set and each training set, counted from their .bin/.idx files; "
        "dotted: least-squares fit of log frequency on log rank over the ranks with non-zero counts."), _render(fig))
    names = list(result.per_train)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 0.5 * len(names) + 2.5))
    kl = [result.per_train[n]["kl_test_train_nats"] for n in names]
    ax1.bar_label(ax1.barh(names, kl, color="steelblue"), fmt="%.3g", padding=2, fontsize=8)
    ax1.set_xlabel("KL(test || train), nats")
    ax1.set_xlim(0, max(kl) * 1.2 if max(kl) > 0 else 1)
    cov = [result.per_train[n]["token_coverage"] for n in names]
    ax2.bar_label(ax2.barh(names, cov, color="seagreen"), fmt="%.3g", padding=2, fontsize=8)
    ax2.set_xlim(0, 1.15)
    ax2.set_xlabel("share of test tokens seen in train")
    fig.tight_layout()
    kl_fig = Figure("kl", "KL divergence and coverage", (
        f"KL divergence of the test unigram distribution from each training set's, the training distribution "
        f"smoothed additively (alpha = {result.smoothing:g} over V = {result.vocab_size} token ids); right: token "
        "coverage of the test set by each training set."), _render(fig))
    return [zipf, kl_fig]
