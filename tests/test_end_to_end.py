"""The study's stages end to end on real engines, each through its own command and files:
generated-style corpora -> `data_prep tokenize` -> `data_prep grid` -> `recipes sweep` (CPU,
two jobs) -> `recipes results` -> `analysis report`. The mixtures' families come from what the
documents say made them, so the report has one best-ratio curve per (family, generator), with
the natural baseline on each, whatever the blends are called."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.recipes.helpers import TEXT_WORDS, make_corpus

GENERATOR = "tiny-instruct@0123456789ab"


def _invoke(main, args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _as_generated(path: Path, recipe: str) -> Path:
    """Give a corpus the fields `generation run` writes on every document."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**r, "recipe": recipe, "generator": GENERATOR, "source_id": r["id"]}) + "\n"
                            for r in records))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from analysis.cli import main as analysis
    from data_prep.cli import main as data_prep
    from recipes.cli import main as recipes

    root = tmp_path_factory.mktemp("e2e")
    corpora = {
        "web": make_corpus(root / "web.jsonl", 1500, seed=1),
        "hq": _as_generated(make_corpus(root / "hq.jsonl", 800, seed=2), "hq"),
        "qa": _as_generated(make_corpus(root / "qa.jsonl", 800, seed=3), "qa"),
        "heldout": make_corpus(root / "heldout.jsonl", 300, seed=1),
    }
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator([" ".join(TEXT_WORDS)] * 50, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.save(str(root / "tokenizer.json"))
    for name, path in corpora.items():
        _invoke(data_prep, ["tokenize", path, "--output", root / name, "--tokenizer", f"hf:{root / 'tokenizer.json'}",
                            "--no-progress"])
    # blends named "variant-a" etc. would do as well: nothing downstream reads the names
    _invoke(data_prep, ["grid", "--data", f"web={root / 'web'}", "--data", f"hq={root / 'hq'}",
                        "--data", f"qa={root / 'qa'}", "--natural", "web", "--synthetic", "hq", "--synthetic", "qa",
                        "--tokens", "25600", "--seq-length", "64", "--ratios", "0,50", "--max-epochs", "4",
                        "--output-dir", root / "blends"])
    blends = sorted((root / "blends").glob("*.yaml"))
    sweep = ["sweep", "--sizes", "tiny-2xs,tiny-xs,tiny-s", "--tokens", "12800,19200,25600",
             "--seq-length", "64", "--global-batch-size", "4", "--micro-batch-size", "4", "--peak-lr", "3e-3",
             "--eval", f"heldout={root / 'heldout'}", "--eval-max-tokens", "4096", "--output", root / "runs",
             "--jobs", "2"]
    for blend in blends:
        sweep += ["--blends", blend]
    _invoke(recipes, sweep)
    _invoke(recipes, ["results", root / "runs", "--output", root / "results.csv"])
    _invoke(analysis, ["report", root / "results.csv", "--output", root / "report", "--law", "joint",
                       "--grid", "coarse", "--bootstrap", "20", "--no-domains", "--label", "test study",
                       "--skip-unfittable"])
    return root


def test_results_table_carries_what_each_mixture_is(study):
    with open(study / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 27  # 3 blends x 3 sizes x 3 budgets
    by_mixture = {r["mixture"]: (r["family"], r["generator"], float(r["synthetic_fraction"])) for r in rows}
    assert by_mixture == {"web": ("", "", 0.0), "hq-50pct": ("hq", GENERATOR, 0.5), "qa-50pct": ("qa", GENERATOR, 0.5)}
    assert {r["backend"] for r in rows} == {"megatron"} and len({r["recipe_hash"] for r in rows}) == 1


def test_report_has_one_best_ratio_curve_per_family(study):
    fits = json.loads((study / "report" / "fits.json").read_text())
    groups = [g for g in fits["groups"] if g["family"] is not None]
    assert sorted((g["family"], g["generator"]) for g in groups) == [("hq", GENERATOR), ("qa", GENERATOR)]
    for group in groups:  # the natural baseline sits on every family's ratio axis
        assert sorted(m["mixture"] for m in group["mixtures"]) == sorted(["web", f"{group['family']}-50pct"])
    curves = {(e["family"], e["generator"]) for e in fits["best_ratio"]}
    assert curves == {("hq", GENERATOR), ("qa", GENERATOR)}
    summary = (study / "report" / "summary.txt").read_text().splitlines()
    assert 1 <= len(summary) <= 5 and "test study" in summary[0]


def _breaks_a_rule(fit: dict, smallest_loss: float) -> list[str]:
    """Identification rules (fits.json `identification_rules`) checked here from the fit's own numbers
    and the results table: E below 0.001 x the smallest observed loss; a bootstrap interval of A, B,
    alpha or beta wider than a decade (hi/lo > 10) or reaching zero."""
    numbers = fit.get("not_identified") or {}
    params = fit.get("params") or numbers.get("optimum")
    intervals = fit.get("intervals") or numbers.get("intervals") or {}
    broken = ["E to zero"] if params["E"] < 1e-3 * smallest_loss else []
    for name in ("A", "B", "alpha", "beta"):
        if name in intervals and (intervals[name][0] <= 0 or intervals[name][1] / intervals[name][0] > 10):
            broken.append(f"interval of {name}")
    return broken


def test_best_ratio_is_identified_exactly_when_the_numbers_allow_it(study):
    """Whether each best-ratio curve is reported is decided from the runs: a member's joint fit that
    breaks an identification rule (checked here from its numbers and results.csv) leaves the curve
    out, with that member's reason; otherwise the curve is there, over both mixtures."""
    with open(study / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    fits = json.loads((study / "report" / "fits.json").read_text())
    joint = {f["mixture"]: f for f in fits["fits"]["joint"]}
    assert set(joint) == {"web", "hq-50pct", "qa-50pct"} and all(f["converged"] for f in joint.values())
    broken = {m: _breaks_a_rule(f, min(float(r["loss"]) for r in rows if r["mixture"] == m))
              for m, f in joint.items()}
    for mixture, fit in joint.items():
        if broken[mixture]:
            assert fit["identified"] is False, (mixture, broken[mixture])
    for entry in fits["best_ratio"]:
        members = entry["mixtures"]
        assert sorted(members) == sorted(["web", f"{entry['family']}-50pct"])
        if all(joint[m]["identified"] for m in members):
            assert entry["identified"] is True, entry
            assert {c["mixture"] for c in entry["curve"]} == set(members)
        else:  # the reason of each member that is not identified, and no number
            assert entry["identified"] is False and "best_ratio" not in entry and "curve" not in entry
            for m in members:
                if not joint[m]["identified"]:
                    assert f"{m!r} joint fit" in entry["reason"]
                    assert all(r["reason"] in entry["reason"] for r in joint[m]["reasons"])
