"""Statistics shared by every layer: percentile intervals of bootstrap resamples."""

from __future__ import annotations

import numpy as np

from analysis.core.defaults import DEFAULT_CONFIDENCE


def percentile_interval(values: np.ndarray, confidence: float = DEFAULT_CONFIDENCE) -> list[float] | None:
    """[lo, hi] percentile interval of the finite values; None if fewer than 2 are finite.

    Infinite values (e.g. a speed-up where the baseline never reaches the loss) take part in
    the ranking, so an interval may be open (inf) on one side.
    """
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size < 2:
        return None
    tail = (1.0 - confidence) / 2.0 * 100.0
    big = np.finfo(float).max / 4  # ranks infinities without inf - inf = NaN in interpolation
    lo, hi = np.percentile(np.clip(values, -big, big), [tail, 100.0 - tail], method="linear")
    return [float(v) if abs(v) < 1e300 else float(np.sign(v) * np.inf) for v in (lo, hi)]
