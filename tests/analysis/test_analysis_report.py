"""`analysis report`: the three documents, the figures and the numbers in them."""

import json
import re
from html import unescape

import yaml
from click.testing import CliRunner

from analysis.cli import main
from analysis.report.textfmt import fmt
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
    family_figure = f"best_ratio_hq_{GENERATOR.replace('@', '_')}"
    for name in ("vs_natural", "data_scaling", "model_scaling", "predicted_vs_observed", "irreducible_loss", "speedup",
                 family_figure, "unigram"):
        assert name in figures
    # Self-contained HTML: every figure embedded, each with a caption; Markdown links the files.
    assert html.count("src='data:image/png;base64,") == len(figures)
    assert html.count("<figcaption>") == len(figures)
    assert not re.search(r"(src|href)=['\"]?(https?:|//|figures/)", html)  # nothing fetched from elsewhere
    for name in figures:
        assert f"](figures/{name}.png)" in markdown
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "fitted separately at each N on the runs of one mixture at that N" in unescape(html)

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
    assert "## Each mixture against natural text at equal (N, D)" in markdown and "Seed noise: standard deviation" in markdown
    # The summary: at most five lines, in the report, in summary.txt and printed at the end.
    summary = (out / "summary.txt").read_text().splitlines()
    assert 1 <= len(summary) <= 5 and result.output.rstrip().endswith(summary[-1])
    assert summary[1].startswith("measured vs natural at equal (N, D): ")
    assert summary[4].startswith(f"best ratio: hq/{GENERATOR} ") and "at N=200M, D=16B (joint law, " in summary[4]
    assert fits["summary"] == summary


def test_report_refuses_a_half_given_unigram_request(results_csv, tmp_path):
    result = CliRunner().invoke(main, ["report", str(results_csv), "-o", str(tmp_path / "r"), "--unigram-test", "x"])
    assert result.exit_code != 0 and "--unigram-train and --unigram-test go together" in result.output
    assert not (tmp_path / "r").exists()


def test_report_from_a_config_file_writes_its_resolved_config(results_csv, tmp_path):
    out = tmp_path / "report"
    config = tmp_path / "report.yaml"
    config.write_text(yaml.safe_dump({
        "input": {"results": str(results_csv), "output": str(out), "label": "from a file"},
        "fits": {"law": ["data"], "grid": "coarse"},
        "uncertainty": {"bootstrap": 3, "seed": 1},
        "per_domain": {"domains": False},
    }))
    runner = CliRunner()
    result = runner.invoke(main, ["report", "--config", str(config), "--set", "uncertainty.seed=7"])
    assert result.exit_code == 0, result.output
    written = yaml.safe_load((out / "report.config.yaml").read_text())
    assert list(written) == ["input", "fits", "uncertainty", "validation", "plateau", "per_domain", "unigram",
                             "synthetic_corpora"]
    assert written["uncertainty"] == {"bootstrap": 3, "seed": 7, "confidence": 0.95, "workers": 1}
    assert written["fits"]["laws"] == ["data"] and written["input"]["label"] == "from a file"
    settings = _strict((out / "fits.json").read_text())["settings"]
    assert (settings["bootstrap"], settings["seed"], settings["laws"]) == (3, 7, ["data"])  # what ran
    assert f"`analysis report --config {out / 'report.config.yaml'}`" in (out / "report.md").read_text()
    # The written file runs the same report again: it resolves to itself.
    again = runner.invoke(main, ["report", "--config", str(out / "report.config.yaml"), "--print-config"])
    assert again.exit_code == 0, again.output
    assert yaml.safe_load(again.output) == written


def test_print_config_flags_beat_the_file_and_nothing_runs(results_csv, tmp_path):
    config = tmp_path / "report.yaml"
    config.write_text("uncertainty:\n  bootstrap: 50\nunigram:\n  unigram_train: [natural=data/natural]\n"
                      "  unigram_test: data/heldout\n")
    result = CliRunner().invoke(main, ["report", str(results_csv), "-o", str(tmp_path / "r"), "--config", str(config),
                                       "--bootstrap", "9", "--set", "plateau.plateau_tol=0.02", "--print-config"])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    assert printed["uncertainty"]["bootstrap"] == 9 and printed["plateau"]["plateau_tol_abs"] == 0.02
    assert printed["unigram"]["unigram_train"] == ["natural=data/natural"]
    assert not (tmp_path / "r").exists()
    config.write_text("fits:\n  lawz: [data]\n")
    bad = CliRunner().invoke(main, ["report", str(results_csv), "-o", str(tmp_path / "r"), "--config", str(config)])
    assert bad.exit_code == 2 and "unknown key 'fits.lawz'" in bad.output
