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


# --- run_bridge's own logic, with a stand-in for the four Bridge functions it calls -----------------
# The stand-in behaves as Megatron-Bridge 0.6 does where it matters here (read from its source):
# `on_train_step_end` fires before `train_state.step` is incremented; training writes
# checkpoints/latest_checkpointed_iteration.txt and iter_<N>; with `exit_duration_in_mins` set it
# stops early after saving a checkpoint; an evaluation config loads nothing when no checkpoint
# exists (`_should_load_checkpoint` is False) and scores whatever model it has.

import types

import pytest
import yaml

from recipes.bridge_entry import BridgeApi, CheckpointNotFinal, Deadline, run_bridge
from tests.recipes.helpers import invoke, paper_blend


def _namespace(value):
    if isinstance(value, dict):
        return types.SimpleNamespace(**{k: _namespace(v) for k, v in value.items()})
    return value


class FakeBridge:
    def __init__(self, stop_at: int | None = None):
        self.calls: list[str] = []
        self.stop_at = stop_at

    def api(self) -> BridgeApi:
        return BridgeApi(self.from_yaml, self.pretrain, object(), object)

    def from_yaml(self, path):
        return _namespace(yaml.safe_load(Path(path).read_text()))

    def pretrain(self, cfg, forward_step, callbacks):
        checkpoints = Path(cfg.checkpoint.load)
        tracker = checkpoints / "latest_checkpointed_iteration.txt"
        if getattr(cfg.validation, "skip_train", False):
            self.calls.append("eval:" + cfg.dataset.blend_per_split[2][0][0])
            for cb in callbacks:
                cb.on_test_end(types.SimpleNamespace(total_loss_dict={"lm loss": 2.5}))
            return
        start = int(tracker.read_text()) if tracker.is_file() else 0
        end = cfg.train.train_iters
        if getattr(cfg.train, "exit_duration_in_mins", None) is not None and self.stop_at:
            end = min(end, self.stop_at)
        self.calls.append(f"train:{start}-{end}")
        state = types.SimpleNamespace(train_state=types.SimpleNamespace(step=start))
        for step in range(start, end):
            for cb in callbacks:
                cb.on_train_step_end(types.SimpleNamespace(state=state, loss_dict={"lm loss": 10.0 - step / end}))
            state.train_state.step += 1  # after the callbacks, as Bridge does
        (checkpoints / f"iter_{end:07d}").mkdir(parents=True, exist_ok=True)
        tracker.write_text(str(end))


@pytest.fixture()
def bridge_run(workspace, tmp_path, monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    blend = paper_blend(tmp_path / "hq_33.yaml", tmp_path / "data", tokens=2 * 10**9)
    args = ["sweep", "--sizes", "100M", "--tokens", "200M", "--blends", str(blend), "--eval",
            f"wiki={workspace.prefixes['eval_wiki']}", "--eval", f"news={workspace.prefixes['eval_news']}",
            "--backend", "bridge", "--gpus-per-node", "1", "--output", str(tmp_path / "runs"), "--dry-run"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir() and not p.name.startswith("_")]
    return run_dir


def test_evaluation_refuses_without_the_final_checkpoint(bridge_run):
    (bridge_run / "bridge" / "train_done.json").write_text('{"train_time_s": 1.0}')  # says trained, no checkpoint
    fake = FakeBridge()
    with pytest.raises(CheckpointNotFinal, match="no checkpoint to evaluate"):
        run_bridge(bridge_run, api=fake.api())
    assert fake.calls == []  # no evaluation of a random model
    (bridge_run / "checkpoints" / "iter_0000010").mkdir(parents=True)
    (bridge_run / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("10")
    with pytest.raises(CheckpointNotFinal, match="iteration 10, not the final 190"):
        run_bridge(bridge_run, api=fake.api())
    assert fake.calls == [] and not (bridge_run / "results.json").exists()
    evaluation = yaml.safe_load((bridge_run / "bridge" / "eval_wiki.yaml").read_text())
    assert evaluation["checkpoint"]["ckpt_step"] == 190  # Bridge loads the final iteration, no other


def test_curve_steps_run_1_to_n_like_the_cpu_backend_and_results_are_written(bridge_run):
    fake = FakeBridge()
    record = run_bridge(bridge_run, api=fake.api())
    assert fake.calls[0] == "train:0-190" and [c.split(":")[0] for c in fake.calls[1:]] == ["eval", "eval"]
    steps = [step for step, _ in record["train_loss_curve"]]
    assert steps == list(range(1, 191))  # Bridge's step counter is 0..189 when the callback fires
    assert set(record["eval"]) == {"wiki", "news"} and record["backend"] == "bridge"
    assert record["eval_windows"]["method"].startswith("megatron-core GPTDataset test split")


def test_a_time_limit_stops_training_and_a_rerun_continues_to_the_end(bridge_run):
    fake = FakeBridge(stop_at=20)
    minutes = iter([0.0, 0.0, 0.0, 0.0])
    deadline = Deadline(240, clock=lambda: next(minutes, 0.0) * 60)
    assert run_bridge(bridge_run, api=fake.api(), deadline=deadline) is None
    train_yaml_exit = fake.calls == ["train:0-20"]  # stopped, checkpoint at 20: no evaluation started
    assert train_yaml_exit and not (bridge_run / "bridge" / "train_done.json").exists()
    assert not (bridge_run / "results.json").exists()
    record = run_bridge(bridge_run, api=fake.api())  # the requeued job
    assert fake.calls[1] == "train:20-190" and len(fake.calls) == 4
    assert [s for s, _ in record["train_loss_curve"]] == list(range(1, 191))


def test_no_evaluation_starts_inside_the_time_margin(bridge_run):
    fake = FakeBridge()
    assert run_bridge(bridge_run, api=fake.api(), stage="train") is None  # trained, not evaluated
    (bridge_run / "bridge" / "train_done.json").write_text('{"train_time_s": 1.0}')
    now = [0.0]
    deadline = Deadline(60, margin_minutes=10, clock=lambda: now[0])
    now[0] = 55 * 60  # 5 minutes left, inside the 10-minute margin
    assert run_bridge(bridge_run, api=fake.api(), deadline=deadline) is None
    assert fake.calls == ["train:0-190"]
