"""The scaling laws, written the way they are fitted.

As in Hoffmann et al. (2022) and the replication by Besiroglu et al. (2024), every law is
parameterised in log space,

    log L_hat(N, D) = log-sum-exp(a - alpha log N,  b - beta log D,  e),
    A = exp(a), B = exp(b), E = exp(e),

and fitted by minimising the Huber loss (delta 1e-3) between log L_hat and log L.
The data law (fixed N) keeps only the D term and e, the model law (fixed D) only the N term
and e. `HuberObjective` evaluates that loss and its analytic gradient for all points at once
(numpy), optionally for several mixtures ("groups") that share their exponents.

The rectified data law of Lin et al. (2024), L(D) = B / (D_l + D^beta) + E, has a fourth
parameter, the pre-learned data size D_l = exp(l) (in units of D^beta); its objective is
core/rectified_law.py's `RectifiedObjective`, on the same Huber loss of log loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HUBER_DELTA = 1e-3
EXPONENT_BOUNDS = (0.0, 10.0)
# Bounds of the log-scale parameters a, b, e: far from any curve with a floor (E = exp(-50) is
# 2e-22), there so that a runaway optimum stops on a bound, where `identify` reports it.
LOG_SCALE_BOUNDS = (-50.0, 300.0)


@dataclass(frozen=True)
class Law:
    """One functional form: which terms it has and what varies along its curves."""

    name: str
    formula: str
    uses_n: bool
    uses_d: bool
    pre_learned: bool = False  # the rectified law: B / (D_l + D^beta), D_l = exp(l)

    @property
    def group_names(self) -> tuple[str, ...]:
        """Log-space parameters owned by each mixture (a, b, l, e)."""
        return ((("a",) if self.uses_n else ()) + (("b",) if self.uses_d else ())
                + (("l",) if self.pre_learned else ()) + ("e",))

    @property
    def exponent_names(self) -> tuple[str, ...]:
        return (("alpha",) if self.uses_n else ()) + (("beta",) if self.uses_d else ())

    @property
    def param_names(self) -> tuple[str, ...]:
        """Layout of a single-mixture parameter vector theta."""
        return self.group_names + self.exponent_names

    @property
    def natural_names(self) -> tuple[str, ...]:
        """Names of the reported parameters: A, B, D_l, E, alpha, beta (those the law has)."""
        return tuple(NATURAL_NAMES.get(n, n) for n in self.param_names)

    @property
    def n_free(self) -> int:
        return len(self.param_names)

    @property
    def min_distinct(self) -> int:
        """Distinct values of the varying column a one-mixture fit needs (one per parameter along it)."""
        return 4 if self.pre_learned else 3

    @property
    def varying(self) -> tuple[str, ...]:
        """Columns that vary along the fitted curve."""
        return (("N",) if self.uses_n else ()) + (("D",) if self.uses_d else ())

    @property
    def fixed(self) -> str | None:
        """Column held fixed within one fit: N for the data law, D for the model law."""
        if self.uses_n and self.uses_d:
            return None
        return "N" if self.uses_d else "D"


NATURAL_NAMES = {"a": "A", "b": "B", "l": "D_l", "e": "E"}
LOG_SCALE_NAMES = tuple(NATURAL_NAMES)  # fitted as logs, reported as exp()

LAWS: dict[str, Law] = {
    "data": Law("data", "L(D) = B / D^beta + E", uses_n=False, uses_d=True),
    "rectified": Law("rectified", "L(D) = B / (D_l + D^beta) + E", uses_n=False, uses_d=True, pre_learned=True),
    "model": Law("model", "L(N) = A / N^alpha + E", uses_n=True, uses_d=False),
    "joint": Law("joint", "L(N, D) = A / N^alpha + B / D^beta + E", uses_n=True, uses_d=True),
}


def get_law(name: str) -> Law:
    try:
        return LAWS[name]
    except KeyError:
        raise ValueError(f"law: expected one of {sorted(LAWS)}, got {name!r}") from None


def natural_params(law: Law, theta: np.ndarray) -> dict[str, np.ndarray | float]:
    """Log-space theta (..., p) -> {A, B, D_l, E, alpha, beta}; works on stacks of samples."""
    theta = np.asarray(theta, dtype=float)
    out: dict[str, np.ndarray | float] = {}
    for i, (name, natural) in enumerate(zip(law.param_names, law.natural_names)):
        col = theta[..., i]
        out[natural] = np.exp(col) if name in LOG_SCALE_NAMES else col
    if theta.ndim == 1:
        out = {k: float(v) for k, v in out.items()}
    return out


def predict_loss(law: Law, theta: np.ndarray, N=None, D=None) -> np.ndarray:
    """Loss predicted by `theta` (p,) or a stack of thetas (R, p) at points N, D (n,).

    Returns shape (n,) for one theta, (R, n) for a stack. A data law ignores N, a model law D.
    """
    theta = np.asarray(theta, dtype=float)
    cols = {name: theta[..., i, None] for i, name in enumerate(law.param_names)}
    total = np.exp(cols["e"])
    if law.uses_n:
        if N is None:
            raise ValueError(f"{law.name} law needs N to predict")
        total = total + np.exp(cols["a"] - cols["alpha"] * np.log(np.asarray(N, dtype=float)))
    if law.uses_d:
        if D is None:
            raise ValueError(f"{law.name} law needs D to predict")
        log_x = cols["beta"] * np.log(np.asarray(D, dtype=float))
        if law.pre_learned:  # B / (D_l + D^beta), in log space
            total = total + np.exp(cols["b"] - np.logaddexp(cols["l"], log_x))
        else:
            total = total + np.exp(cols["b"] - log_x)
    return total


class HuberObjective:
    """Huber loss between log predicted and log observed loss, with its analytic gradient.

    Points may belong to `n_groups` mixtures (`groups[i]` in 0..n_groups-1) that own their
    (a, b, e) and share the exponents. theta is laid out as
    [group 0's (a, b, e), group 1's (a, b, e), ..., shared (alpha, beta)], restricted to the
    names the law has. The value handed to the optimiser is the Huber sum scaled by
    1 / (n delta^2), which leaves the minimiser unchanged and keeps the optimiser's tolerances
    meaningful; `huber_sum` gives the unscaled sum of Hoffmann et al.
    """

    def __init__(
        self,
        law: Law,
        log_n: np.ndarray,
        log_d: np.ndarray,
        log_loss: np.ndarray,
        groups: np.ndarray | None = None,
        n_groups: int = 1,
        delta: float = HUBER_DELTA,
    ) -> None:
        if law.pre_learned:
            raise ValueError(f"{law.name} law: use analysis.rectified.RectifiedObjective")
        self.law = law
        self.log_n = np.ascontiguousarray(log_n, dtype=float)
        self.log_d = np.ascontiguousarray(log_d, dtype=float)
        self.log_loss = np.ascontiguousarray(log_loss, dtype=float)
        self.n_groups = int(n_groups)
        if self.n_groups > 1:
            if groups is None:
                raise ValueError("groups are required when n_groups > 1")
            self.groups = np.ascontiguousarray(groups, dtype=np.intp)
        else:
            self.groups = None
        self.delta = float(delta)
        self.n_points = self.log_loss.size
        self.scale = 1.0 / (self.n_points * self.delta**2)
        self.k_group = len(law.group_names)
        self.n_params = self.n_groups * self.k_group + len(law.exponent_names)
        rows = [np.ones_like(self.log_loss)]
        rows += [self.log_n] if law.uses_n else []
        rows += [self.log_d] if law.uses_d else []
        self.features = np.ascontiguousarray(np.stack(rows))
        self.features_t = np.ascontiguousarray(self.features.T)

    def bounds(self) -> list[tuple[float, float]]:
        """Exponents are kept in EXPONENT_BOUNDS (a falling loss); a, b, e in LOG_SCALE_BOUNDS."""
        scales = [LOG_SCALE_BOUNDS] * (self.n_groups * self.k_group)
        return scales + [EXPONENT_BOUNDS] * len(self.law.exponent_names)

    def _terms(self, theta: np.ndarray):
        """Per-point logits of each term and, for the gradient, the owner of each column."""
        own = theta[: self.n_groups * self.k_group].reshape(self.n_groups, self.k_group)
        if self.groups is None:
            cols = own[0]
        else:
            cols = own[self.groups].T  # (k_group, n)
        exps = theta[self.n_groups * self.k_group :]
        terms = []  # (logit, which group column, exponent index or None, log x)
        j = 0
        k = 0
        if self.law.uses_n:
            terms.append((cols[j] - exps[k] * self.log_n, j, k, self.log_n))
            j += 1
            k += 1
        if self.law.uses_d:
            terms.append((cols[j] - exps[k] * self.log_d, j, k, self.log_d))
            j += 1
            k += 1
        return terms, cols[j], j

    def log_predict(self, theta: np.ndarray) -> np.ndarray:
        terms, e, _ = self._terms(np.asarray(theta, dtype=float))
        m = np.maximum.reduce([t for t, *_ in terms] + [np.broadcast_to(e, self.log_n.shape)])
        s = np.exp(e - m)
        for logit, *_ in terms:
            s = s + np.exp(logit - m)
        return m + np.log(s)

    def huber_sum(self, theta: np.ndarray) -> float:
        """The unscaled objective: sum over points of Huber_delta(log L_hat - log L)."""
        r = self.log_predict(theta) - self.log_loss
        c = np.clip(r, -self.delta, self.delta)
        return float(c @ r - 0.5 * (c @ c))

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """(scaled Huber loss, gradient) for L-BFGS-B's `jac=True`."""
        return self._single(theta) if self.groups is None else self._grouped(theta)

    def _grouped(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Several mixtures, shared exponents: per-group sums of the gradient by bincount."""
        terms, e, e_col = self._terms(theta)
        m = terms[0][0].copy()
        for logit, *_ in terms[1:]:
            np.maximum(m, logit, out=m)
        np.maximum(m, e, out=m)
        weights = [np.exp(logit - m) for logit, *_ in terms]
        w_e = np.exp(e - m)
        s = w_e.copy()
        for w in weights:
            s += w
        r = np.log(s)
        r += m
        r -= self.log_loss
        c = np.minimum(r, self.delta)
        np.maximum(c, -self.delta, out=c)
        value = (c @ r - 0.5 * (c @ c)) * self.scale
        # d Huber / d log L_hat = clip(r); d log L_hat / d logit_k = softmax weight w_k / s.
        c *= self.scale
        c /= s
        grad = np.empty(self.n_params)
        own_grad = np.zeros((self.n_groups, self.k_group))
        offset = self.n_groups * self.k_group
        for (_, col, k, log_x), w in zip(terms, weights):
            w *= c
            own_grad[:, col] = self._group_sum(w)
            grad[offset + k] = -(w @ log_x)
        own_grad[:, e_col] = self._group_sum(c * w_e)
        grad[:offset] = own_grad.ravel()
        return value, grad

    def _single(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The same computation for one mixture as two small matrix products (the hot path).

        Rows of `features` are [1, log N?, log D?]; the logits of the terms
        [N term?, D term?, e] are `coef @ features` with coef[i] = [own_i, 0.., -exponent_i, 0..].
        Written for few numpy calls: with tens of points, call overhead is the cost.
        """
        t = theta.tolist()
        if len(t) == 3:  # data or model law: [own, e, exponent]
            logits = np.array([[t[0], -t[2]], [t[1], 0.0]]) @ self.features
            m = np.maximum(logits[0], logits[1])
        else:  # joint: [a, b, e, alpha, beta]
            logits = np.array([[t[0], -t[3], 0.0], [t[1], 0.0, -t[4]], [t[2], 0.0, 0.0]]) @ self.features
            m = np.maximum(logits[0], logits[1])
            np.maximum(m, logits[2], out=m)
        w = np.exp(logits - m)
        s = w.sum(axis=0)
        r = np.log(s)
        r += m
        r -= self.log_loss
        c = np.clip(r, -self.delta, self.delta)
        value = (c @ r - 0.5 * (c @ c)) * self.scale
        c *= self.scale
        c /= s
        w *= c
        g = (w @ self.features_t).tolist()  # g[i][j] = sum_points dHuber/dlogit_i * feature_j
        if len(t) == 3:
            return value, np.array([g[0][0], g[1][0], -g[0][1]])
        return value, np.array([g[0][0], g[1][0], g[2][0], -g[0][1], -g[1][2]])

    def _group_sum(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.groups, weights=values, minlength=self.n_groups)
