"""Where an artefact came from: the command, the version, the time, the config."""

from __future__ import annotations

import datetime as _dt
import platform
import sys

from synthscale import __version__


def provenance(config: dict | None = None, inputs: list[dict] | None = None) -> dict:
    """A `provenance` block for manifests. `inputs` are `files.describe_file` dicts."""
    record = {
        "command": list(sys.argv),
        "synthscale_version": __version__,
        "python": platform.python_version(),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if config is not None:
        record["config"] = config
    if inputs is not None:
        record["inputs"] = inputs
    return record
