"""What an analysis does: one typed, self-validating configuration."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from analysis.defaults import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, MAX_MULTIPLE, TOL_ABS, TOL_REL
from analysis.fit import FitSettings
from analysis.laws import LAWS
from synthscale.errors import SynthscaleError


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
