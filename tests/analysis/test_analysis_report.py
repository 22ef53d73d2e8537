"""`analysis report`: the three documents, the figures and the numbers in them."""

import json
import re
from html import unescape

from click.testing import CliRunner

from analysis.cli import main
from analysis.report import fmt


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
    for mixture in ("natural", "hq_33", "hq_67"):
        assert f"data_scaling_{mixture}" in figures and f"model_scaling_{mixture}" in figures
    for name in ("predicted_vs_observed", "irreducible_loss", "speedup", "best_ratio_hq", "zipf", "kl"):
        assert name in figures
    # Self-contained HTML: every figure embedded, each with a caption; Markdown links the files.
    assert html.count("src='data:image/png;base64,") == len(figures)
    assert html.count("<figcaption>") == len(figures)
    assert not re.search(r"(src|href)=['\"]?(https?:|//|figures/)", html)  # nothing fetched from elsewhere
    for name in figures:
        assert f"](figures/{name}.png)" in markdown
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "fitted separately at each N on the runs of mixture 'natural'" in unescape(html)

    # Every fitted number is in fits.json, and the documents show them.
    joint = {f["mixture"]: f for f in fits["fits"]["joint"]}
    assert set(joint) == {"natural", "hq_33", "hq_67"}
    for entry in joint.values():
        assert entry["converged"] and set(entry["params"]) == {"A", "B", "E", "alpha", "beta"}
        assert set(entry["intervals"]) == {"A", "B", "E", "alpha", "beta"}
        assert entry["bootstrap"]["resamples"] == 20
        assert fmt(entry["params"]["E"]) in html and fmt(entry["params"]["E"]) in markdown
    assert len(fits["fits"]["data"]) == 12 and len(fits["fits"]["model"]) == 15
    assert fits["holdout"]["data"]["summary"]["held_out_runs"] == 12
    assert 0 < fits["holdout"]["data"]["summary"]["rmae"] < 0.05
    assert fits["baseline"]["mixture"] == "natural"
    speedups = fits["speedup"]
    assert {s["mixture"] for s in speedups} == {"hq_33", "hq_67"} and len(speedups) == 8
    assert any(a["D"] == 1e12 and a["beyond_data"] for a in speedups[0]["at_budgets"])
    assert fits["best_ratio"] and {r["family"] for r in fits["best_ratio"]} == {"hq"}
    assert [r["mixture"] for r in fits["irreducible_loss"]] == ["hq_33", "hq_67", "natural"]
    assert fits["unigram"]["per_train"]["natural"]["token_coverage"] == 5 / 6
    assert fits["provenance"]["inputs"][0]["sha256"]
    assert fits["settings"]["fit"]["grid"] is not None  # the coarse grid is on record
    assert "coarse starting grid" in html


def test_report_refuses_a_half_given_unigram_request(results_csv, tmp_path):
    result = CliRunner().invoke(main, ["report", str(results_csv), "-o", str(tmp_path / "r"), "--unigram-test", "x"])
    assert result.exit_code != 0 and "--unigram-train and --unigram-test go together" in result.output
    assert not (tmp_path / "r").exists()
