"""Human-friendly counts: '5e9', '5B', '200M', '1.5k', '4096'."""

from __future__ import annotations

import math

from synthscale.errors import SynthscaleError

_SUFFIXES = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}


def parse_count(value: str | int | float, what: str = "count") -> int:
    """Parse '5e9', '5B', '200M', '1.5k' or a plain integer into a positive int.

    Raises ValueError naming `what` and the bad value.
    """
    if isinstance(value, bool):
        raise SynthscaleError(f"{what}: expected a number like 5e9, 5B or 200M, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip().replace("_", "").replace(",", "")
        scale = 1
        if text and text[-1].upper() in _SUFFIXES:
            scale = _SUFFIXES[text[-1].upper()]
            text = text[:-1]
        try:
            number = float(text) * scale
        except ValueError:
            raise SynthscaleError(
                f"{what}: expected a number like 5e9, 5B or 200M, got {value!r}"
            ) from None
    if not math.isfinite(number) or number <= 0:
        raise SynthscaleError(f"{what}: must be a positive number, got {value!r}")
    if abs(number - round(number)) > 1e-6 * max(1.0, number):
        raise SynthscaleError(f"{what}: must be a whole number, got {value!r}")
    return int(round(number))


def format_count(n: float) -> str:
    """1_500_000 -> '1.5M' (for names and tables)."""
    for suffix, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"
