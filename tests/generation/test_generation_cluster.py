"""`generation submit`: `generation run --shard i/n` as a NeMo-Run Slurm job array (dry runs), complete
shards left out on resubmission, the merge at the end, and the script's requeue logic run with fake
`srun` and `scontrol`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from click.testing import CliRunner

from generation.cli import main

RUN_ARGS = ["--recipe", "hq", "--model", "/models/Mistral-7B-Instruct-v0.2", "--tensor-parallel-size", "2"]


def _submit(tmp_path: Path, *extra: str, args: list[str] = RUN_ARGS):
    inputs = tmp_path / "docs"
    inputs.mkdir(exist_ok=True)
    (inputs / "a.jsonl").write_text('{"id": "1", "text": "x"}\n')
    command = ["submit", "--shards", "4", "--output", str(tmp_path / "out"), "--slurm-account", "acct", "--dry-run",
               *extra, "--", *args, "--input", str(inputs / "*.jsonl")]
    result = CliRunner().invoke(main, command, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _complete(out: Path, index: int) -> None:
    (out / f"manifest.part-{index:05d}-of-00004.json").write_text(json.dumps({"complete": True}, indent=2))


def test_dry_run_prints_the_array_script(tmp_path):
    output = _submit(tmp_path, "--slurm-time", "08:00:00", "--container-image", "synthscale-vllm:latest")
    folder = tmp_path / "out" / "_slurm"
    script = (folder / "sbatch.sh").read_text()
    assert script in output
    for line in ("#SBATCH --account=acct", "#SBATCH --array=0-3", "#SBATCH --gpus-per-node=2", "#SBATCH --time=08:00:00"):
        assert line in script
    assert "--container-image synthscale-vllm:latest" in script
    for mounted in (tmp_path / "docs", tmp_path / "out"):  # inputs and output mounted in place
        assert f"{mounted}:{mounted}" in script
    assert (folder / "shards.txt").read_text().split() == ["0", "1", "2", "3"]
    (task,) = [p for p in folder.rglob("scripts/*.sh")]
    assert f'--output {tmp_path / "out"} --no-progress --shard "$SYNTHSCALE_ITEM/4"' in task.read_text()
    assert "generation run --recipe hq" in task.read_text()


def test_without_an_image_tasks_run_in_this_python_environment(tmp_path):
    import sys

    script = _submit(tmp_path)
    assert "--container-image" not in script and "--container-mounts" not in script
    assert f"export PATH={Path(sys.executable).parent}:$PATH" in script  # `generation run` of this venv


def test_the_concept_graph_and_inputs_given_as_option_equals_value_are_mounted(tmp_path):
    """SynthLLM levels 2 and 3 read `--graph` inside the container; `--input=X` is the same as
    `--input X` (each was left out of the mounts, so the tasks could not read them)."""
    graph, docs = tmp_path / "graphs" / "g1", tmp_path / "more-docs"
    docs.mkdir()
    args = ["--recipe", "synthllm-l3", "--model", "m", "--graph", str(graph), "--input=" + str(docs / "*.jsonl")]
    command = ["submit", "--shards", "2", "--output", str(tmp_path / "out"), "--slurm-account", "acct", "--dry-run",
               "--container-image", "synthscale-vllm:latest", "--", *args]
    result = CliRunner().invoke(main, command, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    script = (tmp_path / "out" / "_slurm" / "sbatch.sh").read_text()
    mounts = script.split("--container-mounts ", 1)[1].split()[0].split(",")
    assert f"{graph}:{graph}" in mounts
    assert f"{docs}:{docs}" in mounts


def test_a_served_endpoint_needs_no_gpu(tmp_path):
    _submit(tmp_path, args=["--recipe", "qa", "--model", "m", "--backend", "openai", "--base-url", "http://h:8000/v1"])
    assert "--gpus-per-node" not in (tmp_path / "out" / "_slurm" / "sbatch.sh").read_text()


def test_resubmission_leaves_out_complete_shards_then_merges(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    _complete(out, 1)
    output = _submit(tmp_path)
    assert "3 of 4 shards to run (1 complete)" in output and "#SBATCH --array=0-2" in output
    assert (out / "_slurm" / "shards.txt").read_text().split() == ["0", "2", "3"]
    for index in (0, 2, 3):
        _complete(out, index)
    output = _submit(tmp_path)
    assert f"all 4 shards complete: generation merge {out}" in output


FAKE_SRUN = """#!/bin/bash
for a in "$@"; do [ "$a" = hostname ] && { echo 127.0.0.1; exit 0; }; done
tag=part-$(printf %05d "$SYNTHSCALE_ITEM")-of-00004
case "$FAKE_TASK" in
  progress) echo '{"id": "x"}' >> "$OUT/$tag-00000.jsonl" ;;
  complete) printf '{\\n  "complete": true\\n}\\n' > "$OUT/manifest.$tag.json" ;;
esac
exit 0
"""


def test_the_script_requeues_a_shard_until_it_is_complete(tmp_path):
    _submit(tmp_path)
    out = tmp_path / "out"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "scontrol").write_text('#!/bin/bash\n[ "$1" = show ] && echo node1\n[ "$1" = requeue ] && echo "requeue $2" >> "$LOG"\nexit 0\n')
    for name in ("srun", "scontrol"):
        (bin_dir / name).chmod(0o755)

    def attempt(task: str) -> list[str]:
        log = tmp_path / "log.txt"
        log.write_text("")
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log), "OUT": str(out),
               "FAKE_TASK": task, "SLURM_ARRAY_TASK_ID": "2", "SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "n1"}
        done = subprocess.run(["bash", str(out / "_slurm" / "sbatch.sh")], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return log.read_text().split("\n")[:-1]

    assert attempt("progress") == ["requeue 77"]  # shard 2 wrote more output, not complete: requeued
    assert attempt("nothing") == []  # no progress: not requeued
    assert attempt("complete") == []  # complete
