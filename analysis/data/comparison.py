"""The model-free comparison: each mixture's loss against natural text at equal (N, D), beside the seed noise.

No law is fitted. At every (N, D) where a mixture and the baseline (natural text) were both trained,
the difference of their mean losses, d = mean(L_mixture) - mean(L_baseline), is set against the
seed-to-seed noise measured where configurations were trained with several seeds:

- sigma: the pooled standard deviation of the loss over seeds, over every repeated configuration
  whose seeds differ (variance weighted by its degrees of freedom, n - 1), with df = sum(n - 1);
- a difference *exceeds the noise* when |d| > t(confidence, df) x sigma x sqrt(1/n_m + 1/n_b)
  (n_m, n_b: runs of the mixture and of the baseline at that (N, D)), the two-sided Student-t bound
  of a difference of means under that noise. Positive d: the mixture's loss is higher (worse).

The noise is measured where the repeats are and assumed the same at every (N, D): the report says
where it was measured. Without repeats there is no noise estimate and no verdict, only differences.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from analysis.data.table import ResultsTable

VERDICTS = ("worse", "better", "within noise")


def seed_noise(table: ResultsTable) -> dict | None:
    """Pooled seed-to-seed standard deviation over the repeated configurations with distinct seeds."""
    used = [r for r in table.repeated if r["kind"] == "seed repeats"]
    if not used:
        return None
    df = sum(len(r["losses"]) - 1 for r in used)
    pooled = sum((len(r["losses"]) - 1) * float(np.var(r["losses"], ddof=1)) for r in used) / df
    return {"std": math.sqrt(pooled), "df": df,
            "measured_at": [{"mixture": r["mixture"], "N": r["N"], "D": r["D"], "n": len(r["losses"])} for r in used]}


def compare_to_baseline(table: ResultsTable, baseline: str | None, confidence: float) -> dict:
    """Every (N, D, mixture) trained beside the baseline: the difference of mean losses and its verdict."""
    out = {"baseline": baseline, "confidence": confidence, "noise": seed_noise(table), "rows": [],
           "counts": dict.fromkeys(VERDICTS, 0)}
    if baseline is None:
        return out
    noise = out["noise"]
    t = float(stats.t.ppf(0.5 + confidence / 2, noise["df"])) if noise else None
    out["t"] = t
    means = table.runs.groupby(["N", "D", "mixture"])["loss"].agg(["mean", "count"])
    for (N, D), here in means.groupby(level=["N", "D"]):
        here = here.droplevel(["N", "D"])
        if baseline not in here.index or len(here) < 2:
            continue
        base = here.loc[baseline]
        for mixture, row in here.drop(index=baseline).iterrows():
            difference = float(row["mean"] - base["mean"])
            entry = {"N": float(N), "D": float(D), "mixture": mixture, "runs": int(row["count"]),
                     "baseline_runs": int(base["count"]), "loss": float(row["mean"]),
                     "baseline_loss": float(base["mean"]), "difference": difference,
                     "threshold": None, "verdict": None}
            if noise:
                entry["threshold"] = t * noise["std"] * math.sqrt(1 / row["count"] + 1 / base["count"])
                entry["verdict"] = ("within noise" if abs(difference) <= entry["threshold"]
                                    else "worse" if difference > 0 else "better")
                out["counts"][entry["verdict"]] += 1
            out["rows"].append(entry)
    return out
