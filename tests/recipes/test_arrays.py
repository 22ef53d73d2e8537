"""A Bridge sweep on Slurm: job arrays grouped by resources, completed runs left out on a rerun,
runs whose array task squeue still lists left alone (files untouched, per task, their layout
frozen), nothing submitted when squeue cannot tell, every check before anything is written, and
the generated sbatch script's requeue logic run for real with fake `srun` and `scontrol`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from recipes.results import REQUIRED_KEYS
from recipes.run_spec import RunSpec
from synthscale import slurm
from tests.recipes.helpers import invoke, paper_blend


@pytest.fixture(scope="module")
def blend_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("arrays")
    return paper_blend(root / "hq_33.yaml", root / "data")


def _sweep(workspace, blend: Path, runs: Path, sizes: str, tokens: str, *extra: str, exit_code: int = 0) -> str:
    args = ["sweep", "--sizes", sizes, "--tokens", tokens, "--blends", str(blend), "--eval",
            f"wiki={workspace.prefixes['eval_wiki']}", "--backend", "bridge", "--executor", "slurm",
            "--slurm-account", "acct", "--gpus-per-node", "8", "--output", str(runs), "--dry-run", *extra]
    result = invoke(args)
    assert result.exit_code == exit_code, result.output
    return result.output


def _arrays(runs: Path) -> dict[str, list[str]]:
    return {a.name: (a / "runs.txt").read_text().split() for a in sorted((runs / "_arrays").iterdir())}


def _complete(run_dir: Path) -> None:
    """A results.json scoring the run's domains as its run.json defines them (as an entry would)."""
    from recipes.results import identity_record, requested_definition

    spec = RunSpec.load(run_dir)
    definition = requested_definition(spec)
    record = {key: None for key in REQUIRED_KEYS} | {
        "run_id": spec.run_id, "eval_identity": identity_record(definition),
        "eval": {d: {"loss": 3.0, "tokens": definition[d]["tokens"]} for d in definition}}
    (run_dir / "results.json").write_text(json.dumps(record))


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under a folder: its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file()}


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
# fake squeue: lists the "job-name task-id" lines in $FAKE_QUEUE, whatever the filter; FAKE_SQUEUE_RC fails it
if [ -n "$FAKE_SQUEUE_RC" ]; then echo "slurm_load_jobs error: Unable to contact slurm controller" >&2; exit "$FAKE_SQUEUE_RC"; fi
[ -f "$FAKE_QUEUE" ] && cat "$FAKE_QUEUE"
exit 0
"""


@pytest.fixture
def submitted(workspace, blend_file, tmp_path, monkeypatch):
    """A dry-run sweep of two 1B runs, its array marked submitted, and a fake squeue on PATH:
    (runs folder, array's job name, run folders in task order, queue file)."""
    from recipes.arrays import mark_submitted

    runs = tmp_path / "runs"
    _sweep(workspace, blend_file, runs, "1B", "5B,10B")
    (array,) = (runs / "_arrays").iterdir()
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
    return runs, job_name, (array / "runs.txt").read_text().split(), queue


def test_active_array_tasks_reads_each_form_of_squeue_task_ids(tmp_path, monkeypatch):
    """squeue's `%K`: one task id, or the range set of an array not yet split (`[5-7,9]%2`,
    `[10-11%1]`); `N/A` for a job that is no array, and other jobs' lines are not this job's tasks."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text(FAKE_SQUEUE)
    (bin_dir / "squeue").chmod(0o755)
    queue = tmp_path / "queue.txt"
    queue.write_text("sweep-a 3\nsweep-a [5-7,9]%2\nsweep-a [10-11%1]\nsweep-a N/A\nsweep-b 4\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_QUEUE", str(queue))
    assert slurm.active_array_tasks(["sweep-a"]) == {("sweep-a", t) for t in (3, 5, 6, 7, 9, 10, 11)}
    assert slurm.active_array_tasks(["sweep-a", "sweep-b"]) == {("sweep-a", t) for t in (3, 5, 6, 7, 9, 10, 11)} | {
        ("sweep-b", 4)}


def test_a_rerun_leaves_out_runs_whose_array_task_slurm_still_lists(workspace, blend_file, submitted):
    runs, job_name, run_dirs, queue = submitted
    queue.write_text(f"{job_name} 0\n{job_name} 1\n")  # both tasks queued or running: nothing submitted
    output = _sweep(workspace, blend_file, runs, "1B", "5B,10B")
    assert sorted(output.count(f"queued {Path(r).name}") for r in run_dirs) == [1, 1]
    assert "would submit" not in output and len(_arrays(runs)) == 1

    queue.write_text(f"{job_name} 1\n")  # task 0 finished or died, task 1 still runs: per task, not per array
    output = _sweep(workspace, blend_file, runs, "1B", "5B,10B")
    assert f"queued {Path(run_dirs[1]).name}" in output and f"queued {Path(run_dirs[0]).name}" not in output
    new = {n: r for n, r in _arrays(runs).items()}
    assert sorted(len(r) for r in new.values()) == [1, 2] and [run_dirs[0]] in new.values()

    queue.write_text("")  # gone from the queue without finishing: submitted again
    output = _sweep(workspace, blend_file, runs, "1B", "5B,10B")
    assert "would submit" in output and "queued " not in output


def test_a_rerun_touches_no_file_of_a_queued_run_and_refuses_another_layout_for_it(workspace, blend_file,
                                                                                  submitted):
    runs, job_name, run_dirs, queue = submitted
    queue.write_text(f"{job_name} 0\n{job_name} 1\n")
    before = {r: _snapshot(Path(r)) for r in run_dirs}
    # another evaluation cap would rewrite run.json and the eval YAMLs: not under a queued task
    output = _sweep(workspace, blend_file, runs, "1B", "5B,10B", "--eval-max-tokens", "300000")
    assert output.count("queued ") == 2 and "would submit" not in output
    assert {r: _snapshot(Path(r)) for r in run_dirs} == before

    # another layout for a queued run: refused by name, both layouts named, nothing written
    sweeps = sorted((runs / "_sweeps").iterdir())
    output = _sweep(workspace, blend_file, runs, "1B", "5B,10B", "--nodes", "2", exit_code=1)
    for run_dir in run_dirs:
        assert f"run {Path(run_dir).name} is in Slurm's queue ({Path(_arrays(runs).popitem()[0]).name}" in output \
            or f"run {Path(run_dir).name} is in Slurm's queue" in output
    assert "TP 1 x PP 1 x DP 8 on 1 node(s) x 8 ranks" in output and "TP 1 x PP 1 x DP 16 on 2 node(s) x 8 ranks" in output
    assert {r: _snapshot(Path(r)) for r in run_dirs} == before and sorted((runs / "_sweeps").iterdir()) == sweeps


def test_an_unfinished_run_keeps_its_layout(workspace, blend_file, submitted):
    runs, _, run_dirs, queue = submitted
    queue.write_text("")  # not queued any more, but it trained: its checkpoints are at TP 1
    (Path(run_dirs[0]) / "checkpoints").mkdir()
    (Path(run_dirs[0]) / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("100")
    before = _snapshot(Path(run_dirs[0]))
    output = _sweep(workspace, blend_file, runs, "1B", "5B,10B", "--tensor-parallel", "2", exit_code=1)
    assert f"run {Path(run_dirs[0]).name} is unfinished" in output and "TP 2 x PP 1 x DP 4" in output
    assert f"run {Path(run_dirs[1]).name}" not in output  # never started: its layout may change
    assert _snapshot(Path(run_dirs[0])) == before


def test_without_an_answer_from_squeue_nothing_is_submitted_unless_forced(workspace, blend_file, submitted,
                                                                         monkeypatch):
    runs, _, run_dirs, _ = submitted
    before = _snapshot(runs)
    monkeypatch.setenv("FAKE_SQUEUE_RC", "1")
    output = _sweep(workspace, blend_file, runs, "1B", "5B,10B", exit_code=1)
    assert "squeue failed (exit 1): slurm_load_jobs error" in output and "--force" in output
    assert output.strip().splitlines()[-1].startswith("Error: ") and "would submit" not in output
    assert _snapshot(runs) == before  # no run folder, array or config record written

    with monkeypatch.context() as no_slurm:
        no_slurm.setenv("PATH", str(runs / "no-such-bin"))  # no squeue at all
        output = _sweep(workspace, blend_file, runs, "1B", "5B,10B", exit_code=1)
    assert "squeue not found" in output and _snapshot(runs) == before

    output = _sweep(workspace, blend_file, runs, "1B", "5B,10B", "--force")
    assert "warning: squeue failed" in output and "--force: every incomplete run is launched again" in output
    assert "would submit" in output and len(list((runs / "_arrays").iterdir())) == 1  # the same runs: the same array


def test_every_check_runs_before_anything_is_written(workspace, blend_file, tmp_path):
    """A complete run that cannot be scored on a new domain (no final checkpoint) and a run whose
    new domain Bridge cannot batch refuse the sweep before any run folder is rewritten (the first
    run in plan order was rewritten before the error); with its final checkpoint, a complete run
    is scored again by its entry."""
    runs = tmp_path / "runs"
    _sweep(workspace, blend_file, runs, "1B", "5B,10B")
    (array,) = (runs / "_arrays").iterdir()
    first, second = (Path(r) for r in (array / "runs.txt").read_text().split())
    _complete(second)
    before = _snapshot(runs)
    output = _sweep(workspace, blend_file, runs, "1B", "5B,10B", "--eval", f"news={workspace.prefixes['eval_news']}",
                    exit_code=1)
    assert f"run {second.name} is complete but must be scored on news" in output and "names iteration None" in output
    assert f"run {first.name}: eval domain 'news': its evaluation set has" in output  # 8 data-parallel ranks
    assert _snapshot(runs) == before  # the first run's run.json still without news, no config record

    spec = RunSpec.load(second)
    (second / "checkpoints").mkdir()
    (second / "checkpoints" / "latest_checkpointed_iteration.txt").write_text(str(spec.plan.train_iters))
    output = _sweep(workspace, blend_file, runs, "1B", "5B,10B", "--eval", f"wiki2={workspace.prefixes['eval_wiki']}")
    assert f"would score  {second.name}" in output and "on wiki2 (completed; no retraining), by its bridge entry" in output
    assert set(RunSpec.load(second).eval_domains) == {"wiki", "wiki2"} and (second / "bridge" / "eval_wiki2.yaml").is_file()
    assert json.loads((second / "results.json").read_text())["eval"].keys() == {"wiki"}  # kept until scored
    assert (second / "sweep.config.yaml").read_bytes() == before[f"{second.name}/sweep.config.yaml"][0]  # its config kept
    assert _arrays(runs) == {array.name: [str(first), str(second)]}  # both launched again: the same array


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


def test_no_progress_or_too_many_requeues_stops_the_chain(array_script, tmp_path, workspace, blend_file):
    script, run_dirs = array_script
    done, log = _run_script(script, tmp_path, "nothing", rc=1)  # a crash before any checkpoint
    assert done.returncode == 1 and not any(line.startswith("requeue") for line in log)
    assert "made no progress" in done.stdout
    # why it stopped is kept in the run folder (never in /dev/null, which stays the device), and the rerun says it
    report = Path(run_dirs[1]) / "slurm-stopped.txt"
    assert "incomplete and made no progress in this attempt (exit 1)" in report.read_text()
    assert Path("/dev/null").is_char_device()
    assert "rm -f /dev/null" not in slurm.requeue_lines("true", "true", 1)  # without a report file (generation's)
    output = _sweep(workspace, blend_file, Path(run_dirs[1]).parent, "1B", "5B,10B", "--slurm-max-requeues", "3")
    assert f"{Path(run_dirs[1]).name} stopped in Slurm before: job " in output and "made no progress" in output
    done, log = _run_script(script, tmp_path, "progress", restart_count=3)
    assert not any(line.startswith("requeue") for line in log) and "after 3 requeues" in done.stdout


def test_an_array_task_beyond_the_run_list_fails(array_script, tmp_path):
    script, _ = array_script
    done, log = _run_script(script, tmp_path, "progress", task_id=5)
    assert done.returncode == 2 and not any(line.startswith("srun") for line in log)
