"""NeMo-Run launchers dry-run for each executor: Local (torchrun), Slurm (the sbatch script), Docker."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.recipes.helpers import invoke, paper_blend


@pytest.fixture(scope="module")
def paper_blend_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("launch")
    return paper_blend(root / "hq_33.yaml", root / "data")


def _bridge_sweep(workspace, blend: Path, output: Path, executor: str, *extra: str):
    args = ["sweep", "--sizes", "3B", "--tokens", "5B", "--blends", str(blend), "--eval",
            f"wiki={workspace.prefixes['eval_wiki']}", "--backend", "bridge", "--executor", executor,
            "--output", str(output), "--dry-run", *extra]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in output.iterdir() if p.is_dir() and not p.name.startswith("_")]
    return result.output, run_dir


def test_local_torchrun_dry_run(workspace, paper_blend_file, tmp_path):
    output, run_dir = _bridge_sweep(workspace, paper_blend_file, tmp_path / "runs", "local", "--gpus-per-node", "4")
    assert "would run  3B-5B-" in output and "4768 steps" in output
    request = ast.literal_eval((run_dir / "launcher.local.txt").read_text().split("\n", 1)[1])
    (role,) = request["role_params"].values()
    args = role[0]["args"]
    assert args[0] == "torchrun" and args[args.index("--nproc-per-node") + 1] == "4"
    assert args[-4:] == ["-m", "recipes.bridge_entry", "--run-dir", str(run_dir)]
    assert str(run_dir / "nemo_run") in request["log_dir"]  # NEMORUN_HOME under the run folder
    assert not (run_dir / "launch.sh").exists()  # one launch path: NeMo-Run
    # 3B on 4 GPUs: TP 1 (41 heads), PP 2, DP 2
    model = yaml.safe_load((run_dir / "bridge" / "train.yaml").read_text())["model"]
    assert (model["tensor_model_parallel_size"], model["pipeline_model_parallel_size"]) == (1, 2)
    assert not (run_dir / "results.json").exists() and not (run_dir / "checkpoints").exists()


def test_slurm_dry_run_prints_the_array_sbatch_script(workspace, paper_blend_file, tmp_path):
    runs = tmp_path / "runs"
    output, run_dir = _bridge_sweep(
        workspace, paper_blend_file, runs, "slurm", "--nodes", "2", "--slurm-account", "acct",
        "--slurm-partition", "batch", "--slurm-time", "12:00:00", "--container-image", "nvcr.io/nvidia/nemo:26.08",
    )
    (array,) = (runs / "_arrays").iterdir()
    script = (array / "sbatch.sh").read_text()
    assert script in output + "\n"  # printed as well as saved
    for line in ("#SBATCH --account=acct", "#SBATCH --partition=batch", "#SBATCH --nodes=2", "#SBATCH --array=0-0",
                 "#SBATCH --gpus-per-node=8", "#SBATCH --time=12:00:00"):
        assert line in script
    assert "--container-image nvcr.io/nvidia/nemo:26.08" in script
    assert f"{paper_blend_file.parent}:{paper_blend_file.parent}" in script  # data and blend mounted in place
    # NeMo-Run's multi-node torchrun: a c10d rendezvous on the head node, one node rank per node
    assert "--rdzv-backend c10d --rdzv-endpoint $head_node_ip:29500" in script
    assert "--nnodes 2 --nproc-per-node 8 --node-rank $SLURM_NODEID" in script
    assert f"-m recipes.bridge_entry --run-list {array / 'runs.txt'} --time-limit 720" in script
    assert (array / "runs.txt").read_text() == f"{run_dir}\n"
    assert str(array / "nemorun" / "experiments") in script  # NeMo-Run's job folder in the array folder
    assert "trap synthscale_requeue EXIT" in script


def test_docker_dry_run(workspace, paper_blend_file, tmp_path):
    _, run_dir = _bridge_sweep(workspace, paper_blend_file, tmp_path / "runs", "docker",
                               "--container-image", "nvcr.io/nvidia/nemo:26.08")
    request = yaml.safe_load((run_dir / "launcher.docker.txt").read_text().split("\n", 1)[1])
    container = request["containers"][0]
    assert container["executor"]["container_image"] == "nvcr.io/nvidia/nemo:26.08"
    assert container["executor"]["runtime"] == "nvidia" and container["executor"]["num_gpus"] == 8
    assert f"{paper_blend_file.parent}:{paper_blend_file.parent}" in container["executor"]["volumes"]
    command = container["command"]
    assert command[0] == "torchrun"
    assert command[command.index("--nproc-per-node") + 1] == "8"
    assert command[-4:] == ["-m", "recipes.bridge_entry", "--run-dir", str(run_dir)]


def test_cpu_backend_on_docker_runs_the_cpu_trainer(workspace, tmp_path):
    from tests.recipes.helpers import sweep_args

    result = invoke(sweep_args(workspace, tmp_path / "runs", "tiny-xs", "20480", "--executor", "docker", "--dry-run"))
    assert result.exit_code == 0, result.output
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/run.json")]
    request = yaml.safe_load((run_dir / "launcher.docker.txt").read_text().split("\n", 1)[1])
    command = request["containers"][0]["command"]
    assert command[-4:] == ["-m", "recipes.cli", "train", str(run_dir)] and "torchrun" not in command


def test_slurm_without_account_is_refused(workspace, paper_blend_file, tmp_path):
    args = ["sweep", "--sizes", "1B", "--tokens", "5B", "--blends", str(paper_blend_file), "--eval",
            f"wiki={workspace.prefixes['eval_wiki']}", "--backend", "bridge", "--executor", "slurm",
            "--output", str(tmp_path / "runs"), "--dry-run"]
    result = invoke(args)
    assert result.exit_code == 1 and "--slurm-account is required" in result.output


def test_bad_layout_is_refused_before_launch(workspace, paper_blend_file, tmp_path):
    args = ["sweep", "--sizes", "3B", "--tokens", "5B", "--blends", str(paper_blend_file), "--eval",
            f"wiki={workspace.prefixes['eval_wiki']}", "--backend", "bridge", "--tensor-parallel", "2",
            "--output", str(tmp_path / "runs"), "--dry-run"]
    result = invoke(args)
    assert result.exit_code == 1 and "tensor_parallel=2 must divide num_attention_heads=41" in result.output
    assert not (tmp_path / "runs").exists()
