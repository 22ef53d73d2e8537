"""Results tables simulated from known laws, for tests, benchmarks and trying the report.

Each mixture follows L(N, D) = A / N^alpha + B / D^beta + E exactly, times log-normal noise
of relative size `noise`. The table has the columns of docs/formats.md section 5.
"""

from __future__ import annotations

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
) -> pd.DataFrame:
    """One run per (mixture, N, D); `fractions` gives each mixture's synthetic_fraction."""
    rng = np.random.default_rng(seed)
    rows = []
    for mixture, law in laws.items():
        for N in N_values:
            for D in D_values:
                loss = float(law.loss(N, D) * np.exp(rng.normal(0.0, noise)))
                rows.append({
                    "run_id": f"{mixture}-N{N:.3g}-D{D:.3g}",
                    "model": f"n{N:.3g}",
                    "N": float(N),
                    "D": float(D),
                    "mixture": mixture,
                    "synthetic_fraction": (fractions or {}).get(mixture, np.nan),
                    "loss": loss,
                })
    return pd.DataFrame(rows)
