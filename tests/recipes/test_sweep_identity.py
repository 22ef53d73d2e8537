"""What a sweep is keyed on, and what a rerun does: run ids from the blend's meaning (a blend
regenerated from the same inputs keeps them), seeds as separate runs of one recipe, an added
evaluation domain scored without retraining, `--jobs 2` giving the serial losses; and the
evaluation identity: recorded in results.json, a rerun with another --eval-max-tokens rescoring
finished runs from their checkpoint, the table's loss only over common domains."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.recipes.helpers import invoke, sweep_args

CHECKPOINT = "checkpoints/latest_checkpointed_iteration.txt"  # megatron's tracker: rewritten by any save

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


def test_results_json_records_its_evaluation_identity(workspace, tmp_path):
    from recipes.evaluation import eval_identity

    runs = tmp_path / "runs"
    assert invoke(sweep_args(workspace, runs, "tiny-xs", BUDGET)).exit_code == 0
    (record,) = _results(runs).values()
    identity = record["eval_identity"]
    assert identity["sha256"] == eval_identity(identity["definition"]) and len(identity["sha256"]) == 64
    for name in ("wiki", "news"):
        manifest = json.loads(Path(workspace.evals[name] + ".manifest.json").read_text())
        scored = identity["definition"][name]
        assert scored["data"] == {"bin_sha256": manifest["bin_sha256"], "idx_sha256": manifest["idx_sha256"]}
        assert (scored["samples"], scored["tokens"]) == (record["eval"][name]["samples"], record["eval"][name]["tokens"])
        assert scored["tokens"] == scored["samples"] * 64 and scored["windows"]["seed"] == record["eval_windows"]["seed"]
    assert identity["definition"]["wiki"]["data"] != identity["definition"]["news"]["data"]


def test_another_eval_max_tokens_rescores_finished_runs_from_their_checkpoint(workspace, tmp_path):
    runs = tmp_path / "runs"
    assert invoke(sweep_args(workspace, runs, "tiny-xs", BUDGET)).exit_code == 0  # --eval-max-tokens 4096
    (run_dir,) = [p.parent for p in runs.glob("*/results.json")]
    before = json.loads((run_dir / "results.json").read_text())
    checkpoint_stamp = (run_dir / CHECKPOINT).stat().st_mtime_ns

    rerun = invoke(sweep_args(workspace, runs, "tiny-xs", BUDGET, "--eval-max-tokens", "2048"))
    assert rerun.exit_code == 0, rerun.output
    assert "score " in rerun.output and "skip " not in rerun.output and "run   " not in rerun.output
    after = json.loads((run_dir / "results.json").read_text())
    assert after["train_loss_curve"] == before["train_loss_curve"]  # not retrained
    assert (run_dir / CHECKPOINT).stat().st_mtime_ns == checkpoint_stamp
    assert {d: after["eval"][d]["samples"] for d in after["eval"]} == {"wiki": 16, "news": 16}
    assert {d: before["eval"][d]["samples"] for d in before["eval"]} == {"wiki": 32, "news": 32}
    assert after["eval_identity"]["sha256"] != before["eval_identity"]["sha256"]
    assert json.loads((run_dir / "run.json").read_text())["eval_max_tokens"] == 2048
    again = invoke(sweep_args(workspace, runs, "tiny-xs", BUDGET, "--eval-max-tokens", "2048"))
    assert "skip  " in again.output and "score " not in again.output  # scored as asked: nothing to do

    # the same run trained with that cap from the start: the same scores and identity
    fresh = tmp_path / "fresh"
    assert invoke(sweep_args(workspace, fresh, "tiny-xs", BUDGET, "--eval-max-tokens", "2048")).exit_code == 0
    (reference,) = _results(fresh).values()
    assert after["eval"] == reference["eval"] and after["loss"] == reference["loss"]
    assert after["eval_identity"] == reference["eval_identity"]


def test_the_table_compares_loss_only_over_common_domains_and_names_the_evaluation(workspace, tmp_path):
    import csv

    runs = tmp_path / "runs"
    assert invoke(sweep_args(workspace, runs, "tiny-xs", BUDGET, evals=("wiki",))).exit_code == 0
    assert invoke(sweep_args(workspace, runs, "tiny-xs", "15360")).exit_code == 0  # another run, wiki and news
    records = _results(runs)
    wide = next(r for r in records.values() if len(r["eval"]) == 2)
    assert wide["loss"] != wide["eval"]["wiki"]["loss"]  # its own loss averages news in
    table = tmp_path / "results.csv"
    result = invoke(["results", str(runs), "--output", str(table)])
    assert result.exit_code == 0, result.output
    rows = {row["run_id"]: row for row in csv.DictReader(open(table, newline=""))}
    for run_id, record in records.items():  # wiki only, for both: like with like
        assert float(rows[run_id]["loss"]) == pytest.approx(record["eval"]["wiki"]["loss"]), run_id
    assert [row["loss_domains"] for row in rows.values()] == ["wiki", "wiki"]
    assert len({row["eval_identity"] for row in rows.values()}) == 1 and "warning" not in result.output
    assert rows[wide["run_id"]]["loss.news"] != "" and float(rows[wide["run_id"]]["loss.news"]) == wide["eval"]["news"]["loss"]

    # a run scored on fewer windows of wiki: another eval_identity, and the table says so
    other = tmp_path / "other"
    assert invoke(sweep_args(workspace, other, "tiny-xs", BUDGET, "--eval-max-tokens", "2048", evals=("wiki",))).exit_code == 0
    (capped,) = other.glob("*/results.json")
    (runs / "capped").mkdir()
    (runs / "capped" / "results.json").write_text(capped.read_text())
    result = invoke(["results", str(runs), "--output", str(table)])
    assert result.exit_code == 0 and "warning: 2 evaluation definitions" in result.output
    identities = [row["eval_identity"] for row in csv.DictReader(open(table, newline=""))]
    assert len(set(identities)) == 2 and sorted(identities.count(i) for i in set(identities)) == [1, 2]

    # runs that share no domain: no loss compares them
    (runs / "news_only").mkdir()
    record = json.loads(capped.read_text())
    record["eval"] = {"news": {"loss": 3.0, "tokens": 1024, "samples": 16}}
    (runs / "news_only" / "results.json").write_text(json.dumps(record))
    refused = invoke(["results", str(runs), "--output", str(table)])
    assert refused.exit_code == 1 and "share no evaluation domain" in refused.output
