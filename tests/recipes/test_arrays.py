"""A Bridge sweep on Slurm: job arrays grouped by resources, completed runs left out on a rerun,
and the generated sbatch script's requeue logic run for real with fake `srun` and `scontrol`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from recipes.results import REQUIRED_KEYS
from tests.recipes.helpers import invoke, paper_blend


@pytest.fixture(scope="module")
def blend_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("arrays")
    return paper_blend(root / "hq_33.yaml", root / "data")


def _sweep(workspace, blend: Path, runs: Path, sizes: str, tokens: str, *extra: str) -> str:
    args = ["sweep", "--sizes", sizes, "--tokens", tokens, "--blends", str(blend), "--eval",
            f"wiki={workspace.prefixes['eval_wiki']}", "--backend", "bridge", "--executor", "slurm",
            "--slurm-account", "acct", "--gpus-per-node", "8", "--output", str(runs), "--dry-run", *extra]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    return result.output


def _arrays(runs: Path) -> dict[str, list[str]]:
    return {a.name: (a / "runs.txt").read_text().split() for a in sorted((runs / "_arrays").iterdir())}


def _complete(run_dir: Path) -> None:
    record = {key: None for key in REQUIRED_KEYS} | {"eval": {"wiki": {"loss": 3.0, "tokens": 8}}}
    (run_dir / "results.json").write_text(json.dumps(record))


def test_one_array_per_resource_group_and_a_rerun_leaves_complete_runs_out(workspace, blend_file, tmp_path):
    runs = tmp_path / "runs"
    output = _sweep(workspace, blend_file, runs, "1B,3B", "5B,10B")
    arrays = _arrays(runs)
    # 1B (TP1 PP1) and 3B (TP1 PP2) ask for different layouts: two arrays of two runs each
    assert len(arrays) == 2 and sorted(len(r) for r in arrays.values()) == [2, 2]
    assert sorted(n.split("-")[2] for n in arrays) == ["tp1", "tp1"]
    assert {n.split("-")[3] for n in arrays} == {"pp1", "pp2"}
    assert output.count("#SBATCH --array=0-1") == 2 and "sbatch" in output
    one_b = next(r for n, r in arrays.items() if "-pp1-" in n)
    assert all(Path(r).name.startswith("1B-") for r in one_b)

    _complete(Path(one_b[0]))  # one run finished; the others failed or never ran
    output = _sweep(workspace, blend_file, runs, "1B,3B", "5B,10B")
    assert f"skip  {Path(one_b[0]).name}" in output
    pending = [r for rs in _arrays(runs).values() for r in rs]
    new_arrays = {n: r for n, r in _arrays(runs).items() if n not in arrays}
    assert [len(r) for r in new_arrays.values()] == [1] and new_arrays.popitem()[1] == [one_b[1]]
    assert one_b[0] not in [r for n, rs in _arrays(runs).items() if n not in arrays for r in rs]
    assert "#SBATCH --array=0-0" in output and len(pending) == 5  # 4 from the first sweep + the new one


FAKE_SQUEUE = """#!/bin/bash
# fake squeue: lists the job names in $FAKE_QUEUE (one a line), whatever the filter
[ -f "$FAKE_QUEUE" ] && cat "$FAKE_QUEUE"
exit 0
"""


def test_a_rerun_leaves_out_runs_whose_submitted_array_slurm_still_lists(workspace, blend_file, tmp_path,
                                                                      monkeypatch):
    from recipes.arrays import mark_submitted

    runs = tmp_path / "runs"
    _sweep(workspace, blend_file, runs, "1B", "5B,10B")
    (array,) = (runs / "_arrays").iterdir()
    first = (array / "runs.txt").read_text().split()
    mark_submitted(array, (array / "sbatch.sh").read_text())  # as a real submission does
    job_name = json.loads((array / "submitted.json").read_text())["job_name"]
    assert job_name in (array / "sbatch.sh").read_text()

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text(FAKE_SQUEUE)
    (bin_dir / "squeue").chmod(0o755)
    queue = tmp_path / "queue.txt"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_QUEUE", str(queue))

    queue.write_text(f"{job_name}\n")  # still queued or running: its runs are not submitted again
    output = _sweep(workspace, blend_file, runs, "1B", "5B,10B")
    assert sorted(output.count(f"queued {Path(r).name}") for r in first) == [1, 1]
    assert "would submit" not in output and len(_arrays(runs)) == 1

    queue.write_text("")  # gone from the queue without finishing: submitted again
    output = _sweep(workspace, blend_file, runs, "1B", "5B,10B")
    assert "would submit" in output and "queued " not in output

    monkeypatch.setenv("PATH", os.environ["PATH"].replace(f"{bin_dir}:", "", 1))
    if shutil.which("squeue") is None:  # not a Slurm machine: said, and the runs are submitted again
        output = _sweep(workspace, blend_file, runs, "1B", "5B,10B")
        assert "warning: squeue not found" in output and "would submit" in output


FAKE_SRUN = """#!/bin/bash
# fake srun: the head-node lookup answers an address; the task does what FAKE_TASK says
for a in "$@"; do [ "$a" = hostname ] && { echo 127.0.0.1; exit 0; }; done
echo "srun $*" >> "$FAKE_LOG"
case "$FAKE_TASK" in
  progress) mkdir -p "$SYNTHSCALE_ITEM/checkpoints"; echo $((RANDOM + 1)) > "$SYNTHSCALE_ITEM/checkpoints/latest_checkpointed_iteration.txt" ;;
  complete) echo '{}' > "$SYNTHSCALE_ITEM/results.json" ;;
esac
exit "${FAKE_RC:-0}"
"""
FAKE_SCONTROL = """#!/bin/bash
case "$1" in
  show) echo node1 ;;
  requeue) echo "requeue $2" >> "$FAKE_LOG" ;;
esac
"""


@pytest.fixture(scope="module")
def array_script(workspace, blend_file, tmp_path_factory):
    runs = tmp_path_factory.mktemp("requeue") / "runs"
    _sweep(workspace, blend_file, runs, "1B", "5B,10B", "--slurm-max-requeues", "3")
    (array,) = (runs / "_arrays").iterdir()
    return array / "sbatch.sh", (array / "runs.txt").read_text().split()


def _run_script(script: Path, tmp_path: Path, task: str, restart_count: int = 0, rc: int = 0, task_id: int = 1):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "log.txt"
    log.write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log), "FAKE_TASK": task,
           "FAKE_RC": str(rc), "SLURM_ARRAY_TASK_ID": str(task_id), "SLURM_JOB_ID": "4242",
           "SLURM_RESTART_COUNT": str(restart_count), "SLURM_JOB_NODELIST": "node1"}
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    return done, log.read_text().splitlines()


def test_the_array_task_requeues_itself_while_its_run_progresses(array_script, tmp_path):
    script, run_dirs = array_script
    done, log = _run_script(script, tmp_path, "progress")  # stopped at the time limit after a new checkpoint
    assert done.returncode == 0, done.stderr
    assert any("recipes.bridge_entry" in line for line in log if line.startswith("srun"))
    assert log[-1] == "requeue 4242" and f"{run_dirs[1]} incomplete, progress made" in done.stdout


def test_a_complete_run_is_not_requeued(array_script, tmp_path):
    script, run_dirs = array_script
    done, log = _run_script(script, tmp_path, "complete", task_id=0)
    assert done.returncode == 0 and not any(line.startswith("requeue") for line in log)
    assert f"{run_dirs[0]} complete" in done.stdout
    Path(run_dirs[0], "results.json").unlink()


def test_no_progress_or_too_many_requeues_stops_the_chain(array_script, tmp_path):
    script, _ = array_script
    done, log = _run_script(script, tmp_path, "nothing", rc=1)  # a crash before any checkpoint
    assert done.returncode == 1 and not any(line.startswith("requeue") for line in log)
    assert "made no progress" in done.stdout
    done, log = _run_script(script, tmp_path, "progress", restart_count=3)
    assert not any(line.startswith("requeue") for line in log) and "after 3 requeues" in done.stdout


def test_an_array_task_beyond_the_run_list_fails(array_script, tmp_path):
    script, _ = array_script
    done, log = _run_script(script, tmp_path, "progress", task_id=5)
    assert done.returncode == 2 and not any(line.startswith("srun") for line in log)
