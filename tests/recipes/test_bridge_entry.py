"""What of the Bridge entry script runs without the container: its imports, the loss-curve file,
and that megatron.bridge is imported nowhere else."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import recipes
from recipes import bridge_entry


def test_megatron_bridge_is_imported_only_inside_the_entry_functions():
    package = Path(recipes.__file__).parent
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(name.startswith("megatron.bridge") for name in names):
                assert path.name == "bridge_entry.py", f"{path.name} imports megatron.bridge"
        if path.name == "bridge_entry.py":  # only function-level imports: the module loads without Bridge
            for node in tree.body:
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                    assert not (module or "").startswith("megatron"), module


def test_loss_curve_keeps_the_last_value_of_a_step_logged_twice(tmp_path):
    path = tmp_path / "train_loss.jsonl"
    lines = [[1, 5.0], [2, 4.5], [3, 4.4], [2, 4.6], [3, 4.3], [4, 4.1]]  # resumed after step 3
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert bridge_entry._read_curve(path) == [[1, 5.0], [2, 4.6], [3, 4.3], [4, 4.1]]
    assert bridge_entry._read_curve(tmp_path / "missing.jsonl") == []


def test_last_rank_comes_from_the_launcher_environment(monkeypatch):
    monkeypatch.setenv("RANK", "7")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert bridge_entry._is_last_rank()
    monkeypatch.setenv("RANK", "3")
    assert not bridge_entry._is_last_rank()
