"""The report's rectified-law part: the fits, their comparison with the data law, the plateau
D_p per (mixture, N) and D_p against N, as sections (text and tables from fits.json) and figures."""

from __future__ import annotations

import numpy as np

from analysis.core.identify import DL_ZERO_RATIO, RECTIFIED_RULES
from analysis.data.labels import slug
from analysis.multi import AnalysisSet
from analysis.report.figures import colors, plain_log_axis, quiet_minor_ticks, render, where
from analysis.report.textfmt import Figure
from analysis.results.identification import tally_text
from analysis.results.model import Analysis
from analysis.results.plateau import SEARCH_MULTIPLE
from matplotlib import pyplot as plt
from analysis.report.textfmt import Section, fmt, interval_text, with_interval
from analysis.results.law_comparison import comparison_summary
from synthscale.units import format_count


def _d_l_text(entry: dict) -> str:
    """D_l as D_l / D_min^beta (each resample in its own units) and in tokens; 0 when it is the data law."""
    pre = entry.get("pre_learned") or {}
    iv = pre.get("D_l_ratio_interval")
    shown = None if not iv else [0.0 if iv[0] <= DL_ZERO_RATIO else iv[0], iv[1]]
    if pre.get("reduces_to_data_law"):
        return "0 (data law)" + (f" [0, {fmt(shown[1], 3)}] x D_min^beta" if shown else "")
    text = with_interval(pre.get("D_l_ratio"), shown) + " x D_min^beta"
    tokens = pre.get("D_l_tokens")
    return text + (f"; {format_count(tokens)} tokens" if isinstance(tokens, (int, float)) and tokens < 1e30 else "")


def _fit_rows(aset: AnalysisSet, entries: list[dict]) -> list[list[str]]:
    """Identified fits only: the others are in the identification table."""
    rows = []
    for e in entries:
        cond = [str(e.get("condition") or "")] if aset.many_conditions else []
        head = [e["mixture"], *cond, format_count(e["N"]), str(e["points"])]
        if not e["converged"] or not e["identified"]:
            continue
        ivs = e.get("intervals") or {}
        rows.append(head + [with_interval(e["params"]["B"], ivs.get("B")), _d_l_text(e),
                            with_interval(e["params"]["E"], ivs.get("E")),
                            with_interval(e["params"]["beta"], ivs.get("beta"))])
    return rows


def _pair(row: dict, key: str, scale: float = 1.0, digits: int = 3) -> str:
    r, d = row["rectified"].get(key), row["data"].get(key)
    show = lambda v: fmt(None if v is None else v * scale, digits)  # noqa: E731
    return f"{show(r)} / {show(d)}"


def comparison_rows(aset: AnalysisSet, rows: list[dict]) -> list[list[str]]:
    out = []
    for r in rows:
        cond = [str(r.get("condition") or "")] if aset.many_conditions else []
        zero = {True: "yes", False: "no", None: "–"}[r["reduces_to_data_law"]]
        out.append([r["mixture"], *cond, format_count(r["N"]), str(r["points"]), _pair(r, "huber_objective"),
                    _pair(r, "rmsd_log_loss"), _pair(r, "holdout_rmae", 100.0) + " %", zero])
    return out


def _plateau_cell(p: dict | None) -> str:
    if p is None:
        return "–"
    if not p["identified"]:  # the short reason; fits.json has the whole one, Identification the fit's
        return "not identified: " + p["short"]
    return (format_count(p["D_p"]) + (" " + interval_text(p["interval"], format_count) if p.get("interval") else "")
            + (" (extrapolated)" if p.get("beyond_data") else " (measured)"))


def rectified_sections(aset: AnalysisSet, data: dict) -> list[Section]:
    if "rectified" not in data["fits"]:
        return []
    cond = ["condition"] if aset.many_conditions else []
    s = Section("Rectified law: L(D) = B / (D_l + D^beta) + E", [
        "The rectified scaling law of Lin et al. (2024), fitted per mixture at each N on its runs like the other "
        "laws (Huber loss on log loss, L-BFGS-B from a grid of starts that adds log D_l to the data law's, "
        "bootstrap intervals [low, high]). D_l is the pre-learned data size in units of D^beta; after it, the "
        "budget whose D^beta equals it, in tokens. With D_l = 0 the law is the data law B / D^beta + E.",
        f"Identification: {RECTIFIED_RULES}."])
    fit_rows = _fit_rows(aset, data["fits"]["rectified"])
    if fit_rows:
        s.table(["mixture", *cond, "N", "points", "B", "D_l", "E", "beta"], fit_rows)
    ident = [r for r in data["identification"] if r["law"] == "rectified"]
    if len(fit_rows) < len(ident):
        s.text(f"{tally_text(ident)}: the others have no parameters here (see Identification); their fitted curves "
               "and residuals are in the figures.")
    rows = data.get("law_comparison") or []
    if rows:
        summary = comparison_summary(rows)
        s.text("Rectified vs data law on the same runs (rectified / data): the Huber objective of the fit (sum over "
               "runs), the RMSD of log loss, and the holdout error (RMAE on the runs at the largest D, each law "
               "refitted without them). The rectified law contains the data law (D_l = 0), so on the fitted runs "
               "its objective and RMSD can only be lower or equal: the holdout error is the fair comparison.")
        s.table(["mixture", *cond, "N", "points", "Huber", "RMSD log loss", "holdout RMAE", "D_l = 0"],
                comparison_rows(aset, rows))
        r, d = summary["rectified"], summary["data"]
        s.text(f"Over the {summary['fits_compared']} (mixture, N) where both laws converged: Huber objective "
               f"{fmt(r['huber_objective'], 3)} vs {fmt(d['huber_objective'], 3)}, mean RMSD of log loss "
               f"{fmt(r['rmsd_log_loss'], 3)} vs {fmt(d['rmsd_log_loss'], 3)}; holdout RMAE over the runs held out "
               f"{fmt(None if r['holdout_rmae'] is None else r['holdout_rmae'] * 100, 3)} % vs "
               f"{fmt(None if d['holdout_rmae'] is None else d['holdout_rmae'] * 100, 3)} %, the rectified law "
               f"lower in {summary['rectified_lower_holdout_error']} of {summary['holdouts_compared']}.")
    s.figures += [f for a in aset.analyses for m in a.table.mixtures if (f := rectified_figure(a, m)) is not None]
    return [s, plateau_section(aset, data)]


def plateau_section(aset: AnalysisSet, data: dict) -> Section:
    cfg = aset.config
    cond = ["condition"] if aset.many_conditions else []
    rules = (data.get("rectified_rules") or {}).get("plateau", "")
    s = Section("Plateau: where doubling the data stops paying", [
        f"From each rectified fit, D_p is the budget beyond which doubling D lowers the predicted loss by less than "
        f"{cfg.plateau_tol_abs:g} nats (absolute), and, separately, by less than {cfg.plateau_tol_rel:.0%} of the "
        "remaining reducible loss L(D) - E (relative); solved by bisection on log D, for the fit and each bootstrap "
        f"resample. {rules}; otherwise the reason is given instead of a number.",
        "Under this law the share of the remaining reducible loss that a doubling removes rises with D toward "
        "1 - 2^-beta, so the relative criterion holds beyond some budget only when 1 - 2^-beta is below its "
        "tolerance (and then from the smallest budget on): it usually finds no plateau, and says so."])
    by_key: dict = {}
    for p in data.get("plateau", []):
        by_key.setdefault((p.get("condition"), p["mixture"], p["N"]), {})[p["criterion"]] = p
    s.table(["mixture", *cond, "N", "budgets run", f"D_p, absolute ({cfg.plateau_tol_abs:g} nats)",
             f"D_p, relative ({cfg.plateau_tol_rel:.0%})"],
            [[m, *([str(c or "")] if cond else []), format_count(n),
              f"{format_count(v['absolute']['smallest_D'])} – {format_count(v['absolute']['largest_D'])}",
              _plateau_cell(v.get("absolute")), _plateau_cell(v.get("relative"))] for (c, m, n), v in by_key.items()])
    s.text("Larger models peak with fewer tokens? log D_p = a + b log N, least squares over the sizes whose D_p is "
           "identified, per mixture; b < 0: larger models reach the plateau with fewer tokens. The interval of b "
           "fits the line to each bootstrap resample.")
    rows = []
    for t in data.get("plateau_trend", []):
        head = [t["mixture"], *([str(t.get("condition") or "")] if cond else []), t["criterion"]]
        if not t["identified"]:
            rows.append(head + ["not fitted: " + t["reason"], "", "", ""])
            continue
        sizes = ", ".join(f"{format_count(n)}: {format_count(d)}" for n, d in zip(t["sizes"], t["D_p"]))
        rows.append(head + [sizes, with_interval(t["slope"], t["slope_interval"]),
                            with_interval(t["intercept"], t["intercept_interval"]), t["direction"]])
    s.table(["mixture", *cond, "criterion", "sizes used (N: D_p)", "slope b", "intercept a", "reading"], rows)
    s.figures += [f for a in aset.analyses if (f := plateau_trend_figure(a)) is not None]
    return s


def rectified_figure(analysis: Analysis, mixture: str) -> Figure | None:
    fits = [f for f in analysis.fits.get("rectified", []) if f.unit.mixtures[0] == mixture]
    if not fits:
        return None
    data_fits = {f.unit.fixed[1]: f for f in analysis.fits.get("data", []) if f.unit.mixtures[0] == mixture}
    plateaus = {p["N"]: p for p in analysis.plateaus if p["mixture"] == mixture and p["criterion"] == "absolute"}
    multiple = analysis.config.plateau_max_multiple
    fig, (ax, res) = plt.subplots(2, 1, figsize=(6.2, 4.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for color, fitted in zip(colors(len(fits)), fits):
        unit, N = fitted.unit, fitted.unit.fixed[1]
        ax.scatter(unit.D, unit.loss, color=color, s=16, zorder=3)
        if fitted.fit.converged:
            res.plot(unit.D, 100 * fitted.fit.log_residuals(), color=color, marker="o", ms=3, lw=0.7,
                     ls="-" if fitted.identified else ":")
        grid = np.geomspace(unit.D.min() / 1.5, unit.D.max() * multiple, 160)
        label = f"N={format_count(N)}"
        if not fitted.fit.converged:
            ax.plot([], [], color=color, lw=0, label=label + " (fit did not converge)")
            continue
        ok = fitted.identified
        ax.plot(grid, fitted.fit.predict(D=grid), color=color, lw=1.4 if ok else 1.0, ls="-" if ok else ":",
                label=label + ("" if ok else " (not identified)"))
        if N in data_fits and data_fits[N].fit.converged:
            ax.plot(grid, data_fits[N].fit.predict(D=grid), color=color, lw=0.8, ls="--")
        p = plateaus.get(N)
        if p is not None and p["identified"]:
            ax.axvline(p["D_p"], color=color, lw=1.0, ls="-.")
            if p.get("interval"):
                ax.axvspan(*p["interval"], color=color, alpha=0.12, lw=0)
    d_max = max(float(f.unit.D.max()) for f in fits)
    ax.axvspan(d_max, d_max * multiple, color="grey", alpha=0.06, lw=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_axis(ax.yaxis)
    quiet_minor_ticks(ax.xaxis)
    res.axhline(0.0, color="grey", lw=0.6)
    res.set_xlabel("D (training tokens)")
    res.set_ylabel("resid. %", fontsize=8)
    ax.set_ylabel(analysis.table.target)
    ax.set_title(f"Rectified law and plateau: {mixture}{where(analysis)}", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    caption = (f"L(D) = B / (D_l + D^beta) + E fitted at each N on the runs of mixture {mixture!r} at that N (dots); "
               f"below: the runs' residuals, 100 x (log observed - log predicted). "
               f"Solid: identified fits; dotted: converged but not identified (the curve and its residuals show how "
               f"well the law describes the runs; no parameter is reported); dashed: the data law B / D^beta + E on "
               f"the same runs, where it was fitted. Dash-dot line and band: the plateau D_p (doubling D lowers the "
               f"predicted loss by less than {analysis.config.plateau_tol_abs:g} nats from there on) and its "
               f"bootstrap interval, where identified. Grey: up to {multiple:g} x the largest budget (extrapolated).")
    return Figure(f"{analysis.prefix}rectified_{slug(mixture)}", f"Rectified law and plateau, {mixture}{where(analysis)}",
                  caption, render(fig))


def plateau_trend_figure(analysis: Analysis) -> Figure | None:
    entries = [p for p in analysis.plateaus if p["identified"] and p["criterion"] == "absolute"]
    if not entries:
        return None
    mixtures = sorted({p["mixture"] for p in entries})
    palette = dict(zip(mixtures, colors(len(mixtures))))
    trends = {t["mixture"]: t for t in analysis.plateau_trends if t["criterion"] == "absolute" and t["identified"]}
    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    for m in mixtures:
        pts = sorted((p for p in entries if p["mixture"] == m), key=lambda p: p["N"])
        N = np.array([p["N"] for p in pts])
        dp = np.array([p["D_p"] for p in pts])
        iv = np.array([p["interval"] or [p["D_p"], p["D_p"]] for p in pts], float)
        ax.errorbar(N, dp, yerr=np.clip(np.vstack([dp - iv[:, 0], iv[:, 1] - dp]), 0, None), fmt="o", capsize=3,
                    color=palette[m], label=m)
        t = trends.get(m)
        if t is not None:
            x = np.geomspace(N.min() / 1.3, N.max() * 1.3, 50)
            slope = f", b = {t['slope']:.3g}" + (f" {interval_text(t['slope_interval'])}" if t["slope_interval"] else "")
            ax.plot(x, np.exp(t["intercept"] + t["slope"] * np.log(x)), color=palette[m], lw=1.0, label=f"{m} fit{slope}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    quiet_minor_ticks(ax.xaxis)
    ax.set_xlabel("N (non-embedding parameters)")
    ax.set_ylabel("plateau budget D_p (tokens)")
    ax.set_title(f"Plateau budget against model size{where(analysis)}", fontsize=10)
    ax.legend(fontsize=7)
    caption = (f"D_p (absolute criterion, {analysis.config.plateau_tol_abs:g} nats per doubling) of each identified "
               f"rectified fit, with {analysis.config.confidence:.0%} bootstrap intervals; lines: log D_p = a + b log N "
               "fitted per mixture over those sizes (b < 0: larger models reach the plateau with fewer tokens). "
               f"Sizes whose D_p is not identified are left out (the table says why); D_p is searched up to "
               f"{SEARCH_MULTIPLE:g} x the largest budget.")
    return Figure(f"{analysis.prefix}plateau_vs_N", f"Plateau budget against N{where(analysis)}", caption, render(fig))
