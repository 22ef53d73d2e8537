"""synthscale: the shared core (files, provenance, units) that every stage may use.

The stages themselves are the top-level packages `data_prep`, `generation`, `recipes`
and `analysis`; they talk to each other only through files (see docs/formats.md).
"""

__version__ = "0.1.0"
