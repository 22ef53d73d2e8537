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


# A study shaped like the demo's (study/demo.yaml; tests/analysis/test_analysis_browser.py reads the real
# file): natural text over every size x its budgets, each synthetic mixture (recipes from SmolLM2, the
# ablation recipe from a random model, at each ratio) over the synthetic sizes x synthetic budgets,
# natural and the first recipe's 33% mixture again with more seeds at the largest synthetic size and
# the middle budget, two evaluation domains.
DEMO_GENERATORS = {"smollm2": "SmolLM2-135M-Instruct@1a2b3c4d5e6f", "random": "random-tiny-llama@0f0f0f0f0f0f"}
DEMO_PENALTY = {"hq": 0.07, "qa": 0.05, "textbook": 0.12, "hq-random": 0.11}  # extra loss at 33%; x2.4 at 67%


@dataclass(frozen=True)
class DemoDesign:
    sizes: tuple[float, ...]  # N of the sizes every mixture trains
    baseline_sizes: tuple[float, ...]  # N the natural baseline also trains
    budgets: tuple[float, ...]  # the baseline's D
    synthetic_budgets: tuple[float, ...]  # each synthetic mixture's D
    mixtures: dict  # {name: (family, generator, synthetic fraction)}, natural included
    repeated: tuple[str, ...]  # mixtures trained with extra seeds
    seeds: int  # seeds of a repeated configuration, the first included


def simulate_demo_table(design: DemoDesign, floor: bool = False, noise: float = 0.003, seed: int = 0) -> pd.DataFrame:
    """A results table of the design, with two evaluation domains (loss their mean).

    `floor` False: a loss without a floor, L = 60 N^-0.06 D^-0.17 (what the demo measured: the fits drive
    E to zero); True: L = 30 / N^0.2 + 400 / D^0.35 + 2.5. Synthetic mixtures add DEMO_PENALTY of their
    corpus (x 2.4 above 50% synthetic).
    """
    rng = np.random.default_rng(seed)
    middle = sorted(design.budgets)[len(design.budgets) // 2]
    rows = []
    for mixture, (family, generator, fraction) in design.mixtures.items():
        corpus = mixture.rsplit("-", 1)[0]
        penalty = 0.0 if not fraction else DEMO_PENALTY.get(corpus, 0.1) * (1.0 if fraction < 0.5 else 2.4)
        natural = fraction == 0
        sizes = design.sizes + (design.baseline_sizes if natural else ())
        for N in sizes:
            for D in (design.budgets if natural else design.synthetic_budgets):
                base = (30.0 / N**0.2 + 400.0 / D**0.35 + 2.5) if floor else 60.0 * N**-0.06 * D**-0.17
                repeats = design.seeds if mixture in design.repeated and (N, D) == (design.sizes[-1], middle) else 1
                for train_seed in range(repeats):
                    domains = {f"loss.{d}": (base + penalty + shift) * float(np.exp(rng.normal(0.0, noise)))
                               for d, shift in (("speeches-recent", 0.0), ("fiction", 0.5))}
                    rows.append({"run_id": f"{mixture}-N{N:.6g}-D{D:.3g}-s{train_seed}", "model": f"n{N:.6g}",
                                 "N": N, "D": D, "mixture": mixture, "synthetic_fraction": fraction,
                                 "family": family, "generator": generator, "backend": "cpu",
                                 "recipe_hash": "3f2a1b9c0d", "seed": train_seed,
                                 "loss": float(np.mean(list(domains.values()))), "eval_identity": "9" * 64,
                                 "loss_domains": "fiction+speeches-recent", **domains})
    return pd.DataFrame(rows)
