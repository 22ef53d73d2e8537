"""What every figure of the report shares: the Figure record, PNG rendering and axis helpers.

Figures are matplotlib (Agg), rendered at DPI dots per inch and sized in inches so that none is
wider than the report's page (MAX_WIDTH_IN at DPI: 1,150 px); each carries a caption saying what
was fitted on what.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 100
MAX_WIDTH_IN = 11.5


def render(fig) -> bytes:
    """The figure as PNG bytes (closed afterwards)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def plain_log_axis(axis) -> None:
    """Log scale with plain numbers (4.5, not 4.5 x 10^0); minor ticks labelled within a decade."""
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    lo, hi = axis.get_view_interval()
    axis.set_major_formatter(FormatStrFormatter("%.3g"))
    axis.set_minor_formatter(FormatStrFormatter("%.3g") if hi / max(lo, 1e-300) < 10 else NullFormatter())


def quiet_minor_ticks(axis) -> None:
    """No labels on minor ticks of a log axis spanning a decade or more (they collide)."""
    from matplotlib.ticker import NullFormatter

    lo, hi = axis.get_view_interval()
    if hi / max(lo, 1e-300) >= 10:
        axis.set_minor_formatter(NullFormatter())


def colors(n: int):
    return plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(n, 1)))


def where(analysis) -> str:
    """The condition in titles, when a report holds several."""
    return f" [{analysis.condition}]" if analysis.prefix and analysis.condition else ""


def grid_shape(n: int, max_columns: int = 5) -> tuple[int, int]:
    """(rows, columns) of small multiples for n panels."""
    columns = min(max_columns, max(n, 1))
    return (n + columns - 1) // columns, columns


def count_ticks(axis, values, max_ticks: int = 6) -> None:
    """Major ticks at (up to max_ticks of) the given counts, labelled 26K, 1.05M; no minor labels."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter, NullLocator

    from synthscale.units import format_count

    values = sorted(set(float(v) for v in values))
    step = max(1, -(-len(values) // max_ticks))
    shown = values[::step]
    axis.set_major_locator(FixedLocator(shown))
    axis.set_major_formatter(FixedFormatter([format_count(v) for v in shown]))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())
