"""The report: one self-contained HTML page, Markdown (figures beside it) and fits.json.

Both documents are rendered from one list of `Section`s, so they say the same thing.
fits.json holds every fitted number (non-finite numbers as the strings "inf"/"-inf", NaN as null).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.laws import get_law
from analysis.pipeline import Analysis
from analysis.plots import (Figure, best_ratio_figures, irreducible_figure, predicted_vs_observed_figure,
                            scaling_figure, speedup_figure, unigram_figures)
from analysis.unigram import UnigramResult
from analysis.validation import holdout_summary
from synthscale.files import atomic_paths, describe_file
from synthscale.provenance import provenance
from synthscale.units import format_count


@dataclass
class Section:
    """A titled part of the report: paragraphs and tables in order, then figures."""

    title: str
    blocks: list[str | tuple[list[str], list[list[str]]]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)

    def text(self, *paragraphs: str) -> "Section":
        self.blocks += list(paragraphs)
        return self

    def table(self, head: list[str], rows: list[list[str]]) -> "Section":
        self.blocks.append((head, rows))
        return self


def jsonable(obj):
    """numpy scalars/arrays to Python; inf to "inf"; NaN to None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        if math.isnan(x):
            return None
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    return obj


def fmt(x, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    x = float(x)
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:.{digits}g}"


def with_interval(value, interval) -> str:
    return fmt(value) + (f" [{fmt(interval[0], 3)}, {fmt(interval[1], 3)}]" if interval else "")


def interval_text(interval, formatter=fmt) -> str:
    if not interval:
        return "–"
    return "[" + ", ".join("∞" if isinstance(v, str) or math.isinf(v) else formatter(v) for v in interval) + "]"


def _fit_rows(entries: list[dict], fixed: str | None, names: tuple[str, ...]) -> list[list[str]]:
    """One row per mixture: value [interval] of each parameter, or the reason there are none."""
    rows = []
    for e in entries:
        who = e.get("mixture") or "+".join(e.get("mixtures", []))
        where = [format_count(e[fixed])] if fixed else []
        if not e["converged"]:
            rows.append([who, *where, str(e["points"]), e["message"]] + [""] * (len(names) - 1))
            continue
        per_mixture = e["params"] if "mixtures" in e else {who: e["params"]}
        for mixture, params in per_mixture.items():
            ivs = e.get("intervals") or {}
            ivs = ivs.get(mixture, {}) if "mixtures" in e else ivs
            rows.append([mixture, *where, str(e["points"]), *[with_interval(params[k], ivs.get(k)) for k in names]])
    return rows


def build_sections(analysis: Analysis, data: dict, unigram: UnigramResult | None) -> list[Section]:
    cfg, table = analysis.config, analysis.table
    sections = []
    inp = Section("Input", [
        f"Results table `{table.path}`, fitted column `{table.target}`: {len(table.runs)} runs used, "
        f"{len(table.excluded)} excluded, {len(table.duplicates)} duplicate(s) dropped, "
        f"{len(table.repeated)} repeated configuration(s) kept.",
        f"Fits: Huber loss (delta {cfg.fit.delta:g}) on log loss, L-BFGS-B with analytic gradients from "
        f"{'the full starting grid of Hoffmann et al.' if cfg.fit.grid is None else 'a coarse starting grid (quick look)'}"
        f", best kept. Bootstrap: {cfg.bootstrap} resamples of runs (seed {cfg.seed}), "
        f"{cfg.confidence:.0%} percentile intervals shown as [low, high].",
    ])
    inp.table(*(["mixture", "runs", "synthetic fraction"],
                       [[m, str(v["runs"]), fmt(v["synthetic_fraction"], 3)] for m, v in data["table"]["mixtures"].items()]))
    if table.excluded:
        inp.text("Excluded runs (bad input):")
        inp.table(*(["row", "run_id", "mixture", "reason"],
                           [[str(e["row"]), e["run_id"], str(e["mixture"]), e["reason"]] for e in table.excluded]))
    if table.duplicates:
        inp.text("Duplicate rows dropped:")
        inp.table(*(["row", "run_id", "duplicate of row", "reason"],
                           [[str(d["row"]), d["run_id"], str(d["duplicate_of_row"]), d["reason"]] for d in table.duplicates]))
    if table.repeated:
        inp.text("Repeated configurations (several runs of one mixture, N, D; all kept):")
        inp.table(*(["mixture", "N", "D", "runs", "losses"],
                           [[r["mixture"], format_count(r["N"]), format_count(r["D"]), ", ".join(r["run_ids"]),
                             ", ".join(fmt(x) for x in r["losses"])] for r in table.repeated]))
    if analysis.not_fitted:
        inp.text("Not fitted (too few points):")
        inp.text(*[f"- {p}" for p in analysis.not_fitted])
    sections.append(inp)

    for law_name in ("data", "model", "joint"):
        if law_name not in data["fits"]:
            continue
        law = get_law(law_name)
        fixed = law.fixed
        s = Section(f"{law_name.capitalize()} law: {law.formula}", [
            f"Fitted {'per mixture at each ' + fixed if fixed else 'per mixture'} on its runs; "
            "values with their bootstrap intervals [low, high]."])
        h = ["mixture"] + ([fixed] if fixed else []) + ["points", *law.natural_names]
        s.table(*(h, _fit_rows(data["fits"][law_name], fixed, law.natural_names)))
        if law_name in data["shared_exponent_fits"]:
            s.text("Exponents shared across mixtures:")
            s.table(*(h, _fit_rows(data["shared_exponent_fits"][law_name], fixed, law.natural_names)))
        if law_name in ("data", "model"):
            s.figures += [f for m in table.mixtures if (f := scaling_figure(analysis, law_name, m)) is not None]
        sections.append(s)

    if analysis.holdouts:
        s = Section("Holdout validation", ["Each law refitted without the runs at the largest D (data, joint) or N "
                                           "(model); RMAE = mean |predicted - observed| / observed over the held-out runs."])
        rows = []
        for law, hs in analysis.holdouts.items():
            summary = holdout_summary(hs)
            rmae = "– (every holdout skipped)" if summary["rmae"] is None else fmt(summary["rmae"] * 100, 3) + " %"
            rows.append([law, rmae,
                         str(summary["held_out_runs"]), str(summary["units"]), str(summary["skipped"])])
        s.table(*(["law", "RMAE", "held-out runs", "fits", "skipped"], rows))
        for law, hs in analysis.holdouts.items():
            skipped = [h for h in hs if not h.usable]
            if skipped:
                first = skipped[0]
                s.text(f"{law}: {len(skipped)} holdout(s) skipped, e.g. {first.unit.label}: "
                       f"{first.skipped or first.fit.message}")
        if (fig := predicted_vs_observed_figure(analysis)) is not None:
            s.figures.append(fig)
        sections.append(s)

    if analysis.extrapolations:
        s = Section("Extrapolation")
        s.table(*(["law", "mixture", "N", "D", "predicted loss", "beyond the data"],
                         [[e["law"], e["mixture"], format_count(e["N"]), format_count(e["D"]),
                           with_interval(e["predicted_loss"], e["interval"]), "yes" if e["beyond_data"] else "no"]
                          for e in analysis.extrapolations]))
        sections.append(s)

    s = Section("Speed-up over the natural baseline", [f"Baseline: {analysis.baseline_note}."])
    if analysis.speedups:
        rows = []
        for sp in analysis.speedups:
            for at in sp["at_budgets"]:
                rows.append([sp["mixture"], format_count(sp["N"]), format_count(at["D"]),
                             with_interval(at["speedup"], at["interval"]) + (" (extrapolated)" if at["beyond_data"] else "")])
        s.table(*(["mixture", "N", "D", "speed-up"], rows))
        s.table(*(["mixture", "N", "curves cross at D", "resamples with a crossing", "first crossing interval"],
                         [[sp["mixture"], format_count(sp["N"]),
                           ", ".join(format_count(d) for d in sp["crossing"]["crossings_D"]) or "none in range",
                           f"{sp['crossing'].get('resamples_with_crossing', '–')}/{sp['crossing'].get('resamples_valid', '–')}",
                           interval_text(sp["crossing"].get("first_crossing_interval"), format_count)]
                          for sp in analysis.speedups]))
        if (fig := speedup_figure(analysis)) is not None:
            s.figures.append(fig)
    sections.append(s)

    if analysis.best_ratios:
        s = Section("Best synthetic ratio")
        s.table(*(["family", "N", "D", "best ratio", "share of resamples where it is best"],
                         [[r["family"], format_count(r["N"]), format_count(r["D"]), f"{r['best_ratio']:.0%} ({r['best_mixture']})",
                           fmt(next(c.get("share_of_resamples_best") for c in r["curve"] if c["mixture"] == r["best_mixture"]), 3)]
                          for r in analysis.best_ratios]))
        s.figures += best_ratio_figures(analysis)
        sections.append(s)

    if analysis.irreducible:
        s = Section("Irreducible loss E")
        s.table(*(["fit", "mixture", "synthetic fraction", "E"],
                         [[r["fit"], r["mixture"], fmt(r["synthetic_fraction"], 3), with_interval(r["E"], r["interval"])]
                          for r in analysis.irreducible]))
        if (fig := irreducible_figure(analysis)) is not None:
            s.figures.append(fig)
        sections.append(s)

    if unigram is not None:
        sections.append(unigram_section(unigram))
    if analysis.notes:
        sections.append(Section("Notes", [f"- {n}" for n in analysis.notes]))
    return sections


def unigram_section(result: UnigramResult) -> Section:
    d = result.to_dict()
    s = Section("Unigram diagnostics", [
        f"Test set `{d['test']['prefix']}`: {d['test']['tokens']} tokens in {d['test']['documents']} documents "
        f"(left out: {d['test']['excluded_ids'] or 'nothing'}). KL uses additive smoothing alpha = {result.smoothing:g} "
        f"of the training distribution over V = {result.vocab_size} token ids."])
    s.table(*(["training set", "tokens", "token coverage", "type coverage", "KL(test||train) nats", "Zipf s"],
                     [[n, str(next(t["tokens"] for t in d["train"] if t["name"] == n)), fmt(v["token_coverage"]),
                       fmt(v["type_coverage"]), fmt(v["kl_test_train_nats"]), fmt(d["zipf"][n].get("exponent"), 3)]
                      for n, v in d["per_train"].items()]))
    for name, v in d["per_train"].items():
        s.text(f"Tokens frequent in test but rare in `{name}`:")
        s.table(*(["token id", "test count", "train count", "p_test / q_train"],
                         [[str(t["token_id"]), str(t["test_count"]), str(t["train_count"]), fmt(t["ratio"])]
                          for t in v["frequent_in_test_rare_in_train"]]))
    s.figures += unigram_figures(result)
    return s


def render_html(title: str, sections: list[Section]) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
             "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse;margin:.6em 0;font-size:.85em}td,th{border:1px solid #ccc;padding:3px 6px}"
             "th{background:#f0f0f0}figure{margin:1.2em 0}figcaption{font-size:.85em;color:#333;max-width:900px}"
             "img{max-width:100%}</style></head><body>", f"<h1>{e(title)}</h1>"]
    for s in sections:
        parts.append(f"<h2>{e(s.title)}</h2>")
        for block in s.blocks:
            if isinstance(block, str):
                parts.append("<p>" + re.sub(r"`([^`]+)`", r"<code>\1</code>", e(block)) + "</p>")
                continue
            head, rows = block
            parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</table>")
        for f in s.figures:
            data = base64.b64encode(f.png).decode("ascii")
            parts.append(f"<figure id='{e(f.name)}'><img alt='{e(f.title)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption><b>{e(f.title)}.</b> {e(f.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for block in s.blocks:
            if isinstance(block, str):
                lines += [block, ""]
                continue
            head, rows = block
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
            lines.append("")
        for f in s.figures:
            lines += [f"![{f.title}](figures/{f.name}.png)", "", f"*{f.title}.* {f.caption}", ""]
    return "\n".join(lines)


def fits_document(analysis: Analysis, unigram: UnigramResult | None) -> dict:
    data = analysis.to_json()
    return jsonable({
        "kind": "synthscale.analysis", "version": 1, **data,
        "unigram": unigram.to_dict() if unigram is not None else None,
        "provenance": provenance(analysis.config.to_dict(), [describe_file(analysis.table.path)]),
    })


def write_report(analysis: Analysis, output: str | Path, unigram: UnigramResult | None = None) -> dict[str, Path]:
    """Write report.html, report.md, fits.json and figures/*.png under `output`, all or nothing."""
    output = Path(output)
    document = fits_document(analysis, unigram)
    sections = build_sections(analysis, document, unigram)
    title = f"synthscale analysis: {analysis.table.path.name}"
    figures = [f for s in sections for f in s.figures]
    targets = {"html": output / "report.html", "markdown": output / "report.md", "json": output / "fits.json"}
    figure_paths = [output / "figures" / f"{f.name}.png" for f in figures]
    with atomic_paths(*targets.values(), *figure_paths) as temps:
        temps[0].write_text(render_html(title, sections), encoding="utf-8")
        temps[1].write_text(render_markdown(title, sections), encoding="utf-8")
        temps[2].write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        for temp, figure in zip(temps[3:], figures):
            temp.write_bytes(figure.png)
    return {**targets, "figures": output / "figures"}
