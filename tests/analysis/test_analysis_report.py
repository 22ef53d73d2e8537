"""`analysis report`: the three documents, the figures and the numbers in them."""

import json
import re
from html import unescape

from click.testing import CliRunner

from analysis.cli import main
from analysis.report import fmt
from tests.analysis.helpers import GENERATOR


def _strict(text):
    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=reject)


def test_report_files_figures_and_numbers(results_csv, tmp_path, write_tokens):
    test = write_tokens(tmp_path / "heldout", [[1, 2, 3, 9], [1, 1, 2, 9]], eod_id=9, vocab_size=10)
    natural = write_tokens(tmp_path / "natural", [[1, 1, 1, 2, 9], [2, 4, 9]], eod_id=9, vocab_size=10)
    out = tmp_path / "report"
    args = ["report", str(results_csv), "--output", str(out), "--grid", "coarse", "--bootstrap", "20",
            "--extrapolate-D", "1T", "--unigram-train", f"natural={natural}", "--unigram-test", str(test)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    markdown = (out / "report.md").read_text()
    fits = _strict((out / "fits.json").read_text())

    figures = sorted(p.stem for p in (out / "figures").glob("*.png"))
    for mixture in ("natural", "hq-33pct", "hq-67pct"):
        assert f"data_scaling_{mixture}" in figures and f"model_scaling_{mixture}" in figures
    family_figure = f"best_ratio_hq_{GENERATOR.replace('@', '_')}"
    for name in ("predicted_vs_observed", "irreducible_loss", "speedup", family_figure, "zipf", "kl"):
        assert name in figures
    # Self-contained HTML: every figure embedded, each with a caption; Markdown links the files.
    assert html.count("src='data:image/png;base64,") == len(figures)
    assert html.count("<figcaption>") == len(figures)
    assert not re.search(r"(src|href)=['\"]?(https?:|//|figures/)", html)  # nothing fetched from elsewhere
    for name in figures:
        assert f"](figures/{name}.png)" in markdown
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "fitted separately at each N on the runs of mixture 'natural'" in unescape(html)

    # Every fitted number is in fits.json, and the documents show the identified ones.
    joint = {f["mixture"]: f for f in fits["fits"]["joint"]}
    assert set(joint) == {"natural", "hq-33pct", "hq-67pct"}
    for entry in joint.values():
        assert entry["converged"] and entry["identified"] and entry["condition"] == "cpu/3f2a1b9c0d"
        assert set(entry["params"]) == {"A", "B", "E", "alpha", "beta"}
        assert set(entry["intervals"]) == {"A", "B", "E", "alpha", "beta"}
        assert entry["bootstrap"]["resamples"] == 20
        assert fmt(entry["params"]["E"]) in html and fmt(entry["params"]["E"]) in markdown
    assert len(fits["fits"]["data"]) == 12 and len(fits["fits"]["model"]) == 15
    assert fits["holdout"]["data"]["summary"]["held_out_runs"] == 14  # 3 seeds at the largest (N, D)
    assert 0 < fits["holdout"]["data"]["summary"]["rmae"] < 0.05
    assert fits["baseline"] == [{"condition": "cpu/3f2a1b9c0d", "mixture": "natural",
                                 "why": "'natural' (the only mixture with synthetic_fraction 0)"}]
    speedups = fits["speedup"]
    assert {s["mixture"] for s in speedups} == {"hq-33pct", "hq-67pct"} and len(speedups) == 8
    assert {(s["family"], s["generator"]) for s in speedups} == {("hq", GENERATOR)}
    good = [s for s in speedups if s["identified"]]
    assert good and any(a["D"] == 1e12 and a["beyond_data"] for a in good[0]["at_budgets"])
    for s in speedups:
        assert s["identified"] or s["reason"]
    assert fits["best_ratio"] and {(r["family"], r["generator"]) for r in fits["best_ratio"]} == {("hq", GENERATOR)}
    assert [r["mixture"] for r in fits["irreducible_loss"]] == ["hq-33pct", "hq-67pct", "natural"]
    assert fits["unigram"]["per_train"]["natural"]["token_coverage"] == 5 / 6
    assert fits["provenance"]["inputs"][0]["sha256"]
    assert fits["settings"]["fit"]["grid"] is not None  # the coarse grid is on record
    assert "coarse starting grid" in html
    # The seed repeats of the baseline, set beside the differences between mixtures.
    (effect,) = fits["seed_spread"]["effects"]
    assert (effect["N"], effect["D"]) == (2e8, 1.6e10) and effect["repeated"][0]["n"] == 3
    assert "## Seed-to-seed noise beside the effects" in markdown
    # The summary: at most five lines, in the report, in summary.txt and printed at the end.
    summary = (out / "summary.txt").read_text().splitlines()
    assert 1 <= len(summary) <= 5 and result.output.rstrip().endswith(summary[-1])
    assert summary[1].startswith("best ratio at the largest N=200M, D=16B: hq/" + GENERATOR)
    assert fits["summary"] == summary


def test_report_refuses_a_half_given_unigram_request(results_csv, tmp_path):
    result = CliRunner().invoke(main, ["report", str(results_csv), "-o", str(tmp_path / "r"), "--unigram-test", "x"])
    assert result.exit_code != 0 and "--unigram-train and --unigram-test go together" in result.output
    assert not (tmp_path / "r").exists()
