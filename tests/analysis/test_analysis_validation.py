"""Holdout validation (RMAE as defined) and extrapolation."""

import numpy as np
import pandas as pd
import pytest

from analysis.core.laws import LAWS
from analysis.core.settings import COARSE_GRID, FitSettings
from analysis.data.table import read_results
from analysis.fitting.bootstrap import bootstrap_fits
from analysis.fitting.fit import fit_unit
from analysis.fitting.holdout import holdout_summary, holdout_validation, split_largest
from analysis.fitting.units import build_units
from analysis.results.extrapolation import extrapolate
from tests.analysis.simulate import TrueLaw

TRUE = TrueLaw(A=400.0, B=1200.0, E=1.7, alpha=0.34, beta=0.28)
BUDGETS = [1e9, 2e9, 4e9, 8e9, 1.6e10]


def _write(tmp_path, rows):
    path = tmp_path / "r.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return read_results(path)


def test_holdout_rmae_by_hand(tmp_path):
    """Exact points below the largest D; the held-out runs 2% above and 1% below the law."""
    N = 1e8
    rows = [{"run_id": f"d{d:g}", "mixture": "m", "N": N, "D": d, "loss": float(TRUE.loss(N, d))} for d in BUDGETS[:-1]]
    truth = float(TRUE.loss(N, BUDGETS[-1]))
    rows += [{"run_id": "held-a", "mixture": "m", "N": N, "D": BUDGETS[-1], "loss": truth * 1.02},
             {"run_id": "held-b", "mixture": "m", "N": N, "D": BUDGETS[-1], "loss": truth * 0.99}]
    units, _ = build_units(_write(tmp_path, rows), LAWS["data"])
    (holdout,) = holdout_validation(units, "D")
    assert holdout.usable and holdout.held.sum() == 2
    assert holdout.fit.unit.n_points == 4 and BUDGETS[-1] not in holdout.fit.unit.D
    # By hand, from the parameters of the fit made without the held-out runs.
    p = holdout.fit.params()
    predicted = p["B"] / BUDGETS[-1] ** p["beta"] + p["E"]
    observed = np.array([truth * 1.02, truth * 0.99])
    by_hand = np.mean(np.abs(predicted - observed) / observed)
    record = holdout.to_dict()
    assert record["rmae"] == pytest.approx(by_hand, rel=1e-9)
    # The fit on exact points recovers the law, so the error is the perturbation's.
    assert record["rmae"] == pytest.approx((0.02 / 1.02 + 0.01 / 0.99) / 2, rel=1e-3)
    assert [r["run_id"] for r in record["predictions"]] == ["held-a", "held-b"]


def test_holdout_summary_averages_over_held_out_runs(tmp_path):
    rows = []
    for mixture, bump in (("a", 1.03), ("b", 1.0)):
        for d in BUDGETS:
            loss = float(TRUE.loss(1e8, d)) * (bump if d == BUDGETS[-1] else 1.0)
            rows.append({"mixture": mixture, "N": 1e8, "D": d, "loss": loss})
    holdouts = holdout_validation(build_units(_write(tmp_path, rows), LAWS["data"])[0], "D")
    errors = np.concatenate([h.relative_errors for h in holdouts])
    summary = holdout_summary(holdouts)
    assert summary["held_out_runs"] == 2 and summary["rmae"] == pytest.approx(errors.mean())
    assert summary["rmae"] == pytest.approx((0.03 / 1.03) / 2, rel=1e-3)


def test_holdout_skipped_when_the_rest_cannot_be_fitted(tmp_path):
    rows = [{"mixture": "m", "N": 1e8, "D": d, "loss": float(TRUE.loss(1e8, d))} for d in BUDGETS[:4]]
    (unit,), _ = build_units(_write(tmp_path, rows), LAWS["data"])
    holdout = split_largest(unit, "D")
    assert not holdout.usable and "3 usable run(s)" in holdout.skipped and "D=8B" in holdout.skipped
    assert holdout_summary([holdout])["rmae"] is None


def test_extrapolation_matches_the_fitted_formula(tmp_path):
    sizes, budgets = np.geomspace(1e7, 1e9, 4), np.geomspace(1e8, 1e10, 4)
    rows = [{"mixture": "m", "N": n, "D": d, "loss": float(TRUE.loss(n, d))} for n in sizes for d in budgets]
    (unit,), _ = build_units(_write(tmp_path, rows), LAWS["joint"])
    fit = fit_unit(unit, FitSettings(grid=COARSE_GRID))
    samples = bootstrap_fits([fit], 20, seed=0)[0]
    out = extrapolate(fit, samples, [4e11], [8e12], 0.9)
    assert len(out) == 1 and out[0]["beyond_data"]
    p = fit.params()
    assert out[0]["predicted_loss"] == pytest.approx(p["A"] / 4e11 ** p["alpha"] + p["B"] / 8e12 ** p["beta"] + p["E"])
    assert out[0]["predicted_loss"] == pytest.approx(float(TRUE.loss(4e11, 8e12)), rel=0.01)
    lo, hi = out[0]["interval"]
    assert lo <= hi
