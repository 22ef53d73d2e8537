"""The report's elements (sections, figures) and text helpers: number formatting, JSON-safe values."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
import numpy as np


@dataclass
class Figure:
    """A rendered figure: its file stem, title, caption and PNG bytes (figures.py renders them)."""

    name: str
    title: str
    caption: str
    png: bytes


@dataclass
class Section:
    """A titled part of the report: paragraphs and tables in order, then figures."""

    title: str
    blocks: list[str | tuple[list[str], list[list[str]]]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)

    def text(self, *paragraphs: str) -> "Section":
        self.blocks += list(paragraphs)
        return self

    def table(self, head: list[str], rows: list[list[str]]) -> "Section":
        self.blocks.append((head, rows))
        return self


def jsonable(obj):
    """numpy scalars/arrays to Python; inf to "inf"; NaN to None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        if math.isnan(x):
            return None
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    return obj


def fmt(x, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, str):
        return {"inf": "∞", "-inf": "-∞"}.get(x, x)
    x = float(x)
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:.{digits}g}"


def with_interval(value, interval) -> str:
    return fmt(value) + (f" [{fmt(interval[0], 3)}, {fmt(interval[1], 3)}]" if interval else "")


def interval_text(interval, formatter=fmt) -> str:
    if not interval:
        return "–"
    return "[" + ", ".join("∞" if isinstance(v, str) or math.isinf(v) else formatter(v) for v in interval) + "]"
