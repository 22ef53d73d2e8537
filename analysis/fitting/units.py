"""What one fit is fitted on: a `FitUnit`, cut from the results table.

A data-law unit is one mixture at one N, a model-law unit one mixture at one D, a joint unit
one mixture. With shared exponents, a unit holds several mixtures (each its own a, b, e).
A unit with fewer points than its free parameters + 1, or too few distinct sizes or budgets
to pin its curve down, cannot be fitted; `check_unit` says which mixture and what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from analysis.core.laws import HUBER_DELTA, HuberObjective, Law
from analysis.core.rectified_law import RectifiedObjective
from analysis.data.table import ResultsTable
from synthscale.errors import SynthscaleError
from synthscale.units import format_count


class UnfittableError(SynthscaleError):
    """One or more fits lack the points they need; `problems` has one message each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("cannot fit:\n  - " + "\n  - ".join(problems))


@dataclass
class FitUnit:
    law: Law
    mixtures: tuple[str, ...]
    fixed: tuple[str, float] | None  # ("N", value) for the data law, ("D", value) for the model law
    N: np.ndarray
    D: np.ndarray
    loss: np.ndarray
    run_ids: np.ndarray
    groups: np.ndarray  # index into `mixtures` for each point
    condition: str | None = None  # backend/recipe_hash of its runs (None: the table cannot tell)

    @property
    def shared(self) -> bool:
        return len(self.mixtures) > 1

    @property
    def n_points(self) -> int:
        return int(self.loss.size)

    @property
    def n_free(self) -> int:
        return len(self.mixtures) * len(self.law.group_names) + len(self.law.exponent_names)

    @property
    def label(self) -> str:
        who = self.mixtures[0] if not self.shared else "+".join(self.mixtures) + " (shared exponents)"
        where = f" at {self.fixed[0]}={format_count(self.fixed[1])}" if self.fixed else ""
        condition = f" [{self.condition}]" if self.condition else ""
        return f"{who}{where}, {self.law.name} law{condition}"

    def key(self) -> dict:
        """How fits.json and the report name this fit."""
        key: dict = {"law": self.law.name}
        key["mixture" if not self.shared else "mixtures"] = (
            self.mixtures[0] if not self.shared else list(self.mixtures)
        )
        if self.fixed:
            key[self.fixed[0]] = self.fixed[1]
        if self.condition:
            key["condition"] = self.condition
        return key

    def objective(self, delta: float = HUBER_DELTA) -> HuberObjective:
        cls = RectifiedObjective if self.law.pre_learned else HuberObjective
        return cls(
            self.law,
            np.log(self.N),
            np.log(self.D),
            np.log(self.loss),
            groups=self.groups if self.shared else None,
            n_groups=len(self.mixtures),
            delta=delta,
        )

    def subset(self, index: np.ndarray) -> "FitUnit":
        """The unit restricted to (or resampled at) the given point indices."""
        return replace(
            self,
            N=self.N[index],
            D=self.D[index],
            loss=self.loss[index],
            run_ids=self.run_ids[index],
            groups=self.groups[index],
        )

    def strata(self) -> list[np.ndarray]:
        """Point indices of each mixture: the bootstrap resamples runs within each."""
        return [np.flatnonzero(self.groups == g) for g in range(len(self.mixtures))]


def _distinct(values: np.ndarray) -> list[float]:
    return sorted(set(values.tolist()))


def check_unit(unit: FitUnit) -> str | None:
    """None when the unit can be fitted, else what is missing, naming the mixture."""
    law = unit.law
    problems = []
    if unit.n_points < unit.n_free + 1:
        problems.append(
            f"{unit.n_points} usable run(s), a fit needs at least {unit.n_free + 1} "
            f"({unit.n_free} free parameters + 1): {unit.n_free + 1 - unit.n_points} more run(s) needed"
        )
    for g, mixture in enumerate(unit.mixtures):
        idx = unit.groups == g
        for column in law.varying:
            values = _distinct((unit.N if column == "N" else unit.D)[idx])
            # Alone, a mixture needs 3 distinct values (scale, exponent, offset; 4 with the
            # rectified law's D_l); with shared exponents 2 still pin its own scale.
            need = 2 if unit.shared else law.min_distinct
            if len(values) < need:
                shown = ", ".join(format_count(v) for v in values) or "none"
                problems.append(
                    f"mixture {mixture!r} has {len(values)} distinct {column} value(s) ({shown}), "
                    f"at least {need} are needed to pin down the curve"
                )
        if unit.shared and idx.sum() < len(law.group_names) + 1:
            problems.append(
                f"mixture {mixture!r} has {int(idx.sum())} run(s), at least "
                f"{len(law.group_names) + 1} are needed for its own {', '.join(law.group_names)}"
            )
    if not problems:
        return None
    return f"{unit.label} ({law.formula}): " + "; ".join(problems)


def plan_units(
    table: ResultsTable,
    law: Law,
    shared: bool = False,
    mixtures: list[str] | None = None,
) -> list[tuple[FitUnit, str | None]]:
    """Every unit of `law` the table's runs define, each with None (it can be fitted) or what it lacks.

    Per mixture (and per fixed N or D for the data and model laws); with `shared`, the
    mixtures at the same fixed value form one unit with shared exponents.
    """
    runs = table.runs
    if mixtures is not None:
        runs = runs[runs["mixture"].isin(mixtures)]
    fixed_col = law.fixed
    slices = [(None, runs)] if fixed_col is None else list(runs.groupby(fixed_col, sort=True))
    planned: list[tuple[FitUnit, str | None]] = []
    for fixed_value, part in slices:
        groups_of = [part] if shared else [g for _, g in part.groupby("mixture", sort=True)]
        for group in groups_of:
            names = tuple(sorted(group["mixture"].unique()))
            index = {m: i for i, m in enumerate(names)}
            unit = FitUnit(
                law=law,
                mixtures=names,
                fixed=None if fixed_col is None else (fixed_col, float(fixed_value)),
                N=group["N"].to_numpy(float),
                D=group["D"].to_numpy(float),
                loss=group["loss"].to_numpy(float),
                run_ids=group["run_id"].to_numpy(str),
                groups=np.array([index[m] for m in group["mixture"]], dtype=np.intp),
                condition=table.condition or None,
            )
            message = check_unit(unit)
            planned.append((unit, None if message is None else message + _excluded_note(table, names)))
    return planned


def build_units(
    table: ResultsTable,
    law: Law,
    shared: bool = False,
    mixtures: list[str] | None = None,
) -> tuple[list[FitUnit], list[str]]:
    """All units of `law` that can be fitted, and the messages of those that cannot (plan_units)."""
    planned = plan_units(table, law, shared, mixtures)
    return [u for u, m in planned if m is None], [m for _, m in planned if m is not None]


def _excluded_note(table: ResultsTable, mixtures: tuple[str, ...]) -> str:
    rows = [e["row"] for e in table.excluded if e.get("mixture") in mixtures]
    if not rows:
        return ""
    return f" (note: {len(rows)} run(s) of this mixture were excluded as bad input: rows {rows})"
