"""The report's sections, built from an AnalysisSet and its fits.json document, in reading order.

Summary; each mixture against natural text (measured, no law); which fits the runs identify (one
table); each law's fits (parameters of identified fits only, every fitted curve with its residuals);
holdout; the findings from the laws; the inputs; per domain. A fit or finding that is not
identified never shows an estimate, and what is not identified collapses to one line per section.
With several conditions, tables gain a condition column and figures carry the condition.
"""

from __future__ import annotations

from pathlib import Path

from analysis.core.laws import get_law
from analysis.fitting.holdout import holdout_summary
from analysis.multi import AnalysisSet
from analysis.report.comparison_section import comparison_section
from analysis.report.findings_section import findings_section
from analysis.report.fit_plots import predicted_vs_observed_figure, scaling_figure
from analysis.report.identification_section import identification_section
from analysis.report.rectified_section import rectified_sections
from analysis.report.summary import domain_rows, family_name, summary_lines
from analysis.report.textfmt import Section, fmt, with_interval
from analysis.results.identification import tally, tally_text
from synthscale.units import format_count


def _fit_rows(entries: list[dict], fixed: str | None, names: tuple[str, ...], cond: bool) -> list[list[str]]:
    """One row per mixture of an identified fit: value [interval] of each parameter."""
    rows = []
    for e in entries:
        if not (e["converged"] and e["identified"]):
            continue
        who = e.get("mixture") or "+".join(e.get("mixtures", []))
        where = ([str(e.get("condition") or "")] if cond else []) + ([format_count(e[fixed])] if fixed else [])
        per_mixture = e["params"] if "mixtures" in e else {who: e["params"]}
        for mixture, params in per_mixture.items():
            ivs = e.get("intervals") or {}
            ivs = ivs.get(mixture, {}) if "mixtures" in e else ivs
            rows.append([mixture, *where, str(e["points"]), *[with_interval(params[k], ivs.get(k)) for k in names]])
    return rows


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
            f"{' of one condition' if cond else ''}; parameters of identified fits with their bootstrap "
            "intervals [low, high]."])
        rows = [r for r in data["identification"] if r["law"] == law_name]
        h = ["mixture"] + (["condition"] if cond else []) + ([fixed] if fixed else []) + ["points", *law.natural_names]
        table = _fit_rows(data["fits"][law_name], fixed, law.natural_names, cond)
        if law_name in data["shared_exponent_fits"]:
            table += _fit_rows(data["shared_exponent_fits"][law_name], fixed, law.natural_names, cond)
        if table:
            s.table(h, table)
        unidentified = [r for r in rows if r["status"] != "identified"]
        if unidentified:
            s.text(f"{tally_text(rows)}: the others have no parameters here (see Identification); their fitted "
                   "curves and residuals are in the figure.")
        if law_name in ("data", "model"):
            s.figures += [f for a in aset.analyses if (f := scaling_figure(a, law_name)) is not None]
        else:
            s.figures += [f for a in aset.analyses if (f := predicted_vs_observed_figure(a)) is not None]
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
        skipped = [h for h in hs if not h.usable]
        why = f"e.g. {skipped[0].unit.label}: {skipped[0].skipped or skipped[0].fit.message}" if skipped else "–"
        rows.append([law, rmae, str(summary["held_out_runs"]), str(summary["units"]), str(summary["skipped"]), why])
    s.table(["law", "RMAE", "held-out runs", "fits", "skipped", "why skipped"], rows)
    return s


def input_section(aset: AnalysisSet, data: dict, config_file: Path | None = None) -> Section:
    cfg, table = aset.config, aset.table
    s = Section("Input", [
        f"Results table `{table.path}`, fitted column `{table.target}`: {len(table.runs)} runs used, "
        f"{len(table.excluded)} excluded, {len(table.duplicates)} duplicate(s) dropped. Fits: Huber loss (delta "
        f"{cfg.fit.delta:g}) on log loss, L-BFGS-B with analytic gradients from "
        f"{'the full starting grid of Hoffmann et al.' if cfg.fit.grid is None else 'a coarse starting grid'}, "
        f"best kept; bootstrap: {cfg.bootstrap} resamples of runs (seed {cfg.seed}), {cfg.confidence:.0%} "
        "percentile intervals shown as [low, high]."])
    if config_file is not None:
        s.text(f"Configuration: `{config_file.name}` beside this report (`analysis report --config {config_file}` "
               "runs it again, from the folder it ran in).")
    if table.notes:
        s.text("How the table was read (it lacks some labels): " + "; ".join(table.notes) + ".")
    conditions = data["conditions"]
    s.text("A condition is (backend, recipe_hash, eval_identity): runs trained or scored differently are analysed "
           "apart unless pooled. " + "; ".join(
               f"{c['condition'] or 'all runs (not recorded)'}: {c['runs']} runs, {len(c['mixtures'])} mixtures"
               + (f", evaluation {', '.join(i[:12] for i in c['eval_identity'])}" if c.get("eval_identity") else "")
               for c in conditions) + ".")
    runs = table.runs
    s.table(["mixture", "family", "generator", "synthetic fraction", "runs", "sizes N", "budgets D"],
            [[m, v["family"] or "–", v["generator"] or "–", fmt(v["synthetic_fraction"], 3), str(v["runs"]),
              ", ".join(format_count(n) for n in sorted(set(runs.loc[runs["mixture"] == m, "N"]))),
              ", ".join(format_count(d) for d in sorted(set(runs.loc[runs["mixture"] == m, "D"])))]
             for m, v in sorted(data["table"]["mixtures"].items(), key=lambda kv: (kv[1]["synthetic_fraction"] != 0,
                                                                                 kv[1]["family"] or "", kv[0]))])
    axes = [(f"[{g['condition']}] " if aset.many_conditions else "")
            + f"{family_name(g['family'], g['generator'])}: {', '.join(m['mixture'] for m in g['mixtures'])}"
            for g in data["groups"] if g["family"]]
    if axes:
        s.text("Ratio axes (a family's mixtures and the natural mixture of its condition): " + "; ".join(axes) + ".")
    if table.excluded:
        s.text("Excluded runs (bad input):")
        s.table(["row", "run_id", "mixture", "reason"],
                [[str(e["row"]), e["run_id"], str(e["mixture"]), e["reason"]] for e in table.excluded])
    if table.duplicates:
        s.text("Duplicate rows dropped:")
        s.table(["row", "run_id", "duplicate of row", "reason"],
                [[str(d["row"]), d["run_id"], str(d["duplicate_of_row"]), d["reason"]] for d in table.duplicates])
    return s


def domain_section(aset: AnalysisSet) -> Section | None:
    if not aset.domains:
        return None
    dcfg = aset.domain_config or aset.config
    targets = [aset.table.target, *aset.domains]
    s = Section("Per evaluation domain", [
        f"The fits repeated for each `loss.<domain>` column ({dcfg.bootstrap} bootstrap resamples, "
        f"{'coarse' if dcfg.fit.grid is not None else 'full'} starting grid, no holdout): E of the joint law per "
        f"mixture and the best ratio per family at the largest (N, D) of the runs; first column `{aset.table.target}`."])
    rows = [r for analyses in aset.domains.values() for a in analyses for r in a.identification]
    s.text(f"Per domain ({', '.join(aset.domains)}): {tally_text(rows)}.")
    if not tally(rows)["identified"]:
        s.text("No E or best ratio can be stated per domain: no fit is identified.")
        return s
    e_rows, ratio_rows = domain_rows(aset)
    cond = ["condition"] if aset.many_conditions else []
    shown = {(r["condition"] or "", r["mixture"]) for r in e_rows if r["identified"]}
    cells = {(r["target"], r["condition"] or "", r["mixture"]): r["text"] if r["identified"] else "–" for r in e_rows}
    if shown:
        s.text("Irreducible loss E (–: not identified; the other mixtures have no identified E in any column):")
        s.table(["mixture", *cond, *targets],
                [[m, *([c] if cond else []), *[cells.get((t, c, m), "–") for t in targets]] for c, m in sorted(shown)])
    fam_shown = {(r["condition"] or "", r["family"]) for r in ratio_rows if r["identified"]}
    fam_cells = {(r["target"], r["condition"] or "", r["family"]): r["text"] if r["identified"] else "–"
                 for r in ratio_rows}
    if fam_shown:
        s.text("Best synthetic ratio at the largest (N, D) (–: not identified):")
        s.table(["family/generator", *cond, *targets],
                [[f, *([c] if cond else []), *[fam_cells.get((t, c, f), "–") for t in targets]]
                 for c, f in sorted(fam_shown)])
    return s


def build_sections(aset: AnalysisSet, data: dict, config_file: Path | None = None) -> list[Section]:
    sections = [Section("Summary", [line for line in summary_lines(aset)]), comparison_section(aset),
                identification_section(aset, data)]
    sections += law_sections(aset, data)
    sections += rectified_sections(aset, data)
    if (s := holdout_section(aset)) is not None:
        sections.append(s)
    sections.append(findings_section(aset, data))
    sections.append(input_section(aset, data, config_file))
    if (s := domain_section(aset)) is not None:
        sections.append(s)
    return sections
