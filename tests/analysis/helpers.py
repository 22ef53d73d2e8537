"""Constants shared by the analysis tests: the results table's columns and a simulated study."""

from analysis.core.settings import COARSE_GRID, FitSettings
from recipes.results import TABLE_COLUMNS as WRITTEN_COLUMNS
from tests.analysis.simulate import TrueLaw

# Three mixtures of one family, natural text as baseline (the report's inputs), named as
# `data_prep grid` names blends; the analysis reads family and generator from their columns.
GENERATOR = "SmolLM2-135M-Instruct@1a2b3c4d5e6f"
LAWS = {
    "natural": TrueLaw(A=400.0, B=1200.0, E=1.80, alpha=0.34, beta=0.28),
    "hq-33pct": TrueLaw(A=400.0, B=900.0, E=1.75, alpha=0.34, beta=0.27),
    "hq-67pct": TrueLaw(A=400.0, B=1000.0, E=1.85, alpha=0.34, beta=0.29),
}
FRACTIONS = {"natural": 0.0, "hq-33pct": 0.33, "hq-67pct": 0.67}
LABELS = {"natural": ("", ""), "hq-33pct": ("hq", GENERATOR), "hq-67pct": ("hq", GENERATOR)}
CONDITION = ("cpu", "3f2a1b9c0d")
SIZES = [2e7, 5e7, 1e8, 2e8]
BUDGETS = [1e9, 2e9, 4e9, 8e9, 1.6e10]
COARSE = FitSettings(grid=COARSE_GRID)
# The columns `recipes results` writes, in its order (then one loss.<domain> per domain): the writer's own list.
TABLE_COLUMNS = list(WRITTEN_COLUMNS)
