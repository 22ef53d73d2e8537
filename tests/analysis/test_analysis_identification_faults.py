"""Identification checks that can fail (issue 17, part 1): each fault the issue names, reproduced.

Fits and bootstrap resamples are built directly where the fault is in the rule (the numbers are
chosen to sit on the wrong side of the old rule), and through `run_analysis` where it is in the
wiring.
"""

import json
import math

import numpy as np
from click.testing import CliRunner

from analysis.cli import main
from analysis.core.identify import interval_problems
from analysis.core.laws import LAWS
from analysis.core.settings import AnalysisConfig
from analysis.data.grouping import split_conditions
from analysis.data.table import read_results
from analysis.fitting.bootstrap import BootstrapSamples
from analysis.fitting.fit import FitResult
from analysis.fitting.units import FitUnit
from analysis.pipeline import run_analysis
from analysis.results.model import Fitted
from analysis.results.plateau import plateau_trend
from analysis.results.rectified import pre_learned
from tests.analysis.helpers import COARSE
from tests.analysis.simulate import RectifiedCurve, TrueLaw, simulate_curves, simulate_table

RECT, DATA = LAWS["rectified"], LAWS["data"]


def _unit(law, D, loss, N=1e8, mixture="m"):
    D = np.asarray(D, float)
    return FitUnit(law, (mixture,), ("N", N), np.full(D.size, N), D, np.asarray(loss, float),
                   np.array([f"r{i}" for i in range(D.size)]), np.zeros(D.size, np.intp))


def _fitted(law, unit, theta, resamples):
    fit = FitResult(unit, True, "converged", np.asarray(theta, float), 0.0, 1, 1)
    return Fitted(fit, BootstrapSamples(unit, np.asarray(resamples, float), 0))


def test_a_d_l_interval_from_zero_to_the_bound_is_a_problem():
    """The issue's reproduction: [0, e^300] passed because its high end is finite."""
    problems = interval_problems({"m": {"D_l": [0.0, math.exp(300)]}}, 100, 0, False, {"D_l": 1.0})
    assert [(p.rule, p.parameter) for p in problems] == [("interval", "D_l")]


def test_d_l_is_judged_in_each_resamples_own_units():
    """The point fit's beta (7) made the zero threshold 1e39; every resample (beta 0.3) puts D_l far
    above its own D_min^beta, over ninety decades: no zero, no identified D_l."""
    D = np.geomspace(1e6, 1e9, 8)
    unit = _unit(RECT, D, 3.0 + 100.0 / D**0.3)
    theta = [np.log(100.0), np.log(1e30), np.log(3.0), 7.0]  # b, l, e, beta
    rng = np.random.default_rng(0)
    l_values = rng.uniform(np.log(6e4), np.log(9e101), 100)
    resamples = np.column_stack([np.full(100, np.log(100.0)), l_values, np.full(100, np.log(3.0)), np.full(100, 0.3)])
    fitted = _fitted(RECT, unit, theta, resamples)
    ident = fitted.identify(0.95)
    assert not ident.identified
    assert [p.parameter for p in ident.problems] == ["D_l"]


def test_e_needs_an_absolute_width_against_the_loss_scale():
    """E in [0.31, 3.0] on a loss of about 3 spans under a decade, but is no irreducible loss."""
    D = np.geomspace(1e8, 1e11, 8)
    unit = _unit(DATA, D, 3.0 + 1200.0 / D**0.28)
    theta = [np.log(1200.0), np.log(1.0), 0.28]  # b, e, beta
    E = np.geomspace(0.31, 3.0, 100)
    resamples = np.column_stack([np.full(100, np.log(1200.0)), np.log(E), np.full(100, 0.28)])
    ident = _fitted(DATA, unit, theta, resamples).identify(0.95)
    assert not ident.identified
    (problem,) = ident.problems
    assert (problem.rule, problem.parameter) == ("interval", "E")
    assert "20% of the smallest observed loss" in problem.reason


def test_the_plateau_trend_needs_the_minimum_share_of_resamples_and_counts_no_plateau():
    """2 of 100 resamples have a plateau at every size: no slope interval, no verdict."""
    sizes, planted = (1e9, 3e9, 8e9), (3e10, 1e10, 3e9)
    fits, entries = {}, []
    for N, D_p in zip(sizes, planted):
        beta = 0.3
        theta = [np.log(0.01 * D_p**beta / (1 - 2**-beta)), -50.0, 0.0, beta]  # D_l = 0: drop = 0.01 at D_p
        never = [np.log(0.01 * 1e30**beta / (1 - 2**-beta)), -50.0, 0.0, beta]  # D_p = 1e30: beyond the search
        unit = _unit(RECT, np.geomspace(1e7, 1e11, 8), np.ones(8), N=N)
        fits[N] = _fitted(RECT, unit, theta, [theta] * 2 + [never] * 98)
        entries.append({"mixture": "m", "criterion": "absolute", "tolerance": 0.01, "N": N, "identified": True,
                        "D_p": D_p, "smallest_D": 1e7, "largest_D": 1e11, "short": ""})
    trend = plateau_trend(entries, fits, 0.95)
    assert trend["slope_interval"] is None
    assert trend["identified"] is False and "larger models" not in trend.get("direction", "")
    assert trend["resamples_no_plateau"] == 98 and trend["resamples_used"] == 2


def _simulated(tmp_path, n_sizes=2):
    law = TrueLaw(A=400.0, B=1200.0, E=1.7, alpha=0.34, beta=0.28)
    frame = simulate_table({"m": law}, [1e8, 3e8][:n_sizes], np.geomspace(1e8, 1e11, 8), noise=0.002, seed=2)
    path = tmp_path / "r.csv"
    frame.to_csv(path, index=False)
    return path


def test_one_resample_is_no_bootstrap_check(tmp_path):
    (table,), _ = split_conditions(read_results(_simulated(tmp_path)))
    analysis = run_analysis(table, AnalysisConfig(laws=("data",), bootstrap=1, holdout=False, fit=COARSE))
    for fitted in analysis.fits["data"]:
        assert fitted.samples is not None and fitted.samples.n_resamples == 1
        assert fitted.identification.bootstrap_checked is False
        assert fitted.to_dict(0.95)["bootstrap_checked"] is False
    assert any("not bootstrap-checked" in n for n in analysis.notes), analysis.notes
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", str(_simulated(tmp_path)), "-o", str(out), "--law", "data",
                                       "--grid", "coarse", "--bootstrap", "1", "--no-domains"])
    assert result.exit_code == 0, result.output
    assert "not bootstrap-checked" in (out / "report.md").read_text()


def test_d_l_in_tokens_overflows_to_infinity_instead_of_crashing():
    """D_l on its upper bound (e^300) with beta < 0.42: D_l^(1/beta) is beyond a float."""
    D = np.geomspace(1e6, 1e9, 8)
    unit = _unit(RECT, D, np.full(8, 3.0))
    fit = FitResult(unit, True, "converged", np.array([np.log(100.0), 300.0, np.log(3.0), 0.3]), 0.0, 1, 1)
    info = pre_learned(fit)
    assert info["D_l_tokens"] == math.inf and info["reduces_to_data_law"] is False


def test_a_rectified_fit_that_is_not_identified_states_nothing_about_d_l(tmp_path):
    """A pure power law (no floor): E is driven to zero; 'reduces to the data law' is no finding then."""
    curves = {("m", 1e8): RectifiedCurve(B=300.0, D_l=0.0, E=0.0, beta=0.3)}
    path = tmp_path / "curves.csv"
    simulate_curves(curves, np.geomspace(1e6, 1e11, 10), noise=0.002, seed=1).to_csv(path, index=False)
    (table,), _ = split_conditions(read_results(path))
    analysis = run_analysis(table, AnalysisConfig(laws=("rectified",), bootstrap=20, holdout=False, fit=COARSE))
    (fitted,) = analysis.fits["rectified"]
    assert fitted.fit.converged and not fitted.identified
    record = fitted.to_dict(0.95)
    assert "pre_learned" not in record
    (row,) = analysis.law_comparison
    assert row["reduces_to_data_law"] is None
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", str(path), "-o", str(out), "--law", "rectified", "--grid", "coarse",
                                       "--bootstrap", "20", "--no-domains", "--baseline", "m"])
    assert result.exit_code == 0, result.output
    document = json.loads((out / "fits.json").read_text())
    assert all("pre_learned" not in f for f in document["fits"]["rectified"])
    assert "D_l = 0" not in result.output
