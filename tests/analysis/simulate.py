"""Results tables simulated from known laws, for tests, benchmarks and trying the report.

Each mixture follows L(N, D) = A / N^alpha + B / D^beta + E exactly, times log-normal noise
of relative size `noise`. The table has the columns of docs/formats.md section 5; the
labelling columns (family, generator, backend, recipe_hash, seed) are written when asked for.
`simulate_curves` writes curves of the rectified law per (mixture, N) instead, with only the
columns a table from elsewhere has (run_id, mixture, N, D, loss).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class TrueLaw:
    A: float
    B: float
    E: float
    alpha: float
    beta: float

    def loss(self, N, D) -> np.ndarray:
        N = np.asarray(N, dtype=float)
        D = np.asarray(D, dtype=float)
        return self.A / N**self.alpha + self.B / D**self.beta + self.E


def simulate_table(
    laws: dict[str, TrueLaw],
    N_values: list[float],
    D_values: list[float],
    noise: float = 0.005,
    seed: int = 0,
    fractions: dict[str, float] | None = None,
    labels: dict[str, tuple[str, str]] | None = None,
    condition: tuple[str, str] | None = None,
    repeats: dict[tuple[str, float, float], int] | None = None,
    domains: dict[str, dict[str, TrueLaw]] | None = None,
) -> pd.DataFrame:
    """One run per (mixture, N, D), training seed 0.

    - `fractions`: each mixture's synthetic_fraction;
    - `labels`: {mixture: (family, generator)}, ("", "") for natural text: writes the family,
      generator and seed columns;
    - `condition`: (backend, recipe_hash) of every run: writes those columns, and `eval_identity` and
      `loss_domains` (one evaluation for every run);
    - `repeats`: {(mixture, N, D): k}: that configuration trained with seeds 0..k-1;
    - `domains`: {domain: {mixture: law}}: a `loss.<domain>` column per domain, and `loss`
      their mean (as `recipes results` weighs domains by tokens, here equal).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for mixture, law in laws.items():
        for N in N_values:
            for D in D_values:
                for train_seed in range((repeats or {}).get((mixture, N, D), 1)):
                    row = {
                        "run_id": f"{mixture}-N{N:.3g}-D{D:.3g}" + (f"-s{train_seed}" if train_seed else ""),
                        "model": f"n{N:.3g}",
                        "N": float(N),
                        "D": float(D),
                        "mixture": mixture,
                        "synthetic_fraction": (fractions or {}).get(mixture, np.nan),
                    }
                    if labels is not None:
                        row["family"], row["generator"] = labels[mixture]
                    if condition is not None:
                        row["backend"], row["recipe_hash"] = condition
                    if labels is not None:
                        row["seed"] = train_seed
                    per_domain = {}
                    if domains:
                        per_domain = {f"loss.{d}": float(by_mixture[mixture].loss(N, D) * np.exp(rng.normal(0.0, noise)))
                                      for d, by_mixture in domains.items()}
                        row["loss"] = float(np.mean(list(per_domain.values())))
                    else:
                        row["loss"] = float(law.loss(N, D) * np.exp(rng.normal(0.0, noise)))
                    if condition is not None:  # as `recipes results` writes them: every run scored on the same domains
                        scored = "+".join(sorted(domains or ["eval"]))
                        row["eval_identity"], row["loss_domains"] = hashlib.sha256(scored.encode()).hexdigest(), scored
                    row.update(per_domain)
                    rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class RectifiedCurve:
    """L(D) = B / (D_l + D^beta) + E (the rectified law of Lin et al., 2024) at one (mixture, N)."""

    B: float
    D_l: float
    E: float
    beta: float

    def loss(self, D) -> np.ndarray:
        return self.B / (self.D_l + np.asarray(D, dtype=float) ** self.beta) + self.E


def simulate_curves(curves: dict[tuple[str, float], RectifiedCurve], D_values, noise: float = 0.005,
                    seed: int = 0) -> pd.DataFrame:
    """A table with the minimal columns (run_id, mixture, N, D, loss): one run per curve and budget,
    as curves published elsewhere arrive; `curves` is {(mixture, N): curve}."""
    rng = np.random.default_rng(seed)
    rows = []
    for (mixture, N), curve in curves.items():
        for D in D_values:
            rows.append({"run_id": f"{mixture}-N{N:.3g}-D{D:.4g}", "mixture": mixture, "N": float(N), "D": float(D),
                         "loss": float(curve.loss(D) * np.exp(rng.normal(0.0, noise)))})
    return pd.DataFrame(rows)
