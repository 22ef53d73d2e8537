"""The array script of synthscale.slurm, rendered by NeMo-Run and run by the local Slurm cluster.

The script is submitted as written (`sbatch sbatch.sh`, as a user does after `--dry-run`), with
a task that makes progress on its first attempt and completes on its second:
  - it requeues itself on a cluster where jobs are not requeueable by default (JobRequeue=0): the
    script carries `--requeue` itself; and only itself, not the other tasks of its array (the
    last task's SLURM_JOB_ID is the array's id);
  - when Slurm refuses the requeue, the task fails loudly (exit 3, stderr, a report), never ends
    as if it had been requeued;
  - every attempt gets SYNTHSCALE_JOB_START, the job's start as Slurm accounts it.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest

from synthscale import slurm

TASK = """\
n=$(( $(cat "$SYNTHSCALE_ITEM/attempts" 2>/dev/null || echo 0) + 1 ))
echo $n > "$SYNTHSCALE_ITEM/attempts"
echo "$SYNTHSCALE_JOB_START $(date +%s)" > "$SYNTHSCALE_ITEM/start.$n"
echo "step $n" > "$SYNTHSCALE_ITEM/progress"
sleep 3  # the tasks overlap
if [ $n -ge $(cat "$SYNTHSCALE_ITEM/needs") ]; then touch "$SYNTHSCALE_ITEM/done"; fi
"""


def _array_script(folder: Path, items: list[Path]) -> Path:
    """The sbatch script synthscale.slurm and NeMo-Run write for a 1-task-per-item array (no image),
    as NeMo-Run leaves it in the job folder, for resubmission by hand."""
    run = slurm.import_nemo_run(folder / slurm.NEMO_RUN_DIR)
    settings = slurm.SlurmSettings(account="test", time="10")
    list_file = slurm.write_item_list(folder / "items.txt", [str(i) for i in items])
    setup = "\n".join([
        slurm.item_lines(list_file),
        slurm.requeue_lines('[ -f "$SYNTHSCALE_ITEM/done" ]', 'cat "$SYNTHSCALE_ITEM/progress" 2>/dev/null',
                            settings.max_requeues, report_file='"$SYNTHSCALE_ITEM/stopped.txt"'),
    ])
    executor = slurm.slurm_executor(run, settings, array=slurm.array_spec(len(items)), setup_lines=setup)
    # rendered into the folders a real submission uses (NEMORUN_HOME/experiments/<title>/<id>/<task>)
    name = "h1script_test"
    experiment = folder / slurm.NEMO_RUN_DIR / "experiments" / name.rpartition("_")[0] / name
    text = slurm.render_script(run, executor, run.Script(inline=TASK), name, experiment)
    script = folder / "sbatch.sh"
    script.write_text(text)
    return script


def _items(folder: Path, **needs: int) -> list[Path]:
    items = []
    for name, attempts in needs.items():
        (folder / name).mkdir()
        (folder / name / "needs").write_text(f"{attempts}\n")
        items.append(folder / name)
    return items


def _report(item: Path) -> str:
    return (item / "stopped.txt").read_text() if (item / "stopped.txt").exists() else ""


def _sbatch(cluster, script: Path, *options: str) -> str:
    return cluster.run("sbatch", "--parsable", *options, str(script)).stdout.strip().split(";")[0]


def _wait(cluster, job: str, timeout: float = 180) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while cluster.run("squeue", "--noheader", "--array", "-j", job, check=False).stdout.strip():
        assert time.monotonic() < deadline, f"job {job} still queued after {timeout} s"
        time.sleep(1)
    listed = cluster.run("sacct", "--noheader", "--parsable2", "--allocations", "-j", job,
                         "--format=JobID,State,ExitCode,Start")
    return {row[0]: row[1:] for row in (line.split("|") for line in listed.stdout.splitlines())}


@pytest.mark.timeout(300)
def test_the_script_requeues_its_task_alone_and_exports_the_job_start(slurm_cluster, tmp_path):
    once, twice = _items(tmp_path, once=1, twice=2)  # attempts each needs
    script = _array_script(tmp_path, [once, twice])
    job = _sbatch(slurm_cluster, script)  # plain sbatch: the cluster's JobRequeue=0 applies
    records = _wait(slurm_cluster, job)
    assert (twice / "done").is_file(), _report(twice) or records
    assert (twice / "attempts").read_text().split() == ["2"]
    assert (once / "attempts").read_text().split() == ["1"]  # not restarted by the other task's requeue
    assert slurm_cluster.restarts(f"{job}_1") == 1 and slurm_cluster.restarts(f"{job}_0") == 0
    assert [r[:2] for r in records.values()] == [["COMPLETED", "0:0"]] * 2
    start = records[f"{job}_1"][2]
    job_start, task_start = map(int, (twice / "start.2").read_text().split())
    accounted = int(datetime.fromisoformat(start).timestamp())  # the second attempt's start
    assert abs(job_start - accounted) <= 2 and job_start <= task_start
    assert not (twice / "stopped.txt").exists()


@pytest.mark.timeout(300)
def test_a_refused_requeue_fails_the_task_loudly(slurm_cluster, tmp_path):
    (item,) = _items(tmp_path, item=2)
    script = _array_script(tmp_path, [item])
    job = _sbatch(slurm_cluster, script, "--no-requeue")  # the command line wins over the script
    records = _wait(slurm_cluster, job)
    (state, exit_code, _), = records.values()
    assert (state, exit_code) == ("FAILED", "3:0")  # not COMPLETED as if requeued
    assert (item / "attempts").read_text().split() == ["1"] and not (item / "done").exists()
    report = (item / "stopped.txt").read_text()
    assert "scontrol requeue" in report and "failed" in report
    output = next(tmp_path.rglob(f"sbatch_*_{job}_0.out")).read_text()
    assert "was NOT requeued" in output and "Requested operation is presently disabled" in output


@pytest.mark.timeout(120)
def test_squeue_is_asked_per_array_task(slurm_cluster, tmp_path):
    """`active_array_tasks` lists each queued or running task of an array (squeue shows a pending
    array as one line `ID_[1-3%1]` without --array), and says when squeue cannot answer."""
    name = f"h1-tasks-{tmp_path.name}-{time.time_ns()}"
    job = slurm_cluster.run("sbatch", "--parsable", "-A", "test", "-J", name, "--array=0-3%1", "-o", "/dev/null",
                            "--wrap", "sleep 300").stdout.strip()
    try:
        assert slurm.active_array_tasks([name, "another-job"]) == {(name, task) for task in range(4)}
        slurm_cluster.run("scancel", f"{job}_2")
        assert slurm.active_array_tasks([name]) == {(name, 0), (name, 1), (name, 3)}
    finally:
        slurm_cluster.run("scancel", job)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PATH", str(tmp_path))  # not a Slurm machine
        with pytest.raises(slurm.QueueUnavailable, match="squeue not found"):
            slurm.active_array_tasks([name])
