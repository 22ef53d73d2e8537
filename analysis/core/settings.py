"""How an analysis is made: its settings (`AnalysisConfig`) and how each fit is made (`FitSettings`,
the starting grids of Hoffmann et al. and a coarse one), typed and self-validating."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from analysis.core.defaults import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, MAX_MULTIPLE, TOL_ABS, TOL_REL
from analysis.core.laws import HUBER_DELTA, LAWS
from synthscale.errors import SynthscaleError


GRID = {
    "a": np.arange(0.0, 25.0 + 1e-9, 5.0),
    "b": np.arange(0.0, 25.0 + 1e-9, 5.0),
    # log D_l of the rectified law (D_l in units of D^beta): -10 starts at the data law (D_l = 0),
    # the rest at pre-learned sizes comparable with D^beta at budgets of 1e4 to 1e13 tokens.
    "l": np.array([-10.0, 0.0, 5.0, 10.0, 20.0]),
    "e": np.arange(-1.0, 1.0 + 1e-9, 0.5),
    "alpha": np.arange(0.0, 2.0 + 1e-9, 0.5),
    "beta": np.arange(0.0, 2.0 + 1e-9, 0.5),
}

# A quick-look grid (3^5 = 243 joint starts): `--grid coarse`. Reports say which grid was used.
COARSE_GRID = {
    "a": (0.0, 12.5, 25.0),
    "b": (0.0, 12.5, 25.0),
    "l": (-10.0, 5.0, 15.0),
    "e": (-1.0, 0.0, 1.0),
    "alpha": (0.5, 1.0, 1.5),
    "beta": (0.5, 1.0, 1.5),
}


@dataclass(frozen=True)
class FitSettings:
    """How fits are made. Validated on creation; errors name the field."""

    delta: float = HUBER_DELTA
    maxiter: int = 1000
    grid_ftol: float = 1e-6  # L-BFGS-B ftol from the grid points; the best are then polished
    polish: int = 5  # distinct best grid results refined with scipy's default (tight) ftol
    resample_starts: int = 5  # bootstrap: best grid fit + next best distinct local minima
    grid: dict[str, tuple[float, ...]] | None = None  # replaces axes of GRID (e.g. a coarser grid)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.delta) and self.delta > 0):
            raise ValueError(f"delta: must be a positive number, got {self.delta!r}")
        if self.maxiter < 1:
            raise ValueError(f"maxiter: must be at least 1, got {self.maxiter!r}")
        if not (0 < self.grid_ftol < 1):
            raise ValueError(f"grid_ftol: must be in (0, 1), got {self.grid_ftol!r}")
        if self.polish < 1:
            raise ValueError(f"polish: must be at least 1, got {self.polish!r}")
        if self.resample_starts < 1:
            raise ValueError(f"resample_starts: must be at least 1, got {self.resample_starts!r}")
        for name, values in (self.grid or {}).items():
            if name not in GRID:
                raise ValueError(f"grid: unknown parameter {name!r}, expected one of {sorted(GRID)}")
            if len(values) == 0 or not all(math.isfinite(v) for v in values):
                raise ValueError(f"grid: {name} needs finite starting values, got {values!r}")


@dataclass(frozen=True)
class AnalysisConfig:
    """Options of `analysis fit` and `analysis report`; errors name the field and the value."""

    laws: tuple[str, ...] = ("data", "model", "joint")
    shared_exponents: bool = False  # also fit each law with exponents shared across mixtures
    bootstrap: int = DEFAULT_RESAMPLES
    seed: int = 0
    confidence: float = DEFAULT_CONFIDENCE
    workers: int = 1  # 0: all cores
    baseline: str | None = None  # default: the mixture with synthetic_fraction 0
    extrapolate_N: tuple[float, ...] = ()
    extrapolate_D: tuple[float, ...] = ()
    speedup_law: str = "data"  # "data": per-N data-law fits (the paper); "joint": joint fits
    holdout: bool = True
    holdout_joint: bool = False  # also hold out the largest D from the joint fits (slow: full grid)
    skip_unfittable: bool = False  # list fits lacking points instead of stopping
    target: str = "loss"
    plateau_tol_abs: float = TOL_ABS  # D_p: doubling D lowers the predicted loss by less than this (nats)
    plateau_tol_rel: float = TOL_REL  # ... or by less than this share of the remaining reducible loss
    plateau_max_multiple: float = MAX_MULTIPLE  # D_p beyond this x the largest budget: not identified
    fit: FitSettings = field(default_factory=FitSettings)

    def __post_init__(self) -> None:
        if not self.laws:
            raise SynthscaleError("laws: name at least one of data, model, joint")
        for law in self.laws:
            if law not in LAWS:
                raise SynthscaleError(f"laws: expected data, rectified, model or joint, got {law!r}")
        if len(set(self.laws)) != len(self.laws):
            raise SynthscaleError(f"laws: repeated law in {self.laws!r}")
        if not isinstance(self.bootstrap, int) or self.bootstrap < 0:
            raise SynthscaleError(f"bootstrap: must be 0 (none) or a positive count, got {self.bootstrap!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise SynthscaleError(f"seed: must be a non-negative integer, got {self.seed!r}")
        if not (isinstance(self.confidence, float) and 0.5 <= self.confidence < 1.0):
            raise SynthscaleError(f"confidence: must be in [0.5, 1), got {self.confidence!r}")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise SynthscaleError(f"workers: must be 0 (all cores) or a positive count, got {self.workers!r}")
        if self.speedup_law not in ("data", "joint"):
            raise SynthscaleError(f"speedup_law: expected 'data' or 'joint', got {self.speedup_law!r}")
        for name in ("extrapolate_N", "extrapolate_D"):
            for value in getattr(self, name):
                if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                    raise SynthscaleError(f"{name}: values must be positive numbers, got {value!r}")
        for name in ("plateau_tol_abs", "plateau_tol_rel"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise SynthscaleError(f"{name}: must be a positive number, got {value!r}")
        if not (isinstance(self.plateau_max_multiple, (int, float)) and math.isfinite(self.plateau_max_multiple)
                and self.plateau_max_multiple >= 1):
            raise SynthscaleError(f"plateau_max_multiple: must be a number >= 1, got {self.plateau_max_multiple!r}")
        if not (self.target == "loss" or self.target.startswith("loss.")):
            raise SynthscaleError(f"target: expected 'loss' or 'loss.<domain>', got {self.target!r}")

    def to_dict(self) -> dict:
        return asdict(self)
