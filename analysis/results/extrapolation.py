"""Extrapolation: the loss a fit predicts at the sizes and budgets asked for, with its interval, and
whether (N, D) lies among the runs the fit rests on."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.core.laws import predict_loss
from analysis.core.statistics import percentile_interval
from analysis.data.grouping import inside_runs
from analysis.fitting.bootstrap import BootstrapSamples
from analysis.fitting.fit import FitResult


def extrapolate(
    fit: FitResult,
    samples: BootstrapSamples | None,
    N_values: list[float],
    D_values: list[float],
    confidence: float,
) -> list[dict]:
    """Predicted loss (with interval) of each mixture of `fit` at the named sizes and budgets.

    The data law predicts at its own N for each D, the model law at its own D for each N,
    the joint law at every (N, D) pair.
    """
    law = fit.law
    if law.fixed == "N":
        pairs = [(fit.unit.fixed[1], d) for d in D_values]
    elif law.fixed == "D":
        pairs = [(n, fit.unit.fixed[1]) for n in N_values]
    else:
        pairs = [(n, d) for n in N_values for d in D_values]
    if not pairs or not fit.converged:
        return []
    N = np.array([p[0] for p in pairs], dtype=float)
    D = np.array([p[1] for p in pairs], dtype=float)
    out = []
    unit = fit.unit
    span = {"runs": unit.n_points, "N": [float(unit.N.min()), float(unit.N.max())],
            "D": [float(unit.D.min()), float(unit.D.max())]}
    points = pd.DataFrame({"N": unit.N, "D": unit.D})
    for mixture in fit.unit.mixtures:
        point = fit.predict(N, D, mixture)
        band = predict_loss(law, samples.mixture_thetas(mixture), N, D) if samples is not None else None
        for j in range(len(pairs)):
            out.append({
                "law": law.name, "mixture": mixture, "N": float(N[j]), "D": float(D[j]),
                "predicted_loss": float(point[j]),
                "interval": percentile_interval(band[:, j], confidence) if band is not None else None,
                "beyond_data": not inside_runs(points, N[j], D[j]),
                "rests_on": span,
            })
    return out
