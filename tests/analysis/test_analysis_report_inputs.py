"""What a report depends on: a rerun with the same inputs reuses it; runs scored differently
(eval_identity) are never fitted together; tokens are shown as the tokenizer's text."""

from __future__ import annotations

import json

import pandas as pd
from click.testing import CliRunner

from analysis.cli import main
from analysis.data.grouping import split_conditions
from analysis.data.table import read_results
from analysis.data.unigram import token_texts
from tests.analysis.helpers import BUDGETS, CONDITION, FRACTIONS, LABELS, LAWS, SIZES
from tests.analysis.simulate import simulate_table

ARGS = ["--law", "data", "--grid", "coarse", "--bootstrap", "3", "--no-domains"]


def _report(results, out, *extra):
    result = CliRunner().invoke(main, ["report", str(results), "-o", str(out), *ARGS, *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_rerun_with_unchanged_inputs_reuses_the_report(results_csv, tmp_path):
    out = tmp_path / "report"
    first = _report(results_csv, out)
    assert "wrote " in first
    written = {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    key = json.loads((out / "fits.json").read_text())["inputs_key"]
    again = _report(results_csv, out, "--workers", "2")  # workers do not change a fit
    assert again.startswith(f"reused {out}: made from the same results table, settings and inputs, nothing refitted")
    assert again.rstrip().endswith((out / "summary.txt").read_text().rstrip())
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == written
    # another setting, or another table: fitted again
    assert "wrote " in _report(results_csv, out, "--seed", "1")
    assert json.loads((out / "fits.json").read_text())["inputs_key"] != key
    frame = pd.read_csv(results_csv)
    frame.loc[0, "loss"] *= 1.001
    frame.to_csv(results_csv, index=False)
    assert "wrote " in _report(results_csv, out, "--seed", "1")
    # an incomplete report (a figure gone) is made again
    next((out / "figures").glob("*.png")).unlink()
    assert "wrote " in _report(results_csv, out, "--seed", "1")


def _scored(path, identities):
    frames = []
    for identity, seed in identities:
        frame = simulate_table(LAWS, SIZES, BUDGETS, noise=0.001, seed=seed, fractions=FRACTIONS, labels=LABELS,
                               condition=CONDITION)
        if identity is None:
            frame = frame.drop(columns=[c for c in ("eval_identity", "loss_domains") if c in frame])
        else:
            frame["eval_identity"] = identity
            frame["run_id"] = frame["run_id"] + f"-{identity[-4:]}"
        frames.append(frame)
    pd.concat(frames).to_csv(path, index=False)
    return read_results(path)


def test_runs_scored_differently_are_never_fitted_together(tmp_path):
    table = _scored(tmp_path / "r.csv", [("a" * 64, 1), ("b" * 64, 2)])
    parts, notes = split_conditions(table)
    assert [p.condition for p in parts] == ["cpu/3f2a1b9c0d/e:" + "a" * 12, "cpu/3f2a1b9c0d/e:" + "b" * 12]
    assert all(len(p.runs) == len(table.runs) // 2 for p in parts) and "each is analysed on its own" in notes[0]
    # identities that share their first 12 digits keep their whole value apart
    twins = _scored(tmp_path / "t.csv", [("c" * 12 + "1" * 52, 1), ("c" * 12 + "2" * 52, 2)])
    assert len({c for c in twins.conditions}) == 2 and all(len(c.split("e:")[1]) == 64 for c in twins.conditions)
    # one evaluation for every run tells no runs apart: the label leaves it out
    assert _scored(tmp_path / "one.csv", [("d" * 64, 1)]).conditions == ["cpu/3f2a1b9c0d"]
    # a table written before eval_identity existed still loads, as one condition
    old = _scored(tmp_path / "o.csv", [(None, 1)])
    assert old.conditions == ["cpu/3f2a1b9c0d"]


def test_tokens_are_decoded_with_the_tokenizer_the_manifests_name(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from synthscale.files import sha256_file

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(["the whale and the sea"] * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    manifest = {"tokenizer": {"spec": f"hf:{path}", "sha256": sha256_file(path)}}
    ids = tokenizer.encode(" whale").ids
    texts, how = token_texts({"test": manifest, "train": manifest}, ids)
    assert "".join(texts[i] for i in ids) == " whale" and how["tokenizer"] == f"hf:{path}"
    # a tokenizer file changed since: ids only, and why
    stale = {"tokenizer": {"spec": f"hf:{path}", "sha256": "0" * 64}}
    texts, how = token_texts({"test": stale}, ids)
    assert texts == {} and "its file has changed since the tokens were made" in how["why_not"]


def test_error_bars_of_an_interval_that_leaves_out_the_point_fit(results_csv):
    """With few resamples a percentile interval need not contain the point fit: the figure still draws."""
    from analysis.core.settings import AnalysisConfig
    from analysis.pipeline import run_analysis
    from analysis.report.finding_plots import irreducible_figure
    from tests.analysis.helpers import COARSE

    (table,), _ = split_conditions(read_results(results_csv))
    analysis = run_analysis(table, AnalysisConfig(laws=("joint",), bootstrap=0, holdout=False, fit=COARSE))
    row = next(r for r in analysis.irreducible if r["identified"])
    row["interval"] = [row["E"] * 1.1, row["E"] * 1.2]
    figure = irreducible_figure(analysis)
    assert figure.png[:8] == b"\x89PNG\r\n\x1a\n"
