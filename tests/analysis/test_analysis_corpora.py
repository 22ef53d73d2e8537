"""`analysis report --corpus NAME=DIR`: the synthetic corpora's recipe, generator and fidelity,
read from their generation manifests, side by side in the report and fits.json."""

from __future__ import annotations

import json

from click.testing import CliRunner

from analysis.cli import main
from analysis.data.corpora import read_corpus


def _manifest(folder, generator: str, recall: float, passed: float) -> None:
    """The keys `generation run` writes (generation/run/manifest.py) that the report reads."""
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({
        "kind": "synthscale.synthetic", "version": 2, "complete": False, "limit": 10, "recipe": "hq",
        "generator": {"id": generator, "name": generator.split("@")[0], "sha256": generator.split("@")[1] * 5},
        "counts": {"documents": 27, "document_tokens": 8613},
        "filters": {"dropped": {"truncated": 3}},
        "fidelity": {"outputs": 30, "passed": round(30 * passed), "pass_rate": passed, "mean_output_tokens": 287.0,
                     "source_word_recall": recall, "degenerate_share": 0.4, "degenerate_share_kept": 0.0},
    }))


def test_report_lists_each_corpus_and_compares_generators(tmp_path, results_csv):
    _manifest(tmp_path / "hq", "SmolLM2-135M-Instruct@df4536730d59", 0.262, 0.9)
    _manifest(tmp_path / "hq-random", "random-tiny@0a1b2c3d4e5f", 0.035, 1.0)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", str(results_csv), "--output", str(out), "--law", "data",
                                       "--bootstrap", "0", "--grid", "coarse", "--no-domains", "--skip-unfittable",
                                       "--corpus", f"hq={tmp_path / 'hq'}", "--corpus", f"hq-random={tmp_path / 'hq-random'}"])
    assert result.exit_code == 0, result.output
    fits = json.loads((out / "fits.json").read_text())
    rows = {r["name"]: r for r in fits["synthetic_corpora"]}
    assert rows["hq"]["generator"] == "SmolLM2-135M-Instruct@df4536730d59" and rows["hq"]["source_word_recall"] == 0.262
    assert rows["hq"]["degenerate_share"] == 0.4 and rows["hq"]["degenerate_share_kept"] == 0.0  # before / after
    markdown = (out / "report.md").read_text()
    assert "## Synthetic corpora" in markdown
    assert "SmolLM2-135M-Instruct@df4536730d59 keeps 26.2%" in markdown  # ranked first: it keeps more
    assert markdown.index("SmolLM2-135M-Instruct@df4536730d59 keeps") < markdown.index("random-tiny@0a1b2c3d4e5f keeps")


def test_a_folder_that_is_not_a_generation_output_is_named(tmp_path, results_csv):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "manifest.json").write_text(json.dumps({"kind": "synthscale.tokenized"}))
    result = CliRunner().invoke(main, ["report", str(results_csv), "--output", str(tmp_path / "r"),
                                       "--corpus", f"x={tmp_path / 'x'}"])
    assert result.exit_code == 1 and "not a generation manifest" in result.output and "x=" in result.output
    missing = CliRunner().invoke(main, ["report", str(results_csv), "--output", str(tmp_path / "r"),
                                        "--corpus", f"y={tmp_path / 'nothing'}"])
    assert missing.exit_code == 1 and "Error: --corpus y=" in missing.output and "no generation manifest" in missing.output
    assert not (tmp_path / "r").exists()  # refused before any fit
    bad = CliRunner().invoke(main, ["report", str(results_csv), "--output", str(tmp_path / "r"), "--corpus", "y"])
    assert bad.exit_code == 2 and "Invalid value for '--corpus': expected NAME=DIR, got 'y'" in bad.output


def test_read_corpus_accepts_the_manifest_file_itself(tmp_path):
    _manifest(tmp_path / "qa", "g@0123456789ab", 0.2, 0.5)
    assert read_corpus("qa", tmp_path / "qa" / "manifest.json")["pass_rate"] == 0.5
