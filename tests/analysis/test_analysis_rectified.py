"""The rectified law L(D) = B / (D_l + D^beta) + E: objective, recovery, D_l = 0, the comparison with the data law."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.optimize import approx_fprime

from analysis.cli import main
from analysis.core.identify import interval_problems, point_problems
from analysis.core.laws import LAWS, LOG_SCALE_BOUNDS, HuberObjective, natural_params, predict_loss
from analysis.core.rectified_law import RectifiedObjective
from analysis.core.settings import AnalysisConfig
from analysis.data.grouping import split_conditions
from analysis.data.table import read_results
from analysis.fitting.units import build_units
from analysis.pipeline import run_analysis
from analysis.results.law_comparison import comparison_summary
from tests.analysis.helpers import COARSE
from tests.analysis.simulate import RectifiedCurve, simulate_curves

RECT = LAWS["rectified"]
BUDGETS = np.geomspace(1e6, 1e11, 14)
# Known D_l, beta and E: a large pre-learned size (D_l ~ D^beta at 1e8 tokens), a small one, none.
CURVES = {
    ("large", 1e8): RectifiedCurve(B=5000.0, D_l=2000.0, E=1.8, beta=0.4),
    ("small", 1e8): RectifiedCurve(B=800.0, D_l=50.0, E=2.2, beta=0.35),
    ("none", 1e8): RectifiedCurve(B=300.0, D_l=0.0, E=1.9, beta=0.3),
}


def _analysis(tmp_path, curves, budgets=BUDGETS, noise=0.002, seed=1, **config):
    path = tmp_path / "curves.csv"
    simulate_curves(curves, budgets, noise=noise, seed=seed).to_csv(path, index=False)
    (table,), _ = split_conditions(read_results(path))
    settings = {"laws": ("rectified",), "bootstrap": 200, "holdout": False, "fit": COARSE, **config}
    return run_analysis(table, AnalysisConfig(**settings))


def test_objective_gradient_and_prediction_match_the_formula():
    rng = np.random.default_rng(0)
    D = np.geomspace(1e6, 1e11, 12)
    loss = CURVES[("small", 1e8)].loss(D) * np.exp(rng.normal(0, 0.01, D.size))
    objective = RectifiedObjective(RECT, np.zeros(D.size), np.log(D), np.log(loss), delta=0.5)
    for theta in ([7.0, 4.0, 0.8, 0.35], [5.0, -3.0, 0.2, 0.6], [9.0, 12.0, -1.0, 0.2]):
        theta = np.array(theta)
        value, grad = objective(theta)
        numeric = approx_fprime(theta, lambda t: objective(t)[0], 1e-7)
        assert np.allclose(grad, numeric, rtol=1e-4, atol=1e-9), (theta, grad, numeric)
    theta = np.log([800.0, 50.0, 2.2]).tolist() + [0.35]
    theta = np.array([theta[0], theta[1], theta[2], theta[3]])
    assert np.allclose(predict_loss(RECT, theta, D=D), 800.0 / (50.0 + D**0.35) + 2.2)
    assert natural_params(RECT, theta) == pytest.approx({"B": 800.0, "D_l": 50.0, "E": 2.2, "beta": 0.35})
    # D_l -> 0 is the data law: the same Huber objective as HuberObjective's at (b, e, beta).
    data = HuberObjective(LAWS["data"], np.zeros(D.size), np.log(D), np.log(loss))
    rect = RectifiedObjective(RECT, np.zeros(D.size), np.log(D), np.log(loss))
    b, e, beta = 6.0, 0.7, 0.3
    assert rect.huber_sum(np.array([b, LOG_SCALE_BOUNDS[0], e, beta])) == pytest.approx(
        data.huber_sum(np.array([b, e, beta])), rel=1e-12)
    with pytest.raises(ValueError, match="rectified law: use analysis.rectified.RectifiedObjective"):
        HuberObjective(RECT, np.zeros(3), np.zeros(3), np.zeros(3))


def test_parameters_are_recovered_within_bootstrap_intervals(tmp_path):
    analysis = _analysis(tmp_path, CURVES)
    fits = {f.unit.mixtures[0]: f for f in analysis.fits["rectified"]}
    for mixture in ("large", "small"):
        fitted, true = fits[mixture], CURVES[(mixture, 1e8)]
        assert fitted.identified, (mixture, fitted.reason())
        intervals = fitted.samples.param_intervals(mixture, 0.95)
        for name in ("B", "D_l", "E", "beta"):
            lo, hi = intervals[name]
            assert lo <= getattr(true, name) <= hi, (mixture, name, getattr(true, name), lo, hi)
        record = fitted.to_dict(0.95)
        assert record["pre_learned"]["reduces_to_data_law"] is False
        assert record["params"]["D_l"] == pytest.approx(true.D_l, rel=0.5)
        # D_l in tokens: the budget whose D^beta equals D_l
        p = record["params"]
        assert record["pre_learned"]["D_l_tokens"] == pytest.approx(p["D_l"] ** (1 / p["beta"]))
    # D_l = 0 planted: identified as the data law, not flagged for D_l on (or near) its lower bound
    none = fits["none"]
    assert none.identified, none.reason()
    record = none.to_dict(0.95)
    assert record["pre_learned"]["reduces_to_data_law"] is True
    assert record["params"]["D_l"] < record["pre_learned"]["D_l_zero_below"]
    intervals = record["intervals"]
    for name in ("E", "beta"):
        lo, hi = intervals[name]
        assert lo <= getattr(CURVES[("none", 1e8)], name) <= hi, (name, lo, hi)


def test_d_l_rules_zero_is_a_result_a_runaway_is_not():
    mixtures, min_loss = ("m",), {"m": 2.0}
    zero = point_problems(RECT, np.array([5.0, LOG_SCALE_BOUNDS[0], 0.6, 0.3]), mixtures, min_loss)
    assert zero == []
    runaway = point_problems(RECT, np.array([5.0, LOG_SCALE_BOUNDS[1], 0.6, 0.3]), mixtures, min_loss)
    assert [(p.rule, p.parameter) for p in runaway] == [("bound", "D_l")]
    assert "D_l runs away (the loss is flat over these budgets)" in runaway[0].reason
    # D_l as D_l / D_min^beta: [0, 0.4], D_l below D_min^beta, bounded
    ok = {"m": {"B": [100.0, 300.0], "D_l": [1e-9, 0.4], "E": [1.8, 2.0], "beta": [0.3, 0.35]}}
    assert interval_problems(ok, 100, 0, False, zero_ok={"D_l": 1e-3}, loss_scale={"m": 2.0}) == []
    # without the zero reading, the same interval spans more than a decade
    assert [p.parameter for p in interval_problems(ok, 100, 0, False, loss_scale={"m": 2.0})] == ["D_l"]
    # reaching 0 is no pass by itself: up to 5 x D_min^beta, the runs cannot tell whether D_l matters
    (loose,) = interval_problems({"m": {"D_l": [1e-9, 5.0]}}, 100, 0, False, zero_ok={"D_l": 1e-3})
    assert "the bootstrap interval of D_l / D_min^beta reaches 0 but reaches above 1" in loose.reason
    wide = {"m": {"D_l": [5.0, 900.0]}}
    (problem,) = interval_problems(wide, 100, 0, False, zero_ok={"D_l": 1e-3})
    assert "the bootstrap interval of D_l / D_min^beta spans a factor 180 (hi/lo)" in problem.reason
    open_ended = {"m": {"D_l": [1e-9, np.inf]}}
    (problem,) = interval_problems(open_ended, 100, 0, False, zero_ok={"D_l": 1e-3})
    assert "has no upper end" in problem.reason


def test_a_rectified_fit_needs_four_budgets(tmp_path):
    path = tmp_path / "few.csv"
    simulate_curves({("m", 1e8): CURVES[("small", 1e8)]}, [1e8, 1e9, 1e10] * 2, seed=2).to_csv(path, index=False)
    (table,), _ = split_conditions(read_results(path))
    units, problems = build_units(table, RECT)
    assert units == []
    (message,) = problems
    assert "mixture 'm' has 3 distinct D value(s) (100M, 1B, 10B), at least 4 are needed" in message


def test_the_comparison_uses_the_same_points_and_the_holdout_tells_the_laws_apart(tmp_path):
    curves = {("large", 1e8): CURVES[("large", 1e8)], ("none", 1e8): CURVES[("none", 1e8)]}
    analysis = _analysis(tmp_path, curves, bootstrap=0, holdout=True)
    assert "data" not in analysis.fits  # fitted for the comparison only
    rows = {r["mixture"]: r for r in analysis.law_comparison}
    for row in rows.values():
        rect, data = row["rectified"], row["data"]
        assert rect["converged"] and data["converged"]
        # nested laws on the same runs: the rectified optimum can only be as good or better
        assert rect["huber_objective"] <= data["huber_objective"] * (1 + 1e-6)
        assert rect["holdout_runs"] == data["holdout_runs"] == 1
    large = rows["large"]
    assert large["reduces_to_data_law"] is False
    assert large["rectified"]["rmsd_log_loss"] < 0.5 * large["data"]["rmsd_log_loss"]
    assert large["rectified"]["holdout_rmae"] < large["data"]["holdout_rmae"]
    assert rows["none"]["reduces_to_data_law"] is True
    assert rows["none"]["rectified"]["rmsd_log_loss"] == pytest.approx(rows["none"]["data"]["rmsd_log_loss"], rel=0.02)
    summary = comparison_summary(analysis.law_comparison)
    assert summary["fits_compared"] == 2 and summary["holdouts_compared"] == 2
    assert summary["rectified"]["huber_objective"] == pytest.approx(
        sum(r["rectified"]["huber_objective"] for r in rows.values()))


def test_cli_fit_and_report_with_the_rectified_law(tmp_path):
    path = tmp_path / "curves.csv"
    curves = {("large", 1e8): CURVES[("large", 1e8)], ("none", 1e8): CURVES[("none", 1e8)]}
    simulate_curves(curves, BUDGETS, noise=0.002, seed=1).to_csv(path, index=False)
    runner = CliRunner()
    result = runner.invoke(main, ["fit", str(path), "--law", "rectified", "--bootstrap", "40", "--grid", "coarse",
                                  "--no-holdout"])
    assert result.exit_code == 0, result.output
    assert "large at N=100M, rectified law: L(D) = B / (D_l + D^beta) + E, 14 runs" in result.output
    assert "D_l = 0: the rectified law reduces to the data law B / D^beta + E on these runs" in result.output
    assert "rectified vs data law, large N=100M: Huber" in result.output
    assert "plateau (absolute, tol 0.01) large N=100M: D_p" in result.output

    out = tmp_path / "report"
    result = runner.invoke(main, ["report", str(path), "--output", str(out), "--law", "rectified", "--bootstrap", "40",
                                  "--grid", "coarse", "--baseline", "none", "--no-domains", "--plateau-tol", "0.02"])
    assert result.exit_code == 0, result.output
    document = json.loads((out / "fits.json").read_text())
    (large,) = [f for f in document["fits"]["rectified"] if f["mixture"] == "large"]
    assert set(large["params"]) == {"B", "D_l", "E", "beta"} and large["pre_learned"]["reduces_to_data_law"] is False
    assert {r["mixture"] for r in document["law_comparison"]} == {"large", "none"}
    assert {(p["mixture"], p["criterion"]) for p in document["plateau"]} == {
        (m, c) for m in ("large", "none") for c in ("absolute", "relative")}
    assert all(p["tolerance"] == 0.02 for p in document["plateau"] if p["criterion"] == "absolute")
    assert document["settings"]["plateau_tol_abs"] == 0.02
    assert "D_p is reported only when" in document["rectified_rules"]["plateau"]
    markdown = (out / "report.md").read_text()
    assert "## Rectified law: L(D) = B / (D_l + D^beta) + E" in markdown
    assert "## Plateau: where doubling the data stops paying" in markdown
    assert "| none | 100M | 14 |" in markdown and "0 (data law) [0, " in markdown
    assert (out / "figures" / "rectified_large.png").stat().st_size > 1000
    assert "holdout RMAE" in markdown and "rectified | " in markdown  # the holdout table lists the law
