"""NeMo-Run launchers dry-run for each executor: Local (torchrun), Slurm (the sbatch script), Docker;
the megatron backend's layouts, torchrun launches and Slurm arrays, and one real TP=2 run."""

from __future__ import annotations

import ast
import json
import sys
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


def test_a_tiny_run_on_docker_is_the_megatron_entry_under_torchrun_on_cpu(workspace, tmp_path):
    """Only a local run of one rank skips torchrun (the sweep's worker processes); in a container
    the same run is megatron's entry under torchrun, one CPU rank, no GPU asked for."""
    from tests.recipes.helpers import sweep_args

    result = invoke(sweep_args(workspace, tmp_path / "runs", "tiny-xs", "20480", "--executor", "docker", "--dry-run"))
    assert result.exit_code == 0, result.output
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/run.json")]
    request = yaml.safe_load((run_dir / "launcher.docker.txt").read_text().split("\n", 1)[1])
    container = request["containers"][0]
    command = container["command"]
    assert command[0] == "torchrun" and command[command.index("--nproc-per-node") + 1] == "1"
    assert command[-4:] == ["-m", "recipes.megatron.entry", "--run-dir", str(run_dir)]
    assert "nvidia" not in json.dumps(request)


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


def _megatron_sweep(workspace, runs: Path, *extra: str, exit_code: int = 0) -> str:
    from tests.recipes.helpers import sweep_args

    result = invoke(sweep_args(workspace, runs, "tiny-xs", "12800", "--backend", "megatron", *extra))
    assert result.exit_code == exit_code, result.output
    return result.output


def test_megatron_local_dry_run_is_torchrun_over_the_layouts_ranks(workspace, tmp_path):
    runs = tmp_path / "runs"
    _megatron_sweep(workspace, runs, "--tensor-parallel", "2", "--dry-run")
    (run_dir,) = [p.parent for p in runs.glob("*/run.json")]
    spec = json.loads((run_dir / "run.json").read_text())
    assert spec["backend"] == "megatron" and spec["recipe"]["name"] == "cpu-tiny"  # tiny shapes: the CPU recipe
    assert spec["layout"] == {"tensor_parallel": 2, "pipeline_parallel": 1, "data_parallel": 1, "micro_batch_size": 4,
                              "num_nodes": 1, "gpus_per_node": 2, "world_size": 2}
    request = ast.literal_eval((run_dir / "launcher.local.txt").read_text().split("\n", 1)[1])
    (role,) = request["role_params"].values()
    args = role[0]["args"]
    assert args[0] == "torchrun" and args[args.index("--nproc-per-node") + 1] == "2"
    assert args[-4:] == ["-m", "recipes.megatron.entry", "--run-dir", str(run_dir)]
    assert role[0]["env"]["PATH"].startswith(str(Path(sys.executable).parent))  # torchrun of this environment

    # the world size is nodes x ranks per node = TP x PP x DP
    _megatron_sweep(workspace, tmp_path / "dp2", "--tensor-parallel", "2", "--gpus-per-node", "4",
                    "--micro-batch-size", "2", "--dry-run")
    (spec,) = [json.loads(p.read_text()) for p in (tmp_path / "dp2").glob("*/run.json")]
    assert (spec["layout"]["data_parallel"], spec["layout"]["world_size"]) == (2, 4)
    # a layout that cannot work is refused by name, before anything is written
    output = _megatron_sweep(workspace, tmp_path / "bad", "--tensor-parallel", "4", "--dry-run", exit_code=1)
    assert "tensor_parallel=4 must divide num_attention_heads=2" in output and not (tmp_path / "bad").exists()
    output = _megatron_sweep(workspace, tmp_path / "bad", "--tensor-parallel", "2", "--gpus-per-node", "4",
                             "--dry-run", exit_code=1)
    assert "global_batch_size=4 must be divisible by micro_batch_size x data_parallel = 4 x 2" in output
    output = _megatron_sweep(workspace, tmp_path / "bad", "--jobs", "2", "--executor", "docker", "--dry-run",
                             exit_code=1)
    assert "--jobs applies to local runs of one rank; docker runs launch one at a time" in output
    retired = invoke(["sweep", "--sizes", "tiny-xs", "--tokens", "12800", "--blends", str(workspace.blend), "--eval",
                      f"wiki={workspace.prefixes['eval_wiki']}", "--backend", "cpu", "--output", str(tmp_path / "bad"),
                      "--dry-run"])
    assert retired.exit_code == 2 and "'cpu' is not one of 'megatron', 'bridge'" in retired.output


def test_megatron_slurm_array_runs_srun_and_torchrun_on_cpu_ranks(workspace, tmp_path):
    runs = tmp_path / "runs"
    output = _megatron_sweep(workspace, runs, "--tensor-parallel", "2", "--executor", "slurm", "--slurm-account", "acct",
                             "--slurm-time", "00:30:00", "--dry-run")
    (array,) = (runs / "_arrays").iterdir()
    assert array.name.startswith("megatron-n1x2cpu-tp2-pp1-t003000-") and "1 nodes x 2 CPU ranks" in output
    script = (array / "sbatch.sh").read_text()
    assert script in output + "\n"
    for line in ("#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=2", "#SBATCH --array=0-0"):
        assert line in script
    assert "--gpus-per-node" not in script  # CPU ranks: no GPU asked for
    command = next(line for line in script.splitlines() if line.startswith("srun ") and "torchrun" in line)
    assert "--nnodes 1 --nproc-per-node 2" in command
    assert command.endswith(f"-m recipes.megatron.entry --run-list {array / 'runs.txt'} --time-limit 30")


def test_megatron_tp2_run_through_nemo_run_locally(workspace, tmp_path):
    """A real run: NeMo-Run's LocalExecutor starts torchrun with 2 ranks, the megatron entry
    trains at TP 2 and writes results.json, which `recipes results` tabulates; a rerun with
    another --eval-max-tokens has the entry score it again from its final checkpoint."""
    runs = tmp_path / "runs"
    _megatron_sweep(workspace, runs, "--tensor-parallel", "2")
    (path,) = runs.glob("*/results.json")
    record = json.loads(path.read_text())
    assert record["backend"] == "megatron" and record["world_size"] == 2 and record["device"] == "cpu"
    assert (record["layout"]["tensor_parallel"], record["layout"]["data_parallel"]) == (2, 1)
    assert len(record["train_loss_curve"]) == 50 and record["train_loss_curve"][-1][1] < record["train_loss_curve"][0][1]
    assert set(record["eval"]) == {"wiki", "news"} and record["eval_identity"]["sha256"]
    table = tmp_path / "results.csv"
    assert invoke(["results", str(runs), "--output", str(table)]).exit_code == 0
    assert "megatron" in table.read_text() and record["run_id"] in table.read_text()

    tracker = path.parent / "checkpoints" / "latest_checkpointed_iteration.txt"
    stamp = tracker.stat().st_mtime_ns
    output = _megatron_sweep(workspace, runs, "--tensor-parallel", "2", "--eval-max-tokens", "2048")
    assert "on news, wiki (completed; no retraining), by its megatron entry" in output
    rescored = json.loads(path.read_text())
    assert {d: e["samples"] for d, e in rescored["eval"].items()} == {"wiki": 16, "news": 16}  # 32 before
    assert rescored["train_loss_curve"] == record["train_loss_curve"] and tracker.stat().st_mtime_ns == stamp
    assert rescored["eval_identity"]["sha256"] != record["eval_identity"]["sha256"]


def test_a_failed_local_launch_fails_the_sweep(workspace, tmp_path, monkeypatch):
    """NeMo-Run reports a failed local run without raising: the sweep checks for results.json."""
    monkeypatch.setenv("SYNTHSCALE_TORCH_THREADS", "zero")  # the entry's ranks inherit it and fail at start-up
    output = _megatron_sweep(workspace, tmp_path / "runs", "--tensor-parallel", "2", exit_code=1)  # torchrun
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/run.json")]
    assert f"{run_dir.name}: its megatron launch ended without results.json" in output
    assert "1 runs did not finish as asked" in output and not (run_dir / "results.json").exists()
