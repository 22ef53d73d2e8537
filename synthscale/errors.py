"""The one exception type the project raises on purpose.

`SynthscaleError` means bad input or a failed check: the user's to fix. Every stage's command
line prints its message on one line and exits 1. Any other exception is a bug: it keeps its
traceback. (`--debug` or SYNTHSCALE_DEBUG=1 shows the traceback of a SynthscaleError too.)

It subclasses ValueError so that code catching ValueError around parsing still works.
"""

from __future__ import annotations


class SynthscaleError(ValueError):
    """Bad input or a failed check; the message names the bad value, file or field."""


class MissingInputError(SynthscaleError, FileNotFoundError):
    """An input file or folder the user named does not exist."""
