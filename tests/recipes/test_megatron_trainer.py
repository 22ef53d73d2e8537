"""The megatron-core backend on real megatron-core over gloo, launched by torchrun.

- TP=2, PP=2 and DP=2 train TP=1's model: the same initial weights (layout-independent init) and
  batches give the same losses to 1e-5, and the same evaluation scores, on every rank;
- a run killed with SIGKILL mid-training and started again ends with the uninterrupted losses;
- a run killed at TP=2 resumes at TP=1 (megatron's distributed checkpoints reshard) and ends with
  the uninterrupted losses.
(The time budget and stop signals are tested through the entry: test_megatron_entry.py.)
"""

from __future__ import annotations

import pytest

from tests.recipes.megatron_launch import STEPS, launch, launch_and_kill, losses, make_run, max_difference

pytestmark = pytest.mark.timeout(900)

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def reference(workspace, tmp_path_factory) -> dict:
    """The uninterrupted TP=1 run, evaluated."""
    run_dir = tmp_path_factory.mktemp("megatron_tp1")
    make_run(run_dir, workspace)
    [result] = launch(run_dir, run_dir / "out", 1, 1, 1, "--evaluate")
    return result


def test_reference_run_trains_and_scores(reference):
    curve = losses(reference)
    assert reference["finished"] and reference["steps_done"] == STEPS
    assert [step for step, _ in reference["loss_curve"]] == list(range(1, STEPS + 1))
    assert sum(curve[-5:]) / 5 < curve[0] - 1.0  # it learns the Markov text (ln 300 = 5.7 at the start)
    assert set(reference["eval"]) == {"wiki", "news"}
    for score in reference["eval"].values():
        assert score["tokens"] == score["samples"] * 64 and score["loss"] < curve[0]


@pytest.mark.parametrize("tp, pp, dp", [(2, 1, 1), (1, 2, 1), (1, 1, 2)], ids=["TP2", "PP2", "DP2"])
def test_parallel_layouts_give_tp1_losses(workspace, tmp_path, reference, tp, pp, dp):
    run_dir = tmp_path / "run"
    make_run(run_dir, workspace, tensor_parallel=tp, pipeline_parallel=pp, data_parallel=dp)
    results = launch(run_dir, run_dir / "out", tp * pp * dp, tp, pp, "--evaluate")
    for result in results:  # every rank returns the same, and it is TP=1's
        assert result["loss_curve"] == results[0]["loss_curve"] and result["eval"] == results[0]["eval"]
        assert result["train_time_s"] == results[0]["train_time_s"]
    assert max_difference(losses(results[0]), losses(reference)) < TOLERANCE
    for domain, score in reference["eval"].items():
        assert abs(results[0]["eval"][domain]["loss"] - score["loss"]) < TOLERANCE
        assert results[0]["eval"][domain]["tokens"] == score["tokens"]


def test_sigkill_mid_training_then_resume_ends_with_uninterrupted_losses(workspace, tmp_path, reference):
    run_dir = tmp_path / "run"
    make_run(run_dir, workspace)
    killed_at = launch_and_kill(run_dir, run_dir / "killed", after_step=10)
    assert 10 <= killed_at < STEPS
    [resumed] = launch(run_dir, run_dir / "out", 1, 1, 1, "--evaluate")
    assert resumed["finished"] and resumed["steps_done"] == STEPS
    assert resumed["train_time_s"] > 0 and [s for s, _ in resumed["loss_curve"]] == list(range(1, STEPS + 1))
    assert max_difference(losses(resumed), losses(reference)) < 1e-6
    for domain, score in reference["eval"].items():
        assert abs(resumed["eval"][domain]["loss"] - score["loss"]) < 1e-6


def test_checkpoint_written_at_tp2_resumes_at_tp1(workspace, tmp_path, reference):
    run_dir = tmp_path / "run"
    make_run(run_dir, workspace, tensor_parallel=2)
    killed_at = launch_and_kill(run_dir, run_dir / "killed", after_step=10, ranks=2, tp=2)
    assert 10 <= killed_at < STEPS
    # resumed at TP=1 from the TP=2 checkpoint: megatron reshards model and optimizer state
    [resumed] = launch(run_dir, run_dir / "out", 1, 1, 1)
    assert resumed["finished"] and resumed["steps_done"] == STEPS
    assert [s for s, _ in resumed["loss_curve"]] == list(range(1, STEPS + 1))
    assert max_difference(losses(resumed), losses(reference)) < TOLERANCE
