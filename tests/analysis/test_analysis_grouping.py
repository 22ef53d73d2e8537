"""Grouping by the table's fields: labels, conditions, families, seed repeats and their spread."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from analysis.cli import main
from analysis.core.settings import AnalysisConfig
from analysis.data.grouping import group_rows, seed_spread, split_conditions
from analysis.data.labels import UNLABELLED
from analysis.data.table import read_results
from analysis.multi import run_all
from tests.analysis.helpers import COARSE, GENERATOR, TABLE_COLUMNS
from tests.analysis.simulate import TrueLaw, simulate_table

NATURAL = TrueLaw(A=400.0, B=1200.0, E=1.80, alpha=0.34, beta=0.28)
HQ = TrueLaw(A=400.0, B=900.0, E=1.75, alpha=0.34, beta=0.27)
BUDGETS = [1e9, 2e9, 4e9, 8e9, 1.6e10]


def _row(run_id, mixture, fraction, family, generator, loss, seed=0, backend="cpu", recipe="h1", N=1e8, D=1e9):
    return {"run_id": run_id, "model": "m", "N": N, "D": D, "mixture": mixture, "synthetic_fraction": fraction,
            "family": family, "generator": generator, "backend": backend, "recipe_hash": recipe, "seed": seed,
            "loss": loss, "eval_identity": "e1", "loss_domains": "web", "loss.web": loss + 0.1}


def _csv(tmp_path, rows, name="r.csv"):
    path = tmp_path / name
    frame = pd.DataFrame(rows)
    frame.to_csv(path, index=False)
    return path


def test_the_new_columns_are_kept(tmp_path):
    path = _csv(tmp_path, [_row("a", "natural", 0.0, "", "", 3.0), _row("b", "hq-33pct", 0.33, "hq", GENERATOR, 2.9)])
    assert list(pd.read_csv(path).columns) == TABLE_COLUMNS + ["loss.web"]
    table = read_results(path)
    runs = table.runs.set_index("run_id")
    assert runs.loc["b", ["family", "generator", "backend", "recipe_hash"]].tolist() == ["hq", GENERATOR, "cpu", "h1"]
    assert runs.loc["b", "seed"] == 0 and runs.loc["a", "family"] == "" and runs.loc["a", "generator"] == ""
    assert table.conditions == ["cpu/h1"] and table.recorded == ("family", "generator", "backend", "recipe_hash", "seed",
                                                                  "eval_identity")
    assert table.notes == [] and table.label("hq-33pct") == ("hq", GENERATOR)
    assert table.summary()["mixtures"]["hq-33pct"]["family"] == "hq"


def test_a_table_without_labels_degrades_and_says_so(tmp_path):
    """Names that look like families are never parsed: without the column, one family 'unlabelled'."""
    rows = [{"mixture": m, "N": 1e8, "D": 1e9, "loss": 3.0, "synthetic_fraction": f}
            for m, f in (("natural", 0.0), ("hq_33", 0.33), ("qa-33pct", 0.33))]
    table = read_results(_csv(tmp_path, rows))
    assert {table.label(m) for m in ("hq_33", "qa-33pct")} == {(UNLABELLED, UNLABELLED)}
    assert table.label("natural") == ("", "")
    assert table.conditions == [""]
    notes = " ".join(table.notes)
    for expected in ("no family column", "never parsed", "no generator column", "no backend and no recipe_hash column",
                     "no seed column"):
        assert expected in notes, (expected, notes)
    (group,) = group_rows(table)
    assert (group["family"], [m["mixture"] for m in group["mixtures"]]) == (UNLABELLED, ["natural", "hq_33", "qa-33pct"])


def test_one_name_for_two_generators_is_kept_apart(tmp_path):
    rows = [_row("a", "hq-33pct", 0.33, "hq", "smol@1", 3.0), _row("b", "hq-33pct", 0.33, "hq", "random@2", 3.2)]
    table = read_results(_csv(tmp_path, rows))
    assert table.mixtures == ["hq-33pct [random@2]", "hq-33pct [smol@1]"]
    assert "used by 2 different (family, generator) pairs" in " ".join(table.notes)


def test_bad_seed_is_named(tmp_path):
    from analysis.data.table import TableError

    with pytest.raises(TableError, match="seed 'one' is not an integer"):
        read_results(_csv(tmp_path, [_row("a", "natural", 0.0, "", "", 3.0, seed="one")]))


def test_repeats_are_per_condition_and_seeds_are_named(tmp_path):
    rows = [_row("s0", "natural", 0.0, "", "", 3.00, seed=0), _row("s1", "natural", 0.0, "", "", 3.04, seed=1),
            _row("s2", "natural", 0.0, "", "", 3.02, seed=2),
            _row("same", "hq", 0.5, "hq", "g", 2.90, seed=0), _row("same2", "hq", 0.5, "hq", "g", 2.91, seed=0),
            _row("other-cond", "natural", 0.0, "", "", 3.5, seed=0, recipe="h2")]
    table = read_results(_csv(tmp_path, rows))
    kinds = {(r["condition"], r["mixture"]): (r["kind"], r["seeds"]) for r in table.repeated}
    assert kinds == {("cpu/h1", "natural"): ("seed repeats", [0, 1, 2]),
                     ("cpu/h1", "hq"): ("repeats (some with the same seed)", [0, 0])}
    parts, notes = split_conditions(table)
    assert [p.condition for p in parts] == ["cpu/h1", "cpu/h2"] and "analysed on its own" in notes[0]
    (pooled,), notes = split_conditions(table, pool=True)
    assert pooled.condition == "pooled: cpu/h1 + cpu/h2" and "--pool-conditions" in notes[0]
    assert {r["mixture"]: len(r["run_ids"]) for r in pooled.repeated} == {"natural": 4, "hq": 2}


def test_seed_spread_beside_mixture_differences_by_hand(tmp_path):
    rows = [_row(f"n{s}", "natural", 0.0, "", "", loss, seed=s) for s, loss in enumerate((3.00, 3.04, 3.02))]
    rows += [_row("h", "hq-33pct", 0.33, "hq", "g", 2.90), _row("q", "qa-33pct", 0.33, "qa", "g", 3.01)]
    rows += [_row("far", "natural", 0.0, "", "", 2.5, D=2e9)]  # another (N, D): not in the comparison
    (part,), _ = split_conditions(read_results(_csv(tmp_path, rows)))
    spread = seed_spread(part, "natural")
    (config,) = spread["configurations"]
    assert config["n"] == 3 and config["std"] == pytest.approx(np.std([3.0, 3.04, 3.02], ddof=1))
    assert config["range"] == pytest.approx(0.04) and config["seeds"] == [0, 1, 2]
    (effect,) = spread["effects"]
    assert effect["mixture_mean_loss"] == pytest.approx({"natural": 3.02, "hq-33pct": 2.90, "qa-33pct": 3.01})
    assert effect["vs_baseline"] == pytest.approx({"hq-33pct": -0.12, "qa-33pct": -0.01})
    diff = effect["mixture_differences"]
    assert diff["pairs"] == 3 and diff["min"] == pytest.approx(0.01) and diff["max"] == pytest.approx(0.12)
    assert diff["beyond_seed_range"] == 2  # 0.12 and 0.11 exceed the 0.04 range; 0.01 does not


def _two_conditions(tmp_path):
    """cpu/h1 and bridge/h2: the same mixtures, different laws (a different recipe)."""
    fractions = {"natural": 0.0, "hq-33pct": 0.33}
    labels = {"natural": ("", ""), "hq-33pct": ("hq", GENERATOR)}
    sizes = np.geomspace(1e7, 1e9, 4)
    cpu = simulate_table({"natural": NATURAL, "hq-33pct": HQ}, sizes, BUDGETS, noise=0.001, seed=1,
                         fractions=fractions, labels=labels, condition=("cpu", "h1"))
    slower = {m: TrueLaw(law.A, law.B, law.E + 0.4, law.alpha, law.beta) for m, law in (("natural", NATURAL), ("hq-33pct", HQ))}
    bridge = simulate_table(slower, sizes, BUDGETS, noise=0.001, seed=2, fractions=fractions, labels=labels,
                            condition=("bridge", "h2"))
    bridge["run_id"] += "-bridge"
    return _csv(tmp_path, pd.concat([cpu, bridge]).to_dict("records"))


def test_conditions_are_analysed_apart_unless_pooled(tmp_path):
    table = read_results(_two_conditions(tmp_path))
    config = AnalysisConfig(laws=("joint",), bootstrap=0, holdout=False, fit=COARSE)
    aset = run_all(table, config)
    assert [a.condition for a in aset.analyses] == ["bridge/h2", "cpu/h1"]
    joint = {(f["condition"], f["mixture"]): f for f in aset.to_json()["fits"]["joint"]}
    assert set(joint) == {(c, m) for c in ("bridge/h2", "cpu/h1") for m in ("natural", "hq-33pct")}
    assert joint[("cpu/h1", "natural")]["params"]["E"] == pytest.approx(1.80, rel=0.03)
    assert joint[("bridge/h2", "natural")]["params"]["E"] == pytest.approx(2.20, rel=0.03)
    assert all(f["points"] == 20 for f in joint.values())
    assert "[cpu/h1]" in aset.analyses[1].fits["joint"][0].unit.label
    ratios = {(r["condition"], r["family"], r["generator"]) for r in aset.to_json()["best_ratio"]}
    assert ratios == {("cpu/h1", "hq", GENERATOR), ("bridge/h2", "hq", GENERATOR)}
    pooled = run_all(table, config, pool_conditions=True)
    (fit,) = [f for f in pooled.to_json()["fits"]["joint"] if f["mixture"] == "natural"]
    assert fit["points"] == 40 and fit["condition"] == "pooled: bridge/h2 + cpu/h1"
    assert any("--pool-conditions" in n for n in pooled.all_notes())


def test_report_says_what_was_grouped_with_what(tmp_path):
    path = _two_conditions(tmp_path)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", str(path), "-o", str(out), "--law", "joint", "--grid", "coarse",
                                       "--bootstrap", "0", "--no-domains"])
    assert result.exit_code == 0, result.output
    fits = json.loads((out / "fits.json").read_text())
    groups = {(g["condition"], g["family"]): [(m["mixture"], m["runs"]) for m in g["mixtures"]] for g in fits["groups"]}
    assert groups == {(c, "hq"): [("natural", 20), ("hq-33pct", 20)] for c in ("bridge/h2", "cpu/h1")}
    assert [c["condition"] for c in fits["conditions"]] == ["bridge/h2", "cpu/h1"]
    assert fits["pooled_conditions"] is False
    markdown = (out / "report.md").read_text()
    assert "## Input" in markdown
    assert f"[cpu/h1] hq/{GENERATOR}: natural, hq-33pct" in markdown and "cpu/h1: 40 runs, 2 mixtures" in markdown
    figures = sorted(p.stem for p in (out / "figures").glob("*.png"))
    assert "cpu_h1_irreducible_loss" in figures and "bridge_h2_irreducible_loss" in figures
