"""Findings that say what they rest on (issue 17, part 2): the runs, the law, measured or extrapolated."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from analysis.cli import main
from tests.analysis.helpers import GENERATOR
from tests.analysis.simulate import TrueLaw, simulate_table

LAWS = {"natural": TrueLaw(A=400.0, B=1200.0, E=1.8, alpha=0.34, beta=0.28),
        "hq-33pct": TrueLaw(A=400.0, B=900.0, E=1.75, alpha=0.34, beta=0.27)}
BUDGETS = list(np.geomspace(1e9, 3.2e10, 11))


def _report(tmp_path, laws=LAWS, extra=()):
    """Three sizes; the largest trained up to 8B tokens only, the others up to 32B."""
    frame = simulate_table(laws, [1e8, 2e8, 4e8], BUDGETS, noise=0.0002, seed=3,
                           fractions={"natural": 0.0, "hq-33pct": 0.33},
                           labels={"natural": ("", ""), "hq-33pct": ("hq", GENERATOR)}, condition=("cpu", "h1"))
    frame = frame[(frame["N"] < 4e8) | (frame["D"] <= 8.1e9)]
    path = tmp_path / "r.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", str(path), "-o", str(out), "--law", "data", "--law", "joint",
                                       "--grid", "coarse", "--bootstrap", "30", "--no-domains", *extra])
    assert result.exit_code == 0, result.output
    return json.loads((out / "fits.json").read_text()), (out / "summary.txt").read_text()


def test_the_summary_speedup_is_at_each_sizes_own_largest_run(tmp_path):
    fits, summary = _report(tmp_path)
    big = next(s for s in fits["speedup"] if s["N"] == 4e8)
    assert big["identified"] and big["largest_run_D"] == pytest.approx(8e9)
    beyond = {round(a["D"] / 1e9, 1): a["beyond_data"] for a in big["at_budgets"]}
    assert beyond[32.0] is True  # the table's largest budget is beyond this size's runs
    (line,) = [x for x in summary.splitlines() if x.startswith("speed-up")]
    assert "at N=400M, D=8B (data law; 7+7 runs; " in line, line
    assert "D=32B" not in line
    assert big["rests_on"]["mixture"]["runs"] == 7 and big["rests_on"]["mixture"]["D"] == pytest.approx([1e9, 8e9])


def test_a_speedup_is_measured_only_where_the_baseline_ran_the_budget_it_needs(tmp_path):
    """At N=100M both ran 1B..32B: a speed-up of ~1.3 at 4B needs ~5B of the baseline (run), at 32B ~42B (not)."""
    fits, summary = _report(tmp_path)
    small = next(s for s in fits["speedup"] if s["N"] == 1e8)
    at = {round(a["D"] / 1e9, 1): a for a in small["at_budgets"]}
    assert 1.2 < at[4.0]["speedup"] < 1.5 and at[4.0]["baseline_budget"] < 3.2e10
    assert at[4.0]["beyond_data"] is False
    assert at[32.0]["baseline_budget"] > 3.2e10 and at[32.0]["beyond_data"] is True
    (line,) = [x for x in summary.splitlines() if x.startswith("speed-up")]
    assert line.endswith("extrapolated)")  # at 400M, 8B: the baseline would need more than its 8B


def test_every_finding_names_its_runs_law_and_whether_it_is_measured(tmp_path):
    fits, summary = _report(tmp_path, extra=("--extrapolate-D", "1T"))
    for r in fits["best_ratio"]:
        assert r["identified"] and r["law"] == "joint" and r["rests_on"]["runs"] == 58
        assert r["beyond_data"] == (r["N"] == 4e8 and r["D"] > 8.1e9 or r["D"] == 1e12)
    for e in fits["irreducible_loss"]:
        assert e["law"] == "joint" and e["beyond_data"] is True and e["rests_on"]["runs"] == 29
    for e in fits["extrapolation"]:
        assert e["rests_on"]["runs"] >= 4 and e["beyond_data"] is True
    (line,) = [x for x in summary.splitlines() if x.startswith("best ratio: ")]
    assert "(joint law, 58 runs, N 100M–400M, D 1B–32B; extrapolated)" in line
