"""The report's sections, built from an AnalysisSet and its fits.json document.

Every number shown comes from the document; a fit or finding that is not identified shows
"not identified: <reason>" and never its estimate. With several conditions, tables gain a
condition column and figures carry the condition in their titles.
"""

from __future__ import annotations

from pathlib import Path

from analysis.identify import RULES
from analysis.laws import get_law
from analysis.multi import AnalysisSet
from analysis.plots import (best_ratio_figures, irreducible_figure, predicted_vs_observed_figure, scaling_figure,
                            speedup_figure)
from analysis.rectified_report import rectified_sections
from analysis.summary import domain_rows, family_name, summary_lines
from analysis.textfmt import Section, fmt, interval_text, with_interval
from analysis.validation import holdout_summary
from synthscale.units import format_count


def _fit_rows(entries: list[dict], fixed: str | None, names: tuple[str, ...], cond: bool) -> list[list[str]]:
    """One row per mixture: value [interval] of each parameter, or why there are none."""
    rows = []
    for e in entries:
        who = e.get("mixture") or "+".join(e.get("mixtures", []))
        where = ([str(e.get("condition") or "")] if cond else []) + ([format_count(e[fixed])] if fixed else [])
        if not e["converged"] or not e["identified"]:
            why = e["message"] if not e["converged"] else "not identified: " + e["not_identified"]["reason"]
            rows.append([who, *where, str(e["points"]), why] + [""] * (len(names) - 1))
            continue
        per_mixture = e["params"] if "mixtures" in e else {who: e["params"]}
        for mixture, params in per_mixture.items():
            ivs = e.get("intervals") or {}
            ivs = ivs.get(mixture, {}) if "mixtures" in e else ivs
            rows.append([mixture, *where, str(e["points"]), *[with_interval(params[k], ivs.get(k)) for k in names]])
    return rows


def _cond(aset: AnalysisSet, entry: dict) -> list[str]:
    return [str(entry.get("condition") or "")] if aset.many_conditions else []


def input_section(aset: AnalysisSet, data: dict, config_file: Path | None = None) -> Section:
    cfg, table = aset.config, aset.table
    s = Section("Input", [
        f"Results table `{table.path}`, fitted column `{table.target}`: {len(table.runs)} runs used, "
        f"{len(table.excluded)} excluded, {len(table.duplicates)} duplicate(s) dropped, "
        f"{len(table.repeated)} repeated configuration(s) kept (fitted as separate points).",
        f"Fits: Huber loss (delta {cfg.fit.delta:g}) on log loss, L-BFGS-B with analytic gradients from "
        f"{'the full starting grid of Hoffmann et al.' if cfg.fit.grid is None else 'a coarse starting grid (quick look)'}"
        f", best kept. Bootstrap: {cfg.bootstrap} resamples of runs (seed {cfg.seed}), "
        f"{cfg.confidence:.0%} percentile intervals shown as [low, high].",
        f"Converged (the optimiser succeeded) is not identified (numbers worth reporting): {RULES}. "
        "Findings use identified fits only.",
    ])
    if config_file is not None:
        s.text(f"Configuration: every option of this report is in `{config_file.name}` beside it "
               f"(`analysis report --config {config_file}` runs it again, from the folder it ran in).")
    if table.notes:
        s.text("How the table was read (it lacks some labels):", *[f"- {n}" for n in table.notes])
    s.table(["mixture", "family", "generator", "synthetic fraction", "runs"],
            [[m, v["family"] or "–", v["generator"] or "–", fmt(v["synthetic_fraction"], 3), str(v["runs"])]
             for m, v in data["table"]["mixtures"].items()])
    if table.excluded:
        s.text("Excluded runs (bad input):")
        s.table(["row", "run_id", "mixture", "reason"],
                [[str(e["row"]), e["run_id"], str(e["mixture"]), e["reason"]] for e in table.excluded])
    if table.duplicates:
        s.text("Duplicate rows dropped:")
        s.table(["row", "run_id", "duplicate of row", "reason"],
                [[str(d["row"]), d["run_id"], str(d["duplicate_of_row"]), d["reason"]] for d in table.duplicates])
    not_fitted = data["not_fitted"]
    if not_fitted:
        s.text("Not fitted (too few points):", *[f"- {p}" for p in not_fitted])
    return s


def grouping_section(aset: AnalysisSet, data: dict) -> Section:
    s = Section("What was analysed with what")
    if aset.pooled and aset.many_conditions is False and len(aset.table.conditions) > 1:
        s.text(f"--pool-conditions: the runs of {len(aset.table.conditions)} conditions "
               f"({', '.join(aset.table.conditions)}) were fitted together as if trained alike.")
    s.text("A condition is (backend, recipe_hash): runs of different conditions are fitted apart unless pooled. "
           "Each mixture's laws are fitted on its own runs of one condition. A family's best-ratio axis is its "
           "(family, generator) mixtures plus the natural mixture of the same condition.")
    s.table(["condition", "backend", "recipe hash", "runs", "mixtures", "repeated configurations"],
            [[c["condition"] or "all runs (not recorded)", ", ".join(c["backend"] or ["–"]),
              ", ".join(c["recipe_hash"] or ["–"]), str(c["runs"]), str(len(c["mixtures"])),
              str(c["repeated_configurations"])] for c in data["conditions"]])
    s.table(["condition", "group (family/generator)", "mixtures (synthetic %, runs)", "runs"],
            [[g["condition"] or "all runs", family_name(g["family"], g["generator"]) if g["family"] else g.get("why", "–"),
              ", ".join(f"{m['mixture']} ({fmt(m['synthetic_fraction'] * 100, 3) + '%' if m['synthetic_fraction'] is not None else '?'}, "
                        f"{m['runs']})" for m in g["mixtures"]), str(g["runs"])] for g in data["groups"]])
    repeated = [r for a in aset.analyses for r in a.table.repeated]
    if repeated:
        s.text("Repeats (several runs of one condition, mixture, N and D; each fitted as a separate point):")
        s.table(["condition", "mixture", "N", "D", "kind", "seeds", "losses"],
                [[r["condition"] or "–", r["mixture"], format_count(r["N"]), format_count(r["D"]), r["kind"],
                  ", ".join("?" if x is None else str(x) for x in r["seeds"]), ", ".join(fmt(x) for x in r["losses"])]
                 for r in repeated])
    return s


def law_sections(aset: AnalysisSet, data: dict) -> list[Section]:
    out = []
    cond = aset.many_conditions
    for law_name in ("data", "model", "joint"):
        if law_name not in data["fits"]:
            continue
        law = get_law(law_name)
        fixed = law.fixed
        s = Section(f"{law_name.capitalize()} law: {law.formula}", [
            f"Fitted {'per mixture at each ' + fixed if fixed else 'per mixture'} on its runs"
            f"{' of one condition' if cond else ''}; values with their bootstrap intervals [low, high]."])
        h = ["mixture"] + (["condition"] if cond else []) + ([fixed] if fixed else []) + ["points", *law.natural_names]
        s.table(h, _fit_rows(data["fits"][law_name], fixed, law.natural_names, cond))
        if law_name in data["shared_exponent_fits"]:
            s.text("Exponents shared across mixtures:")
            s.table(h, _fit_rows(data["shared_exponent_fits"][law_name], fixed, law.natural_names, cond))
        if law_name in ("data", "model"):
            for a in aset.analyses:
                s.figures += [f for m in a.table.mixtures if (f := scaling_figure(a, law_name, m)) is not None]
        out.append(s)
    return out


def holdout_section(aset: AnalysisSet) -> Section | None:
    holdouts = {}
    for a in aset.analyses:
        for law, hs in a.holdouts.items():
            holdouts.setdefault(law, []).extend(hs)
    if not holdouts:
        return None
    s = Section("Holdout validation", ["Each law refitted without the runs at the largest D (data, joint) or N "
                                       "(model); RMAE = mean |predicted - observed| / observed over the held-out runs."])
    rows = []
    for law, hs in holdouts.items():
        summary = holdout_summary(hs)
        rmae = "– (every holdout skipped)" if summary["rmae"] is None else fmt(summary["rmae"] * 100, 3) + " %"
        rows.append([law, rmae, str(summary["held_out_runs"]), str(summary["units"]), str(summary["skipped"])])
    s.table(["law", "RMAE", "held-out runs", "fits", "skipped"], rows)
    for law, hs in holdouts.items():
        skipped = [h for h in hs if not h.usable]
        if skipped:
            first = skipped[0]
            s.text(f"{law}: {len(skipped)} holdout(s) skipped, e.g. {first.unit.label}: "
                   f"{first.skipped or first.fit.message}")
    s.figures += [f for a in aset.analyses if (f := predicted_vs_observed_figure(a)) is not None]
    return s


def findings_sections(aset: AnalysisSet, data: dict) -> list[Section]:
    out = []
    cond = ["condition"] if aset.many_conditions else []
    if data["extrapolation"]:
        s = Section("Extrapolation", ["From identified fits only."])
        s.table(["law", "mixture", *cond, "N", "D", "predicted loss", "beyond the data"],
                [[e["law"], e["mixture"], *_cond(aset, e), format_count(e["N"]), format_count(e["D"]),
                  with_interval(e["predicted_loss"], e["interval"]), "yes" if e["beyond_data"] else "no"]
                 for e in data["extrapolation"]])
        out.append(s)

    s = Section("Speed-up over the natural baseline",
                [f"Baseline{' per condition' if cond else ''}: " + "; ".join(b["why"] for b in data["baseline"]) + "."])
    speedups = data["speedup"]
    if speedups:
        budgets = sorted({at["D"] for sp in speedups if sp["identified"] for at in sp["at_budgets"]})
        rows = []
        for sp in speedups:
            who = [sp["mixture"], family_name(sp["family"], sp["generator"]), *_cond(aset, sp), format_count(sp["N"])]
            if not sp["identified"]:
                rows.append(who + ["not identified: " + sp["reason"]] + [""] * max(len(budgets) - 1, 0))
                continue
            at = {a["D"]: a for a in sp["at_budgets"]}
            rows.append(who + [with_interval(at[d]["speedup"], at[d]["interval"]) + ("*" if at[d]["beyond_data"] else "")
                               if d in at else "–" for d in budgets])
        s.text("Speed-up at each budget D (columns); * beyond the largest run (extrapolated).")
        s.table(["mixture", "family/generator", *cond, "N", *([f"D={format_count(d)}" for d in budgets] or ["speed-up"])],
                rows)
        good = [sp for sp in speedups if sp["identified"]]
        crossing = [sp for sp in good if sp["crossing"]["crossings_D"] or sp["crossing"].get("resamples_with_crossing")]
        if good and not crossing:
            s.text(f"No fitted curve crosses the baseline's between D={format_count(budgets[0])} and "
                   f"D={format_count(budgets[-1])}, in the point fits or any bootstrap resample.")
        if crossing:
            s.text("Where the curves cross (the others do not, in the point fits or any resample):")
            s.table(["mixture", *cond, "N", "curves cross at D", "resamples with a crossing", "first crossing interval"],
                    [[sp["mixture"], *_cond(aset, sp), format_count(sp["N"]),
                      ", ".join(format_count(d) for d in sp["crossing"]["crossings_D"]) or "none in range",
                      f"{sp['crossing'].get('resamples_with_crossing', '–')}/{sp['crossing'].get('resamples_valid', '–')}",
                      interval_text(sp["crossing"].get("first_crossing_interval"), format_count)] for sp in crossing])
        s.figures += [f for a in aset.analyses if (f := speedup_figure(a)) is not None]
    out.append(s)

    if data["best_ratio"]:
        s = Section("Best synthetic ratio", ["Per (family, generator): the ratio with the lowest predicted loss "
                                             "(joint law) at each N (rows) and D (columns); [interval]: the ratios "
                                             "that win across the bootstrap resamples."])
        budgets = sorted({r["D"] for r in data["best_ratio"] if r["identified"]})
        cells: dict[tuple, dict] = {}
        for r in data["best_ratio"]:
            key = (family_name(r["family"], r["generator"]), *_cond(aset, r))
            if not r["identified"]:
                cells.setdefault((key, None), {})[None] = "not identified: " + r["reason"]
                continue
            iv = r.get("best_ratio_interval")
            cells.setdefault((key, r["N"]), {})[r["D"]] = (f"{r['best_ratio']:.0%}"
                                                          + (f" [{iv[0]:.0%}, {iv[1]:.0%}]" if iv else ""))
        rows = []
        for (key, N), by_d in cells.items():
            if N is None:
                rows.append([*key, "–", by_d[None]] + [""] * max(len(budgets) - 1, 0))
            else:
                rows.append([*key, format_count(N), *[by_d.get(d, "–") for d in budgets]])
        s.table(["family/generator", *cond, "N", *([f"D={format_count(d)}" for d in budgets] or ["best ratio"])], rows)
        for a in aset.analyses:
            s.figures += best_ratio_figures(a)
        out.append(s)

    if data["irreducible_loss"]:
        s = Section("Irreducible loss E")
        s.table(["fit", "mixture", "family/generator", *cond, "synthetic fraction", "E"],
                [[r["fit"], r["mixture"], family_name(r["family"], r["generator"]), *_cond(aset, r),
                  fmt(r["synthetic_fraction"], 3),
                  with_interval(r["E"], r["interval"]) if r["identified"] else "not identified: " + r["reason"]]
                 for r in data["irreducible_loss"]])
        s.figures += [f for a in aset.analyses if (f := irreducible_figure(a)) is not None]
        out.append(s)
    return out


def seed_section(aset: AnalysisSet, data: dict) -> Section:
    s = Section("Seed-to-seed noise beside the effects")
    effects = data["seed_spread"]["effects"]
    if not effects:
        s.text("No configuration was trained more than once: the noise of a single run is not measured, so "
               "differences between mixtures cannot be compared with it.")
        return s
    s.text("Where a configuration (mixture, N, D) was trained with several seeds: the sample standard deviation "
           "and range of its loss over seeds, beside the differences of mean loss between the mixtures at the "
           "same (N, D) (|difference| over all pairs, and each mixture minus the baseline).")
    cond = ["condition"] if aset.many_conditions else []
    rows = []
    for e in effects:
        diff = e["mixture_differences"]
        vs = e["vs_baseline"] or {}
        rows.append([*_cond(aset, e), format_count(e["N"]), format_count(e["D"]),
                     ", ".join(f"{r['mixture']} (n={r['n']})" for r in e["repeated"]),
                     fmt(e["seed_std"], 3), fmt(e["seed_range"], 3),
                     "–" if not diff else f"{fmt(diff['min'], 3)} / {fmt(diff['median'], 3)} / {fmt(diff['max'], 3)}",
                     "–" if not diff else f"{diff['beyond_seed_range']} of {diff['pairs']}",
                     ", ".join(f"{m} {v:+.3g}" for m, v in vs.items()) or "–"])
    s.table([*cond, "N", "D", "seed repeats", "seed std", "seed range", "|mixture difference| min / median / max",
             "pairs beyond the seed range", "mixture − baseline"], rows)
    return s


def domain_section(aset: AnalysisSet) -> Section | None:
    if not aset.domains:
        return None
    dcfg = aset.domain_config or aset.config
    e_rows, ratio_rows = domain_rows(aset)
    targets = [aset.table.target, *aset.domains]
    s = Section("Per evaluation domain", [
        f"The fits repeated for each `loss.<domain>` column ({dcfg.bootstrap} bootstrap resamples, "
        f"{'coarse' if dcfg.fit.grid is not None else 'full'} starting grid, no holdout); first column: "
        f"`{aset.table.target}`. E of the joint law per mixture, and the best ratio per family at the largest "
        f"(N, D) of the runs."])
    keys = sorted({(r["condition"] or "", r["mixture"]) for r in e_rows}, key=lambda k: (k[0], k[1]))
    cells = {(r["target"], r["condition"] or "", r["mixture"]): r["text"] for r in e_rows}
    cond = ["condition"] if aset.many_conditions else []
    if keys:
        s.text("Irreducible loss E:")
        s.table(["mixture", *cond, *targets],
                [[m, *([c] if cond else []), *[cells.get((t, c, m), "–") for t in targets]] for c, m in keys])
    fam_keys = sorted({(r["condition"] or "", r["family"]) for r in ratio_rows})
    fam_cells = {(r["target"], r["condition"] or "", r["family"]): r["text"] for r in ratio_rows}
    if fam_keys:
        s.text("Best synthetic ratio at the largest (N, D):")
        s.table(["family/generator", *cond, *targets],
                [[f, *([c] if cond else []), *[fam_cells.get((t, c, f), "–") for t in targets]] for c, f in fam_keys])
    return s


def build_sections(aset: AnalysisSet, data: dict, config_file: Path | None = None) -> list[Section]:
    sections = [Section("Summary", [line for line in summary_lines(aset)]),
                input_section(aset, data, config_file), grouping_section(aset, data)]
    sections += law_sections(aset, data)
    sections += rectified_sections(aset, data)
    if (s := holdout_section(aset)) is not None:
        sections.append(s)
    sections += findings_sections(aset, data)
    sections.append(seed_section(aset, data))
    if (s := domain_section(aset)) is not None:
        sections.append(s)
    return sections
