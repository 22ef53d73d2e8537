"""What a sweep is keyed on, and what a rerun does: run ids from the blend's meaning (a blend
regenerated from the same inputs keeps them), seeds as separate runs of one recipe, an added
evaluation domain scored without retraining, and `--jobs 2` giving the serial losses."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.recipes.helpers import invoke, sweep_args

from recipes.cpu_trainer import CHECKPOINT

BUDGET = "12800"  # 50 steps of 4 x 64 tokens: the shortest run a sweep accepts


def _run_ids(runs: Path) -> list[str]:
    return sorted(p.parent.name for p in runs.glob("*/run.json"))


def _results(runs: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(runs.glob("*/results.json"))}


def test_regenerated_blend_keeps_run_ids_and_a_rerun_trains_nothing(workspace, tmp_path):
    blend_a = workspace.make_blend("mix", "natural=0.67,synth=0.33", tokens=40_000, seq_length=64)
    runs = tmp_path / "runs"
    first = invoke(sweep_args(workspace, runs, "tiny-xs", BUDGET, blend=blend_a))
    assert first.exit_code == 0, first.output
    ids = _run_ids(runs)
    text_before = blend_a.read_text()
    time.sleep(1.1)  # created_at has one-second resolution
    blend_b = workspace.make_blend("mix", "natural=0.67,synth=0.33", tokens=40_000, seq_length=64)
    assert blend_b == blend_a and blend_b.read_text() != text_before  # other bytes, same meaning
    rerun = invoke(sweep_args(workspace, runs, "tiny-xs", BUDGET, blend=blend_b))
    assert rerun.exit_code == 0, rerun.output
    assert "skip  " in rerun.output and "done  " not in rerun.output
    assert _run_ids(runs) == ids
    # a blend that means something else is another run
    other = workspace.make_blend("mix", "natural=0.5,synth=0.5", tokens=40_000, seq_length=64)
    planned = invoke(sweep_args(workspace, runs, "tiny-xs", BUDGET, "--dry-run", blend=other))
    assert planned.exit_code == 0 and len(_run_ids(runs)) == len(ids) + 1


def test_seeds_are_separate_runs_of_one_recipe(workspace, tmp_path):
    runs = tmp_path / "runs"
    result = invoke(sweep_args(workspace, runs, "tiny-xs", BUDGET, "--seeds", "1,2"))
    assert result.exit_code == 0, result.output
    records = list(_results(runs).values())
    assert sorted(r["seed"] for r in records) == [1, 2]
    assert len({r["recipe_hash"] for r in records}) == 1  # same training recipe
    assert records[0]["loss"] != records[1]["loss"]  # other initialisation, other data order
    bad = invoke(sweep_args(workspace, runs, "tiny-xs", BUDGET, "--seeds", "1,x"))
    assert bad.exit_code == 2 and "--seeds" in bad.output and "'1,x'" in bad.output  # a usage error


def test_added_eval_domain_is_scored_without_retraining(workspace, tmp_path):
    runs = tmp_path / "runs"
    assert invoke(sweep_args(workspace, runs, "tiny-xs", BUDGET, evals=("wiki",))).exit_code == 0
    (run_dir,) = [p.parent for p in runs.glob("*/results.json")]
    before = json.loads((run_dir / "results.json").read_text())
    assert before["eval_domains"] == ["wiki"]
    checkpoint_stamp = (run_dir / CHECKPOINT).stat().st_mtime_ns

    rerun = invoke(sweep_args(workspace, runs, "tiny-xs", BUDGET))  # wiki and news
    assert rerun.exit_code == 0, rerun.output
    assert "score " in rerun.output and "run   " not in rerun.output
    after = json.loads((run_dir / "results.json").read_text())
    assert after["eval_domains"] == ["news", "wiki"]
    assert after["train_loss_curve"] == before["train_loss_curve"]  # not retrained
    assert after["eval"]["wiki"] == before["eval"]["wiki"]
    assert (run_dir / CHECKPOINT).stat().st_mtime_ns == checkpoint_stamp
    assert json.loads((run_dir / "run.json").read_text())["eval_domains"].keys() == {"wiki", "news"}

    # the same run trained with both domains from the start scores news identically
    fresh = tmp_path / "fresh"
    assert invoke(sweep_args(workspace, fresh, "tiny-xs", BUDGET)).exit_code == 0
    (reference,) = _results(fresh).values()
    assert after["eval"]["news"]["loss"] == reference["eval"]["news"]["loss"]
    assert after["loss"] == reference["loss"]


def test_two_jobs_give_the_serial_losses(workspace, tmp_path):
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    budgets = f"{BUDGET},15360"
    one = invoke(sweep_args(workspace, serial, "tiny-xs", budgets, "--jobs", "1", "--threads", "1"))
    two = invoke(sweep_args(workspace, parallel, "tiny-xs", budgets, "--jobs", "2"))
    assert one.exit_code == 0, one.output
    assert two.exit_code == 0, two.output
    assert two.output.count("done  ") == 2
    a, b = _results(serial), _results(parallel)
    assert sorted(a) == sorted(b) and len(a) == 2
    for run_id in a:
        assert a[run_id]["train_loss_curve"] == b[run_id]["train_loss_curve"]
        assert a[run_id]["eval"] == b[run_id]["eval"]
        assert b[run_id]["torch_threads"] == 1
