"""The objective: Huber on log loss with an analytic gradient, for every law and for shared exponents."""

import numpy as np
import pytest
from scipy.optimize import approx_fprime

from analysis.core.laws import LAWS, HuberObjective, natural_params, predict_loss
from analysis.fitting.fit import join_theta, split_theta


def _points(n=40, seed=0):
    rng = np.random.default_rng(seed)
    N = rng.uniform(1e7, 1e9, n)
    D = rng.uniform(1e8, 1e11, n)
    loss = (400 / N**0.34 + 1200 / D**0.28 + 1.7) * np.exp(rng.normal(0, 0.01, n))
    return N, D, loss


@pytest.mark.parametrize("law", ["data", "model", "joint"])
def test_gradient_matches_finite_differences(law):
    N, D, loss = _points()
    objective = HuberObjective(LAWS[law], np.log(N), np.log(D), np.log(loss))
    rng = np.random.default_rng(1)
    for _ in range(5):
        theta = rng.normal(3.0, 2.0, objective.n_params)
        theta[-len(LAWS[law].exponent_names):] = rng.uniform(0.1, 0.8, len(LAWS[law].exponent_names))
        value, grad = objective(theta)
        numeric = approx_fprime(theta, lambda t: objective(t)[0], 1e-7)
        assert np.allclose(grad, numeric, rtol=1e-4, atol=1e-6 * max(1.0, abs(value)))


def test_grouped_gradient_matches_finite_differences():
    N, D, loss = _points(60)
    groups = np.arange(60) % 3
    objective = HuberObjective(LAWS["joint"], np.log(N), np.log(D), np.log(loss), groups=groups, n_groups=3)
    theta = np.array([6.0, 7.0, 0.5, 5.5, 6.5, 0.4, 6.2, 7.2, 0.6, 0.33, 0.29])
    value, grad = objective(theta)
    numeric = approx_fprime(theta, lambda t: objective(t)[0], 1e-7)
    assert np.allclose(grad, numeric, rtol=1e-4, atol=1e-6 * max(1.0, value))


def test_grouped_objective_is_the_sum_of_the_mixtures_objectives():
    N, D, loss = _points(60)
    groups = np.arange(60) % 3
    law = LAWS["joint"]
    shared = HuberObjective(law, np.log(N), np.log(D), np.log(loss), groups=groups, n_groups=3)
    thetas = [np.array([6.0, 7.0, 0.5, 0.33, 0.29]), np.array([5.5, 6.5, 0.4, 0.33, 0.29]),
              np.array([6.2, 7.2, 0.6, 0.33, 0.29])]
    joined = join_theta(law, thetas, np.array([0.33, 0.29]))
    total = sum(
        HuberObjective(law, np.log(N[groups == g]), np.log(D[groups == g]), np.log(loss[groups == g])).huber_sum(t)
        for g, t in enumerate(thetas)
    )
    assert shared.huber_sum(joined) == pytest.approx(total, rel=1e-12)
    for g, t in enumerate(split_theta(law, 3, joined)):
        assert np.array_equal(t, thetas[g])


def test_huber_value_by_hand():
    """Residuals below and above delta: 0.5 r^2 and delta (|r| - delta / 2)."""
    law = LAWS["data"]
    D = np.array([1e9, 2e9])
    theta = np.array([np.log(1000.0), np.log(2.0), 0.3])  # b, e, beta
    predicted = 1000.0 / D**0.3 + 2.0
    observed = predicted * np.exp([-0.0005, 0.004])  # log residuals r = +0.0005 and -0.004
    objective = HuberObjective(law, np.zeros(2), np.log(D), np.log(observed))
    expected = 0.5 * 0.0005**2 + 1e-3 * (0.004 - 0.5e-3)
    assert objective.huber_sum(theta) == pytest.approx(expected, rel=1e-9)
    assert objective(theta)[0] == pytest.approx(expected / (2 * 1e-3**2), rel=1e-9)


def test_predictions_follow_the_formulas():
    theta = np.log([300.0, 1500.0, 1.7]).tolist() + [0.3, 0.25]
    N, D = np.array([1e8, 1e9]), np.array([1e10, 1e11])
    expected = 300 / N**0.3 + 1500 / D**0.25 + 1.7
    assert np.allclose(predict_loss(LAWS["joint"], theta, N, D), expected)
    stack = np.array([theta, theta])
    assert predict_loss(LAWS["joint"], stack, N, D).shape == (2, 2)
    assert natural_params(LAWS["joint"], np.array(theta)) == pytest.approx(
        {"A": 300.0, "B": 1500.0, "E": 1.7, "alpha": 0.3, "beta": 0.25})
    data_theta = np.array([np.log(1500.0), np.log(1.7), 0.25])
    assert np.allclose(predict_loss(LAWS["data"], data_theta, D=D), 1500 / D**0.25 + 1.7)
    with pytest.raises(ValueError, match="needs N"):
        predict_loss(LAWS["model"], data_theta, D=D)
