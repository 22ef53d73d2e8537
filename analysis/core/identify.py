"""Whether a fit is identified: numbers worth reporting, not a boundary solution.

A fit has *converged* when L-BFGS-B reported success at the best loss found (fitting/fit.py). That
says nothing about whether the data pin the parameters down: a loss with no visible floor
drives E to zero, and a flat loss puts an exponent or a scale on a bound. A converged fit is
*identified* only when all of these hold:

1. no parameter is on a bound of the optimiser, or within BOUND_TOLERANCE of one: the exponents
   alpha, beta in EXPONENT_BOUNDS [0, 10], the log-scale parameters a, b, e (A, B, E) in
   LOG_SCALE_BOUNDS;
2. E is not driven to zero: E >= E_FLOOR_SHARE (1e-3) x the smallest observed loss of the runs
   fitted (of the mixture, for a fit shared across mixtures);
3. with a bootstrap of at least MIN_RESAMPLES (2) resamples: at least MIN_VALID_SHARE (half) of
   them converged (and at least 2), and
   - A, B, alpha, beta: the percentile interval spans at most a decade (hi / lo <= 10, lo > 0);
   - E: the interval is narrower than E_MAX_WIDTH_SHARE (20%) of the smallest observed loss. A
     ratio rule would pass E in [0.31, 3.0] on a loss of 3: E needs an absolute width.
   With fewer than 2 resamples there are no intervals: the fit is *not bootstrap-checked* (the
   report says so) and rules 1 and 2 alone decide.

The rectified law's D_l (core/rectified_law.py) is the exception at zero: D_l = 0 is the data law, a
result. Each resample's D_l is in units of its own D^beta, so D_l is judged as the dimensionless
ratio D_l / D_min^beta (D_min: the smallest budget of the fit), resample by resample with its own
beta. D_l on its lower bound is no problem; D_l on its upper bound (the loss is flat) is. A ratio
interval whose low end is below DL_ZERO_RATIO (1e-3) is one-sided, [0, hi], and passes only when
hi <= DL_ONE_SIDED_MAX (1: D_l at most D_min^beta, so from the smallest budget on the data term
dominates the denominator); away from zero it must span at most a decade, with an upper end.

Speed-up, best ratio, irreducible loss and extrapolation use identified fits only; the others
are reported as "not identified: <reason>". Reasons name the parameter and the rule, never its
estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.core.laws import EXPONENT_BOUNDS, LOG_SCALE_BOUNDS, Law

BOUND_TOLERANCE = 1e-3  # in the optimiser's units: exponents, and log A, log B, log E
E_FLOOR_SHARE = 1e-3
MAX_INTERVAL_RATIO = 10.0
MIN_VALID_SHARE = 0.5
MIN_RESAMPLES = 2
E_MAX_WIDTH_SHARE = 0.2
DL_ZERO_RATIO = 1e-3  # D_l / D_min^beta below this: D_l = 0, the data law
DL_ONE_SIDED_MAX = 1.0  # an interval [0, hi] of D_l / D_min^beta passes when hi <= this
RULES = (
    f"not identified when: a parameter is within {BOUND_TOLERANCE:g} of an optimiser bound (exponents in "
    f"[{EXPONENT_BOUNDS[0]:g}, {EXPONENT_BOUNDS[1]:g}], log A, log B, log E in [{LOG_SCALE_BOUNDS[0]:g}, "
    f"{LOG_SCALE_BOUNDS[1]:g}]); E < {E_FLOOR_SHARE:g} x the smallest observed loss (E driven to zero); "
    f"the bootstrap percentile interval of A, B, alpha or beta has hi/lo > {MAX_INTERVAL_RATIO:g} or lo <= 0; "
    f"the interval of E is wider than {E_MAX_WIDTH_SHARE:.0%} of the smallest observed loss; "
    f"fewer than {MIN_VALID_SHARE:.0%} (or fewer than {MIN_RESAMPLES}) of the bootstrap resamples converged. "
    f"With fewer than {MIN_RESAMPLES} resamples a fit is not bootstrap-checked: bounds and E alone decide"
)
RECTIFIED_RULES = (
    f"rectified law: D_l is judged as D_l / D_min^beta (D_min the smallest budget of the fit), each bootstrap "
    f"resample with its own beta; below {DL_ZERO_RATIO:g} D_l = 0, the data law, a result: D_l on its lower bound "
    f"is allowed, and an interval reaching {DL_ZERO_RATIO:g} reads as [0, hi] and passes when hi <= "
    f"{DL_ONE_SIDED_MAX:g} (D_l at most D_min^beta: the data term dominates from the smallest budget on); D_l on "
    f"its upper bound, an interval without an upper end, or (away from 0) spanning more than a decade leaves "
    f"the fit not identified"
)
_SCALE = {"a": "A", "b": "B", "l": "D_l", "e": "E"}
_COLUMN = {"alpha": "N", "beta": "D", "A": "N", "B": "D"}


@dataclass(frozen=True)
class Problem:
    rule: str  # "bound", "E to zero", "interval", "resamples"
    parameter: str | None  # A, B, E, alpha, beta; None for the whole fit
    mixture: str | None  # for fits shared across mixtures
    reason: str  # what is wrong, without the estimate
    short: str  # a few words for compact tables

    def to_dict(self) -> dict:
        return {"rule": self.rule, "parameter": self.parameter, "mixture": self.mixture, "reason": self.reason}


@dataclass
class Identification:
    converged: bool
    problems: list[Problem] = field(default_factory=list)
    bootstrap_checked: bool = False

    @property
    def identified(self) -> bool:
        return self.converged and not self.problems

    def reason(self, mixture: str | None = None) -> str:
        """All problems (of one mixture and the shared ones, if given), '; '-joined."""
        chosen = [p for p in self.problems if mixture is None or p.mixture in (None, mixture)]
        return "; ".join(p.reason for p in chosen or self.problems)

    def short(self) -> str:
        return ", ".join(dict.fromkeys(p.short for p in self.problems))

    def to_dict(self) -> dict:
        return {
            "identified": self.identified,
            "reasons": [p.to_dict() for p in self.problems],
            "bootstrap_checked": self.bootstrap_checked,
        }


def point_problems(law: Law, theta: np.ndarray, mixtures: tuple[str, ...], min_loss: dict[str, float]) -> list[Problem]:
    """Rules 1 and 2 on a converged optimum (theta in the unit's layout: groups, then exponents)."""
    k = len(law.group_names)
    shared = len(mixtures) > 1
    out: list[Problem] = []
    for g, mixture in enumerate(mixtures):
        who = mixture if shared else None
        prefix = f"{mixture}: " if shared else ""
        for i, name in enumerate(law.group_names):
            value = float(theta[g * k + i])
            natural = _SCALE[name]
            if name == "e" and np.exp(value) < E_FLOOR_SHARE * min_loss[mixture]:
                out.append(Problem("E to zero", "E", who,
                                   f"{prefix}E driven to zero (below {E_FLOOR_SHARE:g} x the smallest observed loss, "
                                   f"{min_loss[mixture]:.4g}): the runs show no loss floor", "E→0"))
                continue
            for side, bound in zip(("lower", "upper"), LOG_SCALE_BOUNDS):
                if name == "l" and side == "lower":
                    continue  # D_l -> 0: the rectified law reduces to the data law, a result
                if abs(value - bound) < BOUND_TOLERANCE:
                    effect = f"{natural} → 0" if side == "lower" else f"{natural} runs away" + (
                        " (the loss is flat over these budgets)" if name == "l" else "")
                    out.append(Problem("bound", natural, who,
                                       f"{prefix}{natural} on the optimiser's {side} bound (log {natural} = {bound:g}): "
                                       f"{effect}", f"{natural} at bound"))
    offset = len(mixtures) * k
    for i, name in enumerate(law.exponent_names):
        value = float(theta[offset + i])
        for side, bound in zip(("lower", "upper"), EXPONENT_BOUNDS):
            if abs(value - bound) < BOUND_TOLERANCE:
                why = (f"the loss does not fall with {_COLUMN[name]} on these runs" if side == "lower"
                       else "a step, not a power law")
                out.append(Problem("bound", name, None,
                                   f"exponent {name} on its {side} bound {bound:g}: {why}", f"{name} at bound"))
    return out


def bootstrap_checked(n_resamples: int) -> bool:
    """Whether a bootstrap of this many resamples can check intervals at all (rule 3)."""
    return n_resamples >= MIN_RESAMPLES


def interval_problems(intervals: dict[str, dict[str, list[float] | None]], n_resamples: int, n_failed: int,
                      shared: bool, zero_ok: dict[str, float] | None = None,
                      loss_scale: dict[str, float] | None = None) -> list[Problem]:
    """Rule 3: `intervals` is {mixture: {parameter: [lo, hi] or None}}.

    `zero_ok` {parameter: threshold}: parameters for which 0 is a result (the rectified law's
    D_l, as D_l / D_min^beta); an interval with lo <= threshold is one-sided, [0, hi], and passes
    when hi <= DL_ONE_SIDED_MAX. `loss_scale` {mixture: smallest observed loss} sets
    E's rule (required when E is given). Fewer than MIN_RESAMPLES resamples check nothing.
    """
    out: list[Problem] = []
    if not bootstrap_checked(n_resamples):
        return out
    valid = n_resamples - n_failed
    if valid < MIN_VALID_SHARE * n_resamples or valid < MIN_RESAMPLES:
        out.append(Problem("resamples", None, None,
                           f"only {valid} of {n_resamples} bootstrap resamples converged", "resamples"))
    seen: set[str] = set()
    for mixture, params in intervals.items():
        for name, interval in params.items():
            if name in ("alpha", "beta"):
                if name in seen:
                    continue  # shared exponents: one check
                seen.add(name)
            prefix = f"{mixture}: " if shared and name not in ("alpha", "beta") else ""
            who = mixture if shared and name not in ("alpha", "beta") else None
            if interval is None:
                continue  # too few valid resamples: counted above
            lo, hi = interval
            if name == "E":
                if loss_scale is None:
                    raise ValueError("interval_problems: E's rule needs loss_scale (the smallest observed loss)")
                width = hi - lo
                if not np.isfinite(width) or width > E_MAX_WIDTH_SHARE * loss_scale[mixture]:
                    share = width / loss_scale[mixture]
                    out.append(Problem("interval", "E", who,
                                       f"{prefix}the bootstrap interval of E is wider than {E_MAX_WIDTH_SHARE:.0%} "
                                       f"of the smallest observed loss (its width: {share:.0%} of it)", "E wide"))
                continue
            if zero_ok and name in zero_ok:
                unit = f"{name} / D_min^beta" if name == "D_l" else name
                if lo <= zero_ok[name]:  # consistent with 0 (the data law): [0, hi]
                    if not np.isfinite(hi) or hi > DL_ONE_SIDED_MAX:
                        top = "has no upper end" if not np.isfinite(hi) else f"reaches above {DL_ONE_SIDED_MAX:g}"
                        out.append(Problem("interval", name, who,
                                           f"{prefix}the bootstrap interval of {unit} reaches 0 but {top}: the runs "
                                           f"do not tell whether {name} matters", f"{name} wide"))
                    continue
                name_shown = unit
            else:
                name_shown = name
            if lo <= 0:
                out.append(Problem("interval", name, who,
                                   f"{prefix}the bootstrap interval of {name_shown} reaches "
                                   f"{'0' if lo == 0 else 'below 0'}", f"{name} wide"))
            elif not np.isfinite(hi) or hi / lo > MAX_INTERVAL_RATIO:
                span = "without an upper end" if not np.isfinite(hi) else f"a factor {hi / lo:.3g} (hi/lo)"
                out.append(Problem("interval", name, who,
                                   f"{prefix}the bootstrap interval of {name_shown} spans {span}, more than a decade",
                                   f"{name} wide"))
    return out


def not_identified(reason: str) -> str:
    """The text a finding shows instead of a number."""
    return f"not identified: {reason}"
