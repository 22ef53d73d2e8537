"""The `analysis` command (`main`): fit, report, unigram. Heavy libraries load inside the commands, so
that `analysis --help` answers at once."""

from analysis.cli.main import main

__all__ = ["main"]
