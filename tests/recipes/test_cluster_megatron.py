"""`recipes sweep --backend megatron --executor slurm` on the local Slurm cluster, through NeMo-Run,
with no container (issue 15, section 3.1): the tasks run megatron-core under srun + torchrun in
this Python environment (tests/conftest.py `slurm_cluster`).

One config (tiny-xs, 50 steps: the fewest the recipe allows) is swept three times, into three
folders (the layout is not part of the run id: it does not change the science), each its own job
array: TP=2 on 2 CPU ranks, PP=2 on 2 CPU ranks, TP=1 on one. While the TP=2 task is in Slurm's
queue (pending or running), asking its folder for TP=1 is refused by name and asking for TP=2 again
leaves it alone: neither writes or submits anything. The three complete, each task's log follows
its run, `recipes results` tabulates them, a rerun skips them, and TP=2 and PP=2 reach TP=1's final
training and evaluation losses to 1e-4 (measured here: within 3e-9).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.recipes.helpers import invoke, sweep_args

MEGATRON = ("--backend", "megatron", "--executor", "slurm", "--slurm-account", "test", "--slurm-time", "30")
LAYOUTS = {"tp2": ("--tensor-parallel", "2"), "pp2": ("--pipeline-parallel", "2"), "tp1": ()}


def _sweep(workspace, runs: Path, *extra: str, exit_code: int = 0) -> str:
    result = invoke(sweep_args(workspace, runs, "tiny-xs", "12800", *MEGATRON, *extra, evals=("wiki",)))
    assert result.exit_code == exit_code, result.output
    return result.output


def _array(runs: Path) -> tuple[str, Path]:
    """(the submitted array's job name, its one run folder)."""
    (folder,) = (runs / "_arrays").iterdir()
    (run_dir,) = [Path(line) for line in (folder / "runs.txt").read_text().split()]
    return json.loads((folder / "submitted.json").read_text())["job_name"], run_dir


def _logs(runs: Path) -> str:
    """The array tasks' logs (torchrun prefixes each rank's lines with [defaultRANK]:)."""
    return "".join(p.read_text() for p in sorted((runs / "_arrays").rglob("log-*.out")))


def _files(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and "_sweeps" not in p.parts}


@pytest.mark.timeout(1800)
def test_megatron_tp2_pp2_and_tp1_arrays_complete_with_one_final_loss(workspace, slurm_cluster, tmp_path):
    folders = {name: tmp_path / name for name in LAYOUTS}
    submitted = {}
    for name, layout in LAYOUTS.items():
        output = _sweep(workspace, folders[name], *layout)
        assert "submitted array megatron-" in output, output
        submitted[name] = _array(folders[name])
        if name == "tp2":  # while its task is queued or running, a rerun touches none of its files
            job, run_dir = submitted[name]
            assert slurm_cluster.queued(job), f"{job} not in squeue right after its submission"
            before = _files(folders[name])
            refused = _sweep(workspace, folders[name], "--tensor-parallel", "1", exit_code=1)
            assert f"run {run_dir.name} is in Slurm's queue" in refused, refused  # another layout: refused by name
            assert "with layout TP 2 x PP 1 x DP 1" in refused and "asks for TP 1 x PP 1 x DP 1" in refused
            again = _sweep(workspace, folders[name], *layout)  # its own layout: left alone
            assert f"queued {run_dir.name}" in again and "submitted array" not in again, again
            assert _files(folders[name]) == before

    records, rows = {}, {}
    for name, (job, run_dir) in submitted.items():
        states = slurm_cluster.wait_for_name(job, timeout=900)
        assert set(states.values()) == {"COMPLETED"}, f"{name}: {states}\n{_logs(folders[name])[-3000:]}"
        record = records[name] = json.loads((run_dir / "results.json").read_text())
        layout = record["layout"]
        assert record["backend"] == "megatron" and record["device"] == "cpu" and record["train_segments"] == 1
        assert ((layout["tensor_parallel"], layout["pipeline_parallel"], record["world_size"])
                == {"tp2": (2, 1, 2), "pp2": (1, 2, 2), "tp1": (1, 1, 1)}[name])
        step, loss = record["train_loss_curve"][-1]
        assert step == 50 and f"{run_dir.name}: step 50 of 50, loss {loss:.4f}, checkpoint saved" in _logs(
            folders[name])  # the task's log follows the run (rank 0's line)
        table = tmp_path / f"{name}.csv"
        assert invoke(["results", str(folders[name]), "--output", str(table)]).exit_code == 0
        (row,) = rows[name] = list(csv.DictReader(table.open()))
        assert row["run_id"] == run_dir.name and row["backend"] == "megatron"
        assert float(row["loss"]) == pytest.approx(record["eval"]["wiki"]["loss"], rel=1e-12)
        rerun = _sweep(workspace, folders[name], *LAYOUTS[name])
        assert f"skip  {run_dir.name}" in rerun and "submitted array" not in rerun, rerun

    same = [{k: v for k, v in row.items() if not k.startswith("loss")} for (row,) in rows.values()]
    assert same[0] == same[1] == same[2]  # one config, three layouts: one run id, recipe, evaluation identity
    for name in ("tp2", "pp2"):  # the layout does not change the science
        assert records[name]["train_loss_curve"][-1][1] == pytest.approx(records["tp1"]["train_loss_curve"][-1][1],
                                                                        abs=1e-4)
        assert records[name]["eval"]["wiki"]["loss"] == pytest.approx(records["tp1"]["eval"]["wiki"]["loss"], abs=1e-4)
