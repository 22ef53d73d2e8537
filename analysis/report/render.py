"""The report: one self-contained HTML page, Markdown (figures beside it) and fits.json.

Both documents are rendered from one list of `Section`s, so they say the same thing.
fits.json holds every fitted number (non-finite numbers as the strings "inf"/"-inf", NaN as null).
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from analysis.multi import AnalysisSet
from analysis.report.corpora_section import corpora_section
from analysis.report.sections import build_sections
from analysis.report.summary import summary_lines
from analysis.report.textfmt import Section, jsonable
from analysis.report.unigram_section import unigram_section
from synthscale.files import atomic_paths, describe_file
from synthscale.provenance import provenance
from analysis.data.unigram import UnigramResult


STYLE = ("body{font-family:sans-serif;max-width:1180px;margin:1em auto;padding:0 1em;line-height:1.35;font-size:15px}"
         "h1{font-size:1.45em;margin:.3em 0}h2{font-size:1.15em;margin:1em 0 .35em;border-bottom:1px solid #ddd}"
         "p{margin:.35em 0;overflow-wrap:anywhere}code{overflow-wrap:anywhere}"
         "table{border-collapse:collapse;margin:.35em 0;font-size:.78em;line-height:1.25;max-width:100%}"
         "td,th{border:1px solid #ccc;padding:1px 5px;overflow-wrap:anywhere;vertical-align:top}th{background:#f0f0f0}"
         "figure{margin:.5em 0}figcaption{font-size:.8em;color:#333}img{max-width:100%;height:auto}")


def render_html(title: str, sections: list[Section]) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
             f"<meta name='viewport' content='width=device-width'><style>{STYLE}</style></head><body>",
             f"<h1>{e(title)}</h1>"]
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


def fits_document(aset: AnalysisSet, unigram: UnigramResult | None, corpora: list[dict] | None = None,
                  inputs_key: str | None = None) -> dict:
    data = aset.to_json()
    return jsonable({
        "kind": "synthscale.analysis", "version": 2, "inputs_key": inputs_key, **data,
        "summary": summary_lines(aset),
        "unigram": unigram.to_dict() if unigram is not None else None,
        "synthetic_corpora": corpora or [],
        "provenance": provenance(aset.config.to_dict(), [describe_file(aset.table.path)]),
    })


def write_report(aset: AnalysisSet, output: str | Path, unigram: UnigramResult | None = None,
                 corpora: list[dict] | None = None, config_file: Path | None = None,
                 inputs_key: str | None = None) -> dict[str, Path]:
    """Write report.html, report.md, fits.json, summary.txt and figures/*.png under `output`, all or nothing.

    `config_file`: where the caller writes the command's resolved configuration; the Input
    section names it."""
    output = Path(output)
    document = fits_document(aset, unigram, corpora, inputs_key)
    sections = build_sections(aset, document, config_file)
    if corpora:
        sections.append(corpora_section(corpora))
    if unigram is not None:
        sections.append(unigram_section(unigram))
    notes = aset.all_notes()
    if notes:
        sections.append(Section("Notes", [f"- {n}" for n in notes]))
    title = (f"{aset.label}: " if aset.label else "") + f"synthscale analysis: {aset.table.path.name}"
    figures = [f for s in sections for f in s.figures]
    names = [f.name for f in figures]
    if len(set(names)) != len(names):
        raise ValueError(f"two figures share a name: {sorted({n for n in names if names.count(n) > 1})}")
    targets = {"html": output / "report.html", "markdown": output / "report.md", "json": output / "fits.json",
               "summary": output / "summary.txt"}
    figure_paths = [output / "figures" / f"{f.name}.png" for f in figures]
    with atomic_paths(*targets.values(), *figure_paths) as temps:
        temps[0].write_text(render_html(title, sections), encoding="utf-8")
        temps[1].write_text(render_markdown(title, sections), encoding="utf-8")
        temps[2].write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        temps[3].write_text("\n".join(document["summary"]) + "\n", encoding="utf-8")
        for temp, figure in zip(temps[4:], figures):
            temp.write_bytes(figure.png)
    return {**targets, "figures": output / "figures"}
