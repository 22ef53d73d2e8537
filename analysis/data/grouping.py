"""What is analysed with what: conditions, (family, generator) groups, and noise from seeds.

- A *condition* is (backend, recipe_hash, eval_identity). Runs of different conditions are analysed apart
  (`split_conditions`), unless the user pools them (`--pool-conditions`), which the report says.
- Within a condition, mixtures of one (family, generator) form the ratio axis of that family;
  the natural mixture (0% synthetic) of the condition belongs to every family (`group_rows`).
- Runs of one (condition, mixture, N, D) are repeats, fitted as separate points. Where their
  seeds differ, their spread is the seed-to-seed noise, set beside the differences between
  mixtures at the same (N, D) (`seed_spread`).
"""

from __future__ import annotations

import itertools
import math

import numpy as np


from analysis.data.table import ResultsTable


def ratio_families(labels: dict[str, tuple[float, str, str]]) -> dict[tuple[str, str], dict[str, float]]:
    """The ratio axes: {(family, generator): {mixture: synthetic_fraction}}, from the table's fields.

    `labels` is {mixture: (synthetic_fraction, family, generator)} of one condition. Mixtures of
    one (family, generator) pair form a family; natural-text mixtures (fraction 0) belong to
    every family. Names are never parsed. Families with fewer than two mixtures are left out.
    """
    families: dict[tuple[str, str], dict[str, float]] = {}
    natural = {m: f for m, (f, _, _) in labels.items() if f == 0}
    for mixture, (fraction, family, generator) in labels.items():
        if fraction == 0 or not np.isfinite(fraction):
            continue
        families.setdefault((family, generator), {})[mixture] = fraction
    for members in families.values():
        members.update(natural)
    return {k: dict(sorted(m.items(), key=lambda kv: (kv[1], kv[0]))) for k, m in sorted(families.items()) if len(m) >= 2}


def split_conditions(table: ResultsTable, pool: bool = False) -> tuple[list[ResultsTable], list[str]]:
    """One table per condition (or one pooled table), and notes saying what was done."""
    conditions = table.conditions
    if pool:
        label = conditions[0] if len(conditions) == 1 else "pooled: " + " + ".join(c or "?" for c in conditions)
        notes = []
        if len(conditions) > 1:
            notes.append(f"--pool-conditions: runs of {len(conditions)} conditions {conditions} (backend/recipe_hash/eval) "
                         f"are fitted together as if trained alike; runs of one mixture, N and D across them count "
                         f"as repeats")
        return [table.subset(np.ones(len(table.runs), bool), label or None)], notes
    parts = [table.subset((table.runs["condition"] == c).to_numpy(), c or None) for c in conditions]
    notes = []
    if len(conditions) > 1:
        notes.append(f"{len(conditions)} conditions (backend/recipe_hash/eval) {conditions}: each is analysed on its own "
                     f"(--pool-conditions fits them together)")
    return parts, notes


def mixture_labels(table: ResultsTable) -> dict[str, tuple[float, str, str]]:
    """{mixture: (synthetic_fraction, family, generator)} of a table (one condition)."""
    return {m: (table.synthetic_fraction(m), *table.label(m)) for m in table.mixtures}


def group_rows(table: ResultsTable) -> list[dict]:
    """What was grouped with what in one condition: one row per (family, generator)."""
    runs = table.runs
    labels = mixture_labels(table)
    families = ratio_families(labels)
    repeats = {(r["mixture"]) for r in table.repeated}

    def member(m: str) -> dict:
        own = runs[runs["mixture"] == m]
        return {"mixture": m, "synthetic_fraction": _finite(labels[m][0]), "runs": int(len(own)),
                "seeds": sorted({int(s) for s in own["seed"] if math.isfinite(s)}),
                "has_repeats": m in repeats}

    rows = []
    for (family, generator), members in families.items():
        rows.append({"condition": table.condition, "family": family, "generator": generator,
                     "mixtures": [member(m) for m in members],
                     "runs": int(runs["mixture"].isin(list(members)).sum())})
    grouped = {m for members in families.values() for m in members}
    rest = [m for m in table.mixtures if m not in grouped]
    if rest:  # natural-only tables, mixtures without a fraction, single synthetic mixtures
        rows.append({"condition": table.condition, "family": None, "generator": None,
                     "mixtures": [member(m) for m in rest], "runs": int(runs["mixture"].isin(rest).sum()),
                     "why": "not on a ratio axis (no synthetic_fraction, natural text only, or a family of one)"})
    return rows


def seed_spread(table: ResultsTable, baseline: str | None) -> dict:
    """Seed-to-seed spread of the loss where a configuration has repeats, beside the
    differences between mixtures at the same (N, D)."""
    configurations = []
    for r in table.repeated:
        losses = np.array(r["losses"], float)
        configurations.append({
            "mixture": r["mixture"], "N": r["N"], "D": r["D"], "kind": r["kind"], "n": int(losses.size),
            "seeds": r["seeds"], "run_ids": r["run_ids"], "losses": r["losses"],
            "mean": float(losses.mean()), "std": float(losses.std(ddof=1)), "range": float(np.ptp(losses)),
        })
    effects = []
    runs = table.runs
    for (N, D) in sorted({(c["N"], c["D"]) for c in configurations}):
        here = runs[(runs["N"] == N) & (runs["D"] == D)]
        means = here.groupby("mixture")["loss"].mean().sort_index()
        repeated = [c for c in configurations if c["N"] == N and c["D"] == D]
        noise_range = max(c["range"] for c in repeated)
        pairs = [abs(a - b) for a, b in itertools.combinations(means.to_numpy(float), 2)]
        entry = {
            "N": N, "D": D,
            "repeated": [{"mixture": c["mixture"], "n": c["n"], "std": c["std"], "range": c["range"]} for c in repeated],
            "seed_std": max(c["std"] for c in repeated), "seed_range": noise_range,
            "mixture_mean_loss": {m: float(v) for m, v in means.items()},
            "vs_baseline": ({m: float(v - means[baseline]) for m, v in means.items() if m != baseline}
                            if baseline in means.index else None),
            "mixture_differences": None if not pairs else {
                "pairs": len(pairs), "min": float(min(pairs)), "median": float(np.median(pairs)),
                "max": float(max(pairs)), "beyond_seed_range": int(sum(p > noise_range for p in pairs)),
            },
        }
        effects.append(entry)
    return {"configurations": configurations, "effects": effects}


def runs_span(runs) -> dict:
    """What a finding rests on: {runs, N: [lo, hi], D: [lo, hi]} of a frame of runs (None ranges when empty)."""
    if len(runs) == 0:
        return {"runs": 0, "N": None, "D": None}
    return {"runs": int(len(runs)), "N": [float(runs["N"].min()), float(runs["N"].max())],
            "D": [float(runs["D"].min()), float(runs["D"].max())]}


def inside(span: dict, N: float | None = None, D: float | None = None) -> bool:
    """Whether (N, D) lies within the ranges of `span` (runs_span); a missing range is outside."""
    for value, key in ((N, "N"), (D, "D")):
        if value is None:
            continue
        if span[key] is None or not span[key][0] * (1 - 1e-9) <= value <= span[key][1] * (1 + 1e-9):
            return False
    return True


def inside_runs(runs, N: float, D: float) -> bool:
    """Whether a law fitted on `runs` (several sizes) predicts (N, D) from inside them: N within the
    sizes run, and D within the budgets run at the sizes on either side of N (N itself if it was run)."""
    sizes = sorted(set(runs["N"].astype(float)))
    if not sizes or not sizes[0] * (1 - 1e-9) <= N <= sizes[-1] * (1 + 1e-9):
        return False
    below = max(n for n in sizes if n <= N * (1 + 1e-9))
    above = min(n for n in sizes if n >= N * (1 - 1e-9))
    return all(inside(runs_span(runs[runs["N"] == n]), D=D) for n in {below, above})


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None
