"""The rectified data law of Lin et al. (2024): its objective, and D_l in units of D_min^beta.

    L(D) = B / (D_l + D^beta) + E      (at each N, per mixture)

D_l is the "pre-learned data size" of "Selecting Large Language Model to Fine-tune via
Rectified Scaling Law" (Lin et al., 2024), in units of D^beta; `D_l_tokens` = D_l^(1/beta) is
the budget whose D^beta equals it. It is fitted like every law here (core/laws.py, fitting/fit.py): in log
space, theta = (b, l, e, beta) with B = exp(b), D_l = exp(l), E = exp(e),

    log L_hat = log-sum-exp(b - log-sum-exp(l, beta log D),  e),

by the Huber loss (delta 1e-3) of log L_hat - log L, L-BFGS-B with analytic gradients from the
starting grid (core/settings.GRID's b, e, beta and l), warm-started bootstrap resamples (fitting/bootstrap.py).

D_l = 0 is the data law B / D^beta + E. In log space that is l -> -inf: the optimiser stops
wherever D_l no longer matters (often far inside its bound). So "D_l = 0" is judged by its
effect, not by the bound: D_l is *zero* when the ratio D_l / D_min^beta < DL_ZERO_RATIO (D_min:
the smallest budget of the fit), i.e. it changes the predicted reducible loss by less than 0.1%
at every budget run. That is a result ("reduces to the data law"), not a failure. The ratio is
dimensionless, so bootstrap resamples (each with its own beta) are compared through it
(`log_dl_ratio`), never through D_l itself; identify.py holds the rules.
D_l in tokens, D_l^(1/beta), is computed in log space and may overflow to inf (D_l on its bound).
"""

from __future__ import annotations

import numpy as np

from analysis.core.identify import DL_ZERO_RATIO
from analysis.core.laws import EXPONENT_BOUNDS, HUBER_DELTA, LOG_SCALE_BOUNDS, Law


class RectifiedObjective:
    """Huber loss of log loss for one mixture's rectified law, with its analytic gradient.

    theta = [b, l, e, beta]. Same interface as laws.HuberObjective (value and gradient scaled by
    1 / (n delta^2) for the optimiser, `huber_sum` unscaled); no shared exponents.
    """

    def __init__(self, law: Law, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray,
                 groups: np.ndarray | None = None, n_groups: int = 1, delta: float = HUBER_DELTA) -> None:
        if not law.pre_learned:
            raise ValueError(f"RectifiedObjective fits the rectified law, got the {law.name} law")
        if n_groups != 1:
            raise ValueError(f"rectified law: exponents are not shared across mixtures, got {n_groups} groups")
        self.law = law
        self.log_d = np.ascontiguousarray(log_d, dtype=float)
        self.log_loss = np.ascontiguousarray(log_loss, dtype=float)
        self.delta = float(delta)
        self.n_groups = 1
        self.n_points = self.log_loss.size
        self.scale = 1.0 / (self.n_points * self.delta**2)
        self.n_params = 4

    def bounds(self) -> list[tuple[float, float]]:
        return [LOG_SCALE_BOUNDS] * 3 + [EXPONENT_BOUNDS]

    def _parts(self, theta):
        b, l, e, beta = (float(v) for v in theta)
        u = beta * self.log_d
        m = np.maximum(u, l)
        s = m + np.log(np.exp(u - m) + np.exp(l - m))  # log(D_l + D^beta)
        t = b - s  # log of the reducible term
        m2 = np.maximum(t, e)
        log_pred = m2 + np.log(np.exp(t - m2) + np.exp(e - m2))
        return l, e, s, t, log_pred

    def log_predict(self, theta: np.ndarray) -> np.ndarray:
        return self._parts(theta)[-1]

    def huber_sum(self, theta: np.ndarray) -> float:
        r = self.log_predict(theta) - self.log_loss
        c = np.clip(r, -self.delta, self.delta)
        return float(c @ r - 0.5 * (c @ c))

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        l, e, s, t, log_pred = self._parts(theta)
        r = log_pred - self.log_loss
        c = np.clip(r, -self.delta, self.delta)
        value = (c @ r - 0.5 * (c @ c)) * self.scale
        c *= self.scale
        w = np.exp(t - log_pred)  # d log L_hat / d t; d log L_hat / d e = 1 - w
        p = np.exp(l - s)  # D_l / (D_l + D^beta): d s / d l; d s / d beta = (1 - p) log D
        cw = c * w
        g_b = cw.sum()
        g_l = -(cw @ p)
        g_e = c.sum() - g_b
        g_beta = -(cw @ ((1.0 - p) * self.log_d))
        return value, np.array([g_b, g_l, g_e, g_beta])


def log_dl_ratio(law: Law, thetas: np.ndarray, d_min: float) -> np.ndarray | float:
    """log(D_l / D_min^beta) of a theta (p,) or a stack (R, p): each row in units of its own beta."""
    thetas = np.asarray(thetas, float)
    l, beta = thetas[..., law.param_names.index("l")], thetas[..., law.param_names.index("beta")]
    out = l - beta * np.log(float(d_min))
    return float(out) if np.ndim(out) == 0 else out


def zero_threshold(law: Law, theta: np.ndarray, d_min: float) -> float:
    """D_l below this is zero (module docstring): DL_ZERO_RATIO x D_min^beta, at theta's beta."""
    beta = float(theta[law.param_names.index("beta")])
    return DL_ZERO_RATIO * float(d_min) ** beta
