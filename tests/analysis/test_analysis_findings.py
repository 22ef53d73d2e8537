"""Speed-up, crossings and best ratio against analytic values."""

import numpy as np
import pytest

from analysis.core.laws import LAWS
from analysis.core.settings import AnalysisConfig
from analysis.core.settings import COARSE_GRID, FitSettings
from analysis.data.grouping import ratio_families
from analysis.data.grouping import split_conditions
from analysis.data.table import read_results
from analysis.pipeline import run_analysis
from analysis.results.findings import crossings, speedup
from tests.analysis.simulate import TrueLaw, simulate_table

COARSE = FitSettings(grid=COARSE_GRID)


def _data_theta(B, E, beta):
    return np.array([np.log(B), np.log(E), beta])


def test_speedup_formula():
    law = LAWS["data"]
    mix, base = _data_theta(900.0, 2.0, 0.3), _data_theta(1200.0, 2.0, 0.3)
    D = np.array([1e9, 1e10])
    assert np.allclose(speedup(law, mix, base, D), (1200 / 900) ** (1 / 0.3))
    # Different floors: the general closed form; below the baseline's floor: unreachable.
    mix = _data_theta(900.0, 1.9, 0.3)
    loss_mix = 900 / D**0.3 + 1.9
    expected = (1200 / (loss_mix - 2.0)) ** (1 / 0.3) / D
    expected[loss_mix <= 2.0] = np.inf
    assert np.allclose(speedup(law, mix, base, D), expected)
    assert speedup(law, mix, base, np.array([1e16]))[0] == np.inf
    stack = np.array([mix, mix, np.full(3, np.nan)])
    values = speedup(law, stack, np.array([base, base, base]), D)
    assert values.shape == (3, 2) and np.isnan(values[2]).all() and np.allclose(values[0], expected)


def test_crossing_where_the_curves_meet():
    law = LAWS["data"]
    mix, base = _data_theta(600.0, 2.1, 0.3), _data_theta(1200.0, 2.0, 0.3)
    expected = ((1200 - 600) / (2.1 - 2.0)) ** (1 / 0.3)
    (found,) = crossings(law, mix, base, (1e8, 1e14))
    assert found == pytest.approx(expected, rel=1e-8)
    assert crossings(law, mix, base, (1e8, expected / 2)) == []


def test_speedup_on_simulated_curves_equals_the_analytic_value(tmp_path):
    """Noise-free runs; baseline and mixture share E and beta, so speed-up = (B_b / B_m)^(1/beta)."""
    laws = {"natural": TrueLaw(400.0, 1200.0, 1.8, 0.34, 0.28), "hq-33pct": TrueLaw(400.0, 900.0, 1.8, 0.34, 0.28)}
    path = tmp_path / "r.csv"
    simulate_table(laws, [1e8, 3e8], np.geomspace(1e9, 3e10, 6), noise=0.0, fractions={"natural": 0.0, "hq-33pct": 0.33},
                   labels={"natural": ("", ""), "hq-33pct": ("hq", "g@1")}, condition=("cpu", "h1")).to_csv(path, index=False)
    (table,), _ = split_conditions(read_results(path))
    analysis = run_analysis(table, AnalysisConfig(laws=("data",), bootstrap=20, holdout=False))
    assert analysis.baseline == "natural"
    analytic = (1200 / 900) ** (1 / 0.28)
    assert len(analysis.speedups) == 2  # one per N
    for entry in analysis.speedups:
        for at in entry["at_budgets"]:
            assert at["speedup"] == pytest.approx(analytic, rel=2e-3)
            assert at["interval"][0] <= analytic * 1.002 and at["interval"][1] >= analytic * 0.998
        assert entry["crossing"]["crossings_D"] == []
        assert entry["identified"] and (entry["family"], entry["generator"], entry["condition"]) == ("hq", "g@1", "cpu/h1")


def test_ratio_families_come_from_the_columns_not_the_names():
    """`data_prep grid` names (hq-33pct) and misleading names alike: only the fields count."""
    smol, rand = "SmolLM2-135M-Instruct@1a2b3c4d5e6f", "tiny-random@0f0f"
    labels = {
        "natural": (0.0, "", ""),
        "hq-33pct": (0.33, "hq", smol), "hq-67pct": (0.67, "hq", smol),
        "qa-33pct": (0.33, "qa", smol),
        "qa_50": (0.5, "hq", smol),  # named like qa, labelled hq: it is hq
        "hq-33pct-random": (0.33, "hq", rand),  # the same recipe from another generator
        "both": (0.5, "hq+qa", smol),
    }
    families = ratio_families(labels)
    assert set(families) == {("hq", smol), ("qa", smol), ("hq", rand), ("hq+qa", smol)}
    assert families[("hq", smol)] == {"natural": 0.0, "hq-33pct": 0.33, "qa_50": 0.5, "hq-67pct": 0.67}
    assert families[("qa", smol)] == {"natural": 0.0, "qa-33pct": 0.33}
    assert families[("hq", rand)] == {"natural": 0.0, "hq-33pct-random": 0.33}
    assert list(families[("hq", smol)]) == ["natural", "hq-33pct", "qa_50", "hq-67pct"]  # by ratio
    # Without a natural mixture, a family of one ratio is no axis.
    assert ratio_families({"a": (0.5, "hq", smol)}) == {}


def test_best_ratio_matches_the_true_laws(tmp_path):
    """Synthetic helps at small budgets (lower B) but has a higher floor: the best ratio moves with D."""
    laws = {
        "natural": TrueLaw(400.0, 1500.0, 1.80, 0.34, 0.30),
        "mix_33": TrueLaw(400.0, 1100.0, 1.84, 0.34, 0.30),
        "mix_67": TrueLaw(400.0, 800.0, 1.95, 0.34, 0.30),
    }
    fractions = {"natural": 0.0, "mix_33": 0.33, "mix_67": 0.67}
    labels = {"natural": ("", ""), "mix_33": ("textbook", "g@1"), "mix_67": ("textbook", "g@1")}
    sizes, budgets = [3e7, 1e8, 3e8], list(np.geomspace(1e8, 1e11, 5))
    path = tmp_path / "r.csv"
    simulate_table(laws, sizes, budgets, noise=0.0, fractions=fractions, labels=labels).to_csv(path, index=False)
    config = AnalysisConfig(laws=("joint",), bootstrap=10, holdout=False, fit=COARSE, extrapolate_D=(1e13,))
    analysis = run_analysis(read_results(path), config)
    assert {(r["family"], r["generator"]) for r in analysis.best_ratios} == {("textbook", "g@1")}
    assert all(r["identified"] for r in analysis.best_ratios)
    checked = 0
    for r in analysis.best_ratios:
        truth = {m: float(law.loss(r["N"], r["D"])) for m, law in laws.items()}
        ordered = sorted(truth.values())
        if ordered[1] - ordered[0] > 0.01 * ordered[0]:
            assert r["best_mixture"] == min(truth, key=truth.get), r
            checked += 1
        assert [c["ratio"] for c in r["curve"]] == [0.0, 0.33, 0.67]
    assert checked >= 10
    best_at = {r["D"]: r["best_ratio"] for r in analysis.best_ratios if r["N"] == 3e8}
    assert best_at[1e8] == 0.67 and best_at[1e13] == 0.33  # 1e13: beyond the data, from the fits
    assert [e["mixture"] for e in analysis.irreducible] == ["mix_33", "mix_67", "natural"]
    assert analysis.irreducible[2]["E"] == pytest.approx(1.80, rel=0.02)
