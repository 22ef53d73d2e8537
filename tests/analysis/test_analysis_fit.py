"""Fits: parameter recovery within bootstrap intervals, too few points, non-convergence."""

import numpy as np
import pandas as pd
import pytest

from analysis.core.laws import LAWS
from analysis.core.settings import FitSettings
from analysis.core.statistics import percentile_interval
from analysis.data.table import read_results
from analysis.fitting.bootstrap import bootstrap_fits, resample_indices
from analysis.fitting.fit import fit_unit, fit_units, shared_starts, starting_grid
from analysis.fitting.units import build_units
from tests.analysis.simulate import TrueLaw, simulate_table

TRUE = TrueLaw(A=400.0, B=1200.0, E=1.7, alpha=0.34, beta=0.28)


def _table(tmp_path, laws, sizes, budgets, noise, seed=3, name="r.csv"):
    path = tmp_path / name
    simulate_table(laws, sizes, budgets, noise=noise, seed=seed).to_csv(path, index=False)
    return read_results(path)


def test_grid_is_the_one_of_hoffmann_et_al():
    grid = starting_grid(LAWS["joint"])
    assert grid.shape == (6 * 6 * 5 * 5 * 5, 5)
    assert sorted(set(grid[:, 0])) == [0, 5, 10, 15, 20, 25]
    assert sorted(set(grid[:, 2])) == [-1, -0.5, 0, 0.5, 1]
    assert sorted(set(grid[:, 3])) == [0, 0.5, 1, 1.5, 2]
    assert starting_grid(LAWS["data"]).shape == (150, 3)


def test_joint_parameters_recovered_within_bootstrap_intervals(tmp_path):
    """Full starting grid, 0.3% noise: every true parameter lies in its 95% interval."""
    table = _table(tmp_path, {"m": TRUE}, np.geomspace(1e7, 1e10, 6), np.geomspace(1e8, 1e11, 6), noise=0.003)
    (unit,), problems = build_units(table, LAWS["joint"])
    assert problems == []
    fit = fit_unit(unit)
    assert fit.converged and fit.n_starts == 4500
    samples = bootstrap_fits([fit], n_resamples=100, seed=0)[0]
    assert samples.n_failed < 10
    intervals = samples.param_intervals("m", 0.95)
    for name, value in {"A": TRUE.A, "B": TRUE.B, "E": TRUE.E, "alpha": TRUE.alpha, "beta": TRUE.beta}.items():
        lo, hi = intervals[name]
        assert lo <= value <= hi, (name, value, lo, hi, fit.params())
    assert fit.params()["E"] == pytest.approx(TRUE.E, rel=0.05)
    assert fit.params()["beta"] == pytest.approx(TRUE.beta, rel=0.1)


def test_data_law_recovered_at_fixed_N(tmp_path):
    N = 1e8
    table = _table(tmp_path, {"m": TRUE}, [N], np.geomspace(1e8, 1e11, 12), noise=0.002)
    (unit,), _ = build_units(table, LAWS["data"])
    fit = fit_unit(unit)
    floor = TRUE.E + TRUE.A / N**TRUE.alpha  # what E means at fixed N
    intervals = bootstrap_fits([fit], 200, seed=1)[0].param_intervals("m", 0.95)
    for name, value in {"B": TRUE.B, "E": floor, "beta": TRUE.beta}.items():
        assert intervals[name][0] <= value <= intervals[name][1], (name, value, intervals[name])


def test_bootstrap_is_seeded_and_independent_of_workers(tmp_path):
    table = _table(tmp_path, {"m": TRUE}, [1e8], np.geomspace(1e8, 1e11, 8), noise=0.003)
    (unit,), _ = build_units(table, LAWS["data"])
    fit = fit_unit(unit)
    a = bootstrap_fits([fit], 20, seed=5)[0].thetas
    b = bootstrap_fits([fit], 20, seed=5)[0].thetas
    c = bootstrap_fits([fit], 20, seed=6)[0].thetas
    assert np.array_equal(a, b, equal_nan=True) and not np.array_equal(a, c, equal_nan=True)
    from analysis.core.settings import COARSE_GRID
    from analysis.fitting.workers import worker_pool

    joint_table = _table(tmp_path, {"m": TRUE}, np.geomspace(1e7, 1e9, 4), np.geomspace(1e8, 1e10, 4), noise=0.003,
                         name="joint.csv")
    (joint,), _ = build_units(joint_table, LAWS["joint"])
    coarse = FitSettings(grid=COARSE_GRID)  # 243 starts: split into two tasks on the pool
    serial = fit_unit(joint, coarse)
    with worker_pool(2) as pool:
        d = bootstrap_fits([fit], 20, seed=5, pool=pool, chunk=7)[0].thetas
        parallel = fit_unit(joint, coarse, pool=pool)
    assert np.allclose(a, d, equal_nan=True)
    assert serial.converged and np.allclose(serial.theta, parallel.theta)
    assert serial.objective == pytest.approx(parallel.objective)


def test_resamples_stay_within_each_mixture(tmp_path):
    table = _table(tmp_path, {"m1": TRUE, "m2": TRUE}, [1e8], [1e9, 2e9, 4e9, 8e9], noise=0.01)
    units, _ = build_units(table, LAWS["data"], shared=True)
    indices = resample_indices(units[0], 50, seed=0)
    for stratum in units[0].strata():
        drawn = indices[:, : stratum.size] if stratum[0] == 0 else indices[:, -stratum.size:]
        assert np.isin(drawn, stratum).all()


def test_shared_exponents(tmp_path):
    laws = {"a": TRUE, "b": TrueLaw(A=400.0, B=800.0, E=1.9, alpha=0.34, beta=0.28)}
    table = _table(tmp_path, laws, [1e8], np.geomspace(1e8, 1e11, 8), noise=0.001)
    own = {f.unit.mixtures[0]: f for f in fit_units(build_units(table, LAWS["data"])[0])}
    (unit,), _ = build_units(table, LAWS["data"], shared=True)
    assert unit.mixtures == ("a", "b") and unit.n_free == 2 * 2 + 1
    fit = fit_unit(unit, starts=shared_starts(unit, own))
    assert fit.converged
    assert fit.params("a")["beta"] == fit.params("b")["beta"] == pytest.approx(0.28, abs=0.02)
    assert fit.params("b")["B"] < fit.params("a")["B"]
    assert fit.to_dict()["params"].keys() == {"a", "b"}


def test_too_few_points_names_the_mixture_and_what_is_missing(tmp_path):
    rows = simulate_table({"natural": TRUE}, [1e8], [1e9, 2e9, 4e9, 8e9, 1.6e10], noise=0.001)
    rows = pd.concat([rows, simulate_table({"hq_33": TRUE}, [1e8], [1e9, 2e9, 4e9], noise=0.001)])
    path = tmp_path / "r.csv"
    rows.to_csv(path, index=False)
    units, problems = build_units(read_results(path), LAWS["data"])
    assert [u.mixtures for u in units] == [("natural",)]
    assert len(problems) == 1
    assert "hq_33 at N=100M" in problems[0]
    assert "3 usable run(s), a fit needs at least 4 (3 free parameters + 1): 1 more run(s) needed" in problems[0]
    _, problems = build_units(read_results(path), LAWS["joint"])
    assert any("'natural' has 1 distinct N value(s) (100M), at least 3 are needed" in p for p in problems)


def test_a_loss_that_rises_with_D_converges_but_is_not_identified(tmp_path):
    """The optimiser succeeds, on the exponent's bound: converged, not identified, and why."""
    D = np.geomspace(1e9, 1e11, 6)
    frame = pd.DataFrame({"mixture": "up", "N": 1e8, "D": D, "loss": 2.0 + 0.1 * np.log(D / 1e9)})
    path = tmp_path / "r.csv"
    frame.to_csv(path, index=False)
    (unit,), _ = build_units(read_results(path), LAWS["data"])
    fit = fit_unit(unit)
    assert fit.converged
    assert [(p.rule, p.parameter) for p in fit.problems if p.parameter == "beta"] == [("bound", "beta")]
    assert "exponent beta on its lower bound 0: the loss does not fall with D" in "; ".join(p.reason for p in fit.problems)


def test_a_fit_that_does_not_converge_has_no_numbers(tmp_path):
    table = _table(tmp_path, {"m": TRUE}, [1e8], np.geomspace(1e8, 1e11, 8), noise=0.003)
    (unit,), _ = build_units(table, LAWS["data"])
    fit = fit_unit(unit, FitSettings(maxiter=1, polish=1))  # one iteration: L-BFGS-B stops unsuccessful
    assert not fit.converged and fit.message.startswith("did not converge")
    assert fit.params() is None and "params" not in fit.to_dict()
    with pytest.raises(ValueError, match="did not converge"):
        fit.predict(D=[1e12])
    assert bootstrap_fits([fit], 10) == {}


def test_percentile_interval_handles_infinities_and_nans():
    assert percentile_interval(np.array([1.0, 2.0, 3.0, np.nan]), 0.5) == pytest.approx([1.5, 2.5])
    lo, hi = percentile_interval(np.array([1.0, 2.0, np.inf, np.inf]), 0.5)
    assert lo == pytest.approx(1.75) and hi == np.inf
    assert percentile_interval(np.array([np.nan, 1.0]), 0.9) is None


def test_settings_validate_themselves():
    with pytest.raises(ValueError, match="delta"):
        FitSettings(delta=0)
    with pytest.raises(ValueError, match="grid: unknown parameter 'gamma'"):
        FitSettings(grid={"gamma": (1.0,)})
