"""Local runs of one rank (megatron-core on CPU, in the sweep's worker processes) on a real blend:
the loss falls, results.json and the table, skips, refusals, and `recipes train` resumed after a
real kill (SIGKILL) to the same result as an uninterrupted run."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.recipes.helpers import invoke, sweep_args
from recipes.results import REQUIRED_KEYS, TABLE_COLUMNS
from recipes.shapes import get_shape


@pytest.fixture(scope="module")
def runs(workspace, tmp_path_factory):
    """Two completed tiny-xs runs (80 and 50 steps of 4 x 64 tokens) on the 33%-synthetic blend."""
    output = tmp_path_factory.mktemp("local_runs") / "runs"
    result = invoke(sweep_args(workspace, output, "tiny-xs", "20480,12800", "--jobs", "2"))
    assert result.exit_code == 0, result.output
    assert result.output.count("done  ") == 2
    return output


def _records(runs_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*/results.json"))]


def test_loss_falls_on_a_real_blend(runs, workspace):
    records = {r["D"]: r for r in _records(runs)}
    assert set(records) == {80 * 256, 50 * 256}
    record = records[80 * 256]
    curve = [loss for _, loss in record["train_loss_curve"]]
    assert [s for s, _ in record["train_loss_curve"]] == list(range(1, 81))
    assert math.isclose(curve[0], math.log(300), rel_tol=0.05)  # a fresh model guesses uniformly
    assert sum(curve[-5:]) / 5 < sum(curve[:5]) / 5 - 0.3
    for domain in ("wiki", "news"):
        assert record["eval"][domain]["loss"] < math.log(300) - 0.3
        # 4096 tokens -> 63 windows of 64 -> 32 scored (a multiple of 32, the largest power of two held,
        # so that a Bridge evaluation batch divides it: recipes.evaluation)
        assert record["eval"][domain]["tokens"] == 32 * 64 and record["eval"][domain]["samples"] == 32
    assert record["eval_windows"]["seed"] == 1234 and record["eval_windows"]["seq_length"] == 64
    # the longer run learned more
    assert record["loss"] < records[50 * 256]["loss"]


def test_results_json_schema(runs, workspace):
    for record in _records(runs):
        assert set(REQUIRED_KEYS) <= set(record)
        assert record["model"] == "tiny-xs" and record["N"] == get_shape("tiny-xs").non_embedding_params
        assert record["mixture"] == "hq_33" and record["synthetic_fraction"] == 0.33
        assert record["blend"]["weights"] == {"natural": 0.67, "synth": 0.33}
        assert len(record["blend"]["identity_sha256"]) == 64
        # what the mixture is, from the blend's sources (never from its name)
        assert record["family"] == "synth" and record["generator"] is None  # a corpus no generator wrote
        assert record["blend"]["sources"]["natural"]["role"] == "natural"
        assert record["backend"] == "megatron" and record["seed"] == 1234 and len(record["recipe_hash"]) == 10
        assert record["eval_domains"] == ["news", "wiki"]
        total = sum(d["tokens"] for d in record["eval"].values())
        mean = sum(d["loss"] * d["tokens"] for d in record["eval"].values()) / total
        assert math.isclose(record["loss"], mean)
        assert record["tokens_per_s"] > 0 and record["wall_time_s"] >= record["train_time_s"] > 0
        assert {"torch", "megatron-core"} <= set(record["versions"])
        assert record["layout"]["world_size"] == 1 and record["device"] == "cpu"
        assert record["recipe"]["adam_beta2"] == 0.95 and record["recipe"]["seq_length"] == 64


def test_results_table_csv_and_parquet(runs, tmp_path):
    import pyarrow.parquet as pq

    csv_path, parquet_path = tmp_path / "results.csv", tmp_path / "results.parquet"
    assert invoke(["results", str(runs), "--output", str(csv_path)]).exit_code == 0
    assert invoke(["results", str(runs), "--output", str(parquet_path)]).exit_code == 0
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    expected_columns = list(TABLE_COLUMNS) + ["loss.news", "loss.wiki"]
    assert list(rows[0]) == expected_columns
    by_id = {r["run_id"]: r for r in _records(runs)}
    assert [int(r["D"]) for r in rows] == [12800, 20480]  # sorted by mixture, N, D
    for row in rows:
        record = by_id[row["run_id"]]
        assert float(row["loss"]) == pytest.approx(record["loss"])
        assert float(row["loss.wiki"]) == pytest.approx(record["eval"]["wiki"]["loss"])
        assert int(row["N"]) == record["N"]
    table = pq.read_table(parquet_path)
    assert table.column_names == expected_columns and table.num_rows == 2


def test_rerun_skips_completed_runs(runs, workspace):
    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/results.json")}
    result = invoke(sweep_args(workspace, runs, "tiny-xs", "20480,12800"))
    assert result.exit_code == 0
    assert result.output.count("skip  ") == 2 and "done  " not in result.output
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/results.json")} == stamps


def test_refusals_write_nothing(workspace, tmp_path):
    output = tmp_path / "refused"
    too_few = invoke(sweep_args(workspace, output, "tiny-xs", "4000"))
    assert too_few.exit_code == 1 and "buys 15 train iterations" in too_few.output and "tokens >= 12800" in too_few.output
    # natural has 217,449 tokens: 0.67 x 400,384 needs more than one epoch of it
    repeat = invoke(sweep_args(workspace, output, "tiny-xs", "400000"))
    assert repeat.exit_code == 1
    assert "source 'natural', which has 217449" in repeat.output and "max_epochs=1" in repeat.output
    big = invoke(sweep_args(workspace, output, "1B", "20480", "--recipe", "cpu-tiny"))
    assert big.exit_code == 1 and "shape '1B' needs GPUs and this machine has none" in big.output
    default_seq = [a for a in sweep_args(workspace, output, "tiny-xs", "25600") if a not in ("--seq-length", "64")]
    long_seq = invoke(default_seq)
    assert long_seq.exit_code == 1 and "seq_length=64 but recipe 'cpu-tiny' trains at seq_length=128" in long_seq.output
    assert not output.exists()


TRACKER = Path("checkpoints") / "latest_checkpointed_iteration.txt"  # megatron's


def _train(run_dir: Path, wait: bool = True):
    """`recipes train RUN` in its own process, as a user resumes a run (one torch thread)."""
    env = dict(os.environ, SYNTHSCALE_TORCH_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    command = [sys.executable, "-m", "recipes.cli", "train", str(run_dir), "--json"]
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_resume_after_kill_reaches_the_uninterrupted_result(workspace, tmp_path):
    planned = invoke(sweep_args(workspace, tmp_path / "plan", "tiny-xs", "15360", "--checkpoint-interval", "5",
                                "--dry-run"))
    assert planned.exit_code == 0, planned.output
    (run_dir,) = [p.parent for p in (tmp_path / "plan").glob("*/run.json")]
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    shutil.copytree(run_dir, killed)
    shutil.copytree(run_dir, straight)

    process = _train(killed, wait=False)
    tracker = killed / TRACKER
    deadline = time.monotonic() + 300
    while not tracker.exists():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    step = int(tracker.read_text())
    assert 5 <= step < 60 and step % 5 == 0
    assert not (killed / "results.json").exists()

    resumed = _train(killed)
    uninterrupted = _train(straight)
    assert [s for s, _ in resumed["train_loss_curve"]] == list(range(1, 61))
    for (_, a), (_, b) in zip(resumed["train_loss_curve"], uninterrupted["train_loss_curve"]):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    for domain in ("wiki", "news"):
        assert resumed["eval"][domain]["loss"] == pytest.approx(uninterrupted["eval"][domain]["loss"], rel=1e-5)
    assert int((killed / TRACKER).read_text()) == int((straight / TRACKER).read_text()) == 60
    weights_a, weights_b = _final_weights(killed, tmp_path / "a.pt"), _final_weights(straight, tmp_path / "b.pt")
    assert weights_a.keys() == weights_b.keys() and any(k.startswith("decoder.layers") for k in weights_a)
    for name, tensor in weights_a.items():
        torch.testing.assert_close(tensor, weights_b[name], rtol=1e-5, atol=1e-6, msg=name)


def _final_weights(run_dir: Path, out: Path) -> dict:
    """The tensors of megatron's final distributed checkpoint (PyTorch DCP), read by torch itself."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(run_dir / "checkpoints" / "iter_0000060", out)
    return {k: v for k, v in torch.load(out, weights_only=False).items() if isinstance(v, torch.Tensor)}


def test_peak_lr_override_reaches_the_run_and_its_id(workspace, tmp_path):
    output = tmp_path / "lr"
    assert invoke(sweep_args(workspace, output, "tiny-xs", "20480", "--dry-run")).exit_code == 0
    assert invoke(sweep_args(workspace, output, "tiny-xs", "20480", "--peak-lr", "0.002", "--dry-run")).exit_code == 0
    specs = [json.loads(p.read_text()) for p in sorted(output.glob("*/run.json"))]
    assert len(specs) == 2  # a different learning rate is a different run
    assert sorted(s["recipe"]["peak_lr"] for s in specs) == [0.0003, 0.002]
    bad = invoke(sweep_args(workspace, output, "tiny-xs", "20480", "--peak-lr", "-1"))
    assert bad.exit_code == 2 and "--peak-lr" in bad.output


def test_training_and_evaluation_index_caches_are_the_runs_own(runs, workspace):
    """megatron-core's index caches go to RUN/dataset_cache, for the training blend as well as the
    eval domains: data folders may be read-only and concurrent runs never share a cache file."""
    for run in sorted(p for p in runs.iterdir() if (p / "results.json").exists()):
        cached = [p.name for p in (run / "dataset_cache").rglob("*-description.txt")]
        descriptions = [json.loads(p.read_text()) for p in (run / "dataset_cache").rglob("*-description.txt")]
        train = [d for d in descriptions if d.get("index_split") == "train"]
        assert train, f"{run.name}: no training index cache in its own folder: {cached}"


def test_a_budget_that_fits_by_tokens_but_not_as_megatron_reads_it_is_refused(workspace, tmp_path):
    """weight x D <= tokens held, yet megatron-core (per-sample surplus, seq_length + 1 tokens per
    sample) would start a second epoch of the source: the run is refused before anything is written."""
    import yaml

    from recipes.run_spec import RunRefused, check_blend_for_run
    from data_prep.blend_spec import BlendSpec
    from recipes.recipe import get_recipe, plan_training

    blend = BlendSpec.load(workspace.blend)
    natural = next(s for s in blend.active_sources if s.name == "natural")
    step = 4 * 64  # global batch 4 x seq_length 64
    tokens = int(natural.tokens_available / natural.weight) // step * step  # largest whole-step D by tokens
    assert natural.weight * tokens <= natural.tokens_available  # the naive check lets it through
    recipe = get_recipe("cpu-tiny").with_overrides(seq_length=64, global_batch_size=4, micro_batch_size=4)
    plan = plan_training(tokens, recipe)
    with pytest.raises(RunRefused, match=r"source 'natural'.*megatron-core would read it 1\.0"):
        check_blend_for_run(blend, recipe, plan)
    assert yaml.safe_load(workspace.blend.read_text())  # the blend itself is untouched
