"""Figures of the fits: each law's curves with their residuals, and predicted against observed.

A fit that converged but is not identified is still drawn (dotted) with its residuals: it shows how
well the law describes the runs even when a parameter is not pinned down; its parameters are not
reported anywhere.
"""

from __future__ import annotations

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.ticker import MaxNLocator

from analysis.report.figures import MAX_WIDTH_IN, colors, count_ticks, grid_shape, plain_log_axis, render, where
from analysis.report.textfmt import Figure
from analysis.results.model import Analysis
from synthscale.units import format_count


def scaling_figure(analysis: Analysis, law: str) -> Figure | None:
    """Small multiples, one panel per mixture: the data law (loss vs D, a curve per N) or the model law
    (loss vs N, a curve per D) above the log residuals of the runs, in %."""
    fits = analysis.fits.get(law, [])
    unfitted = [u for u, _ in analysis.unfitted if u.law.name == law]
    mixtures = sorted({f.unit.mixtures[0] for f in fits} | {u.mixtures[0] for u in unfitted},
                      key=lambda m: (m != analysis.baseline, m))
    if not mixtures:
        return None
    x_col, fixed_col = ("D", "N") if law == "data" else ("N", "D")
    fixed_values = sorted({f.unit.fixed[1] for f in fits} | {u.fixed[1] for u in unfitted})
    palette = dict(zip(fixed_values, colors(len(fixed_values))))
    holdouts = {(h.unit.mixtures[0], h.unit.fixed[1]): h for h in analysis.holdouts.get(law, [])}
    rows, cols = grid_shape(len(mixtures))
    height = 2.35 * rows + 0.35
    fig = plt.figure(figsize=(min(MAX_WIDTH_IN, 2.3 * cols), height))
    outer = fig.add_gridspec(rows, cols, hspace=0.55, wspace=0.32, top=1 - 0.7 / height)
    xs = sorted({float(v) for f in fits for v in (f.unit.D if law == "data" else f.unit.N)}
                | {float(v) for u in unfitted for v in (u.D if law == "data" else u.N)})
    for k, mixture in enumerate(mixtures):
        cell = outer[k // cols, k % cols].subgridspec(2, 1, height_ratios=[3, 1.1], hspace=0.08)
        ax, res = fig.add_subplot(cell[0]), fig.add_subplot(cell[1])
        for fitted in [f for f in fits if f.unit.mixtures[0] == mixture]:
            _draw_fit(ax, res, fitted, holdouts.get((mixture, fitted.unit.fixed[1])), palette[fitted.unit.fixed[1]], law)
        for unit in [u for u in unfitted if u.mixtures[0] == mixture]:
            x = unit.D if law == "data" else unit.N
            ax.scatter(x, unit.loss, color=palette[unit.fixed[1]], s=9, marker="x", zorder=3)
        states = {("identified" if f.identified else "not identified") if f.fit.converged else "no convergence"
                  for f in fits if f.unit.mixtures[0] == mixture}
        if any(u.mixtures[0] == mixture for u in unfitted):
            states.add("not fitted")
        ax.set_title(f"{mixture}\n{', '.join(sorted(states))}", fontsize=7)
        for axis in (ax, res):
            axis.set_xscale("log")
            count_ticks(axis.xaxis, xs, 4)
            axis.tick_params(labelsize=6)
        ax.set_yscale("log")
        plain_log_axis(ax.yaxis)
        ax.tick_params(labelbottom=False)
        res.yaxis.set_major_locator(MaxNLocator(3))
        res.axhline(0.0, color="grey", lw=0.6)
        res.set_xlabel(x_col, fontsize=6, labelpad=1)
        if k % cols == 0:
            ax.set_ylabel(analysis.table.target, fontsize=6)
            res.set_ylabel("resid. %", fontsize=6)
    handles = [plt.Line2D([], [], color=palette[v], marker="o", ms=3, lw=1, label=f"{fixed_col}={format_count(v)}")
               for v in fixed_values]
    handles += [plt.Line2D([], [], color="k", lw=1.2, label="identified"),
                plt.Line2D([], [], color="k", lw=1.0, ls=":", label="not identified (curve only)"),
                plt.Line2D([], [], color="k", lw=0.8, ls="--", label="holdout fit"),
                plt.Line2D([], [], color="k", marker="x", lw=0, ms=4, label="runs of a fit not made")]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 8), fontsize=6.5, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    formula = (fits[0].fit.law.formula if fits else unfitted[0].law.formula)
    caption = (f"{formula} fitted separately at each {fixed_col} on the runs of one mixture at that {fixed_col} "
               f"(dots; hollow: held out by the holdout fit, dashed). Below each panel: the runs' residuals, "
               f"100 x (log observed - log predicted). Dotted: a fit that converged but is not identified (the "
               f"curve and its residuals show how well the law describes the runs; no parameter is reported).")
    name = "Data" if law == "data" else "Model"
    return Figure(f"{analysis.prefix}{law}_scaling", f"{name} scaling per mixture{where(analysis)}", caption,
                  render(fig))


def _draw_fit(ax, res, fitted, holdout, color, law: str) -> None:
    unit = fitted.unit
    x = unit.D if law == "data" else unit.N
    held = holdout.held if holdout is not None and holdout.usable else np.zeros(unit.n_points, bool)
    ax.scatter(x[~held], unit.loss[~held], color=color, s=9, zorder=3)
    ax.scatter(x[held], unit.loss[held], facecolors="none", edgecolors=color, s=22, linewidths=1.0, zorder=3)
    if not fitted.fit.converged:
        return
    grid = np.geomspace(x.min() / 1.3, x.max() * 1.3, 80)
    kw = {"D": grid} if law == "data" else {"N": grid}
    ok = fitted.identified
    ax.plot(grid, fitted.fit.predict(**kw), color=color, lw=1.2 if ok else 1.0, ls="-" if ok else ":")
    if holdout is not None and holdout.usable:
        ax.plot(grid, holdout.fit.predict(**kw), color=color, lw=0.8, ls="--")
    res.plot(x, 100 * fitted.fit.log_residuals(), color=color, marker="o", ms=2.5, lw=0.6, ls="-" if ok else ":")


def predicted_vs_observed_figure(analysis: Analysis) -> Figure | None:
    law = "joint" if analysis.fits.get("joint") else next(iter(analysis.fits), None)
    if law is None:
        return None
    fits = [f for f in analysis.fits[law] if f.fit.converged]
    if not fits:
        return None
    fig, (ax, res) = plt.subplots(1, 2, figsize=(8.4, 3.3))
    mixtures = analysis.table.mixtures
    palette = dict(zip(mixtures, colors(len(mixtures))))
    lo, hi = np.inf, -np.inf
    labelled: set[str] = set()
    for fitted in fits:
        obs, pred = fitted.unit.loss, fitted.fit.predict_points()
        m = fitted.unit.mixtures[0]
        marker = "o" if fitted.identified else "^"
        ax.scatter(obs, pred, s=10, color=palette[m], marker=marker, label=None if m in labelled else m)
        res.scatter(fitted.unit.D, 100 * fitted.fit.log_residuals(), s=8, color=palette[m], marker=marker)
        labelled.add(m)
        lo, hi = min(lo, obs.min(), pred.min()), max(hi, obs.max(), pred.max())
    held = [h for h in analysis.holdouts.get("data", []) if h.usable]
    for h in held:
        ax.scatter(h.observed, h.predicted, marker="x", color="crimson", s=22,
                   label="held out (data-law holdout)" if h is held[0] else None)
        lo, hi = min(lo, h.observed.min(), h.predicted.min()), max(hi, h.observed.max(), h.predicted.max())
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls=":")
    ax.set_xlabel(f"observed {analysis.table.target}", fontsize=8)
    ax.set_ylabel("predicted", fontsize=8)
    ax.legend(fontsize=6, ncol=2 if len(mixtures) > 5 else 1)
    res.axhline(0.0, color="grey", lw=0.6)
    res.set_xscale("log")
    count_ticks(res.xaxis, [d for f in fits for d in f.unit.D])
    res.set_xlabel("D (training tokens)", fontsize=8)
    res.set_ylabel("residual, % (log obs. - log pred.)", fontsize=8)
    for axis in (ax, res):
        axis.tick_params(labelsize=7)
    fig.suptitle(f"Predicted vs observed ({law} law){where(analysis)}", fontsize=9)
    fig.tight_layout()
    caption = (f"Left: each run, predicted by the {law}-law fit of its mixture made on all runs of that "
               f"mixture{' at its fixed size or budget' if law != 'joint' else ''}; crosses: runs at the largest D "
               "predicted by data-law fits made without them; dotted: y = x. Right: the same fits' residuals "
               "against D. Triangles: fits that converged but are not identified (shown, not reported).")
    return Figure(f"{analysis.prefix}predicted_vs_observed", f"Predicted vs observed{where(analysis)}", caption,
                  render(fig))
