"""What of the Bridge entry script runs without the container: its imports, the loss-curve file,
that megatron.bridge is imported nowhere else, and run_bridge's stages with a stand-in for Bridge,
on one process and on two real ranks (torch.distributed over gloo)."""

from __future__ import annotations

import ast
import json
import math
import os
import socket
import subprocess
import sys
import time
import types
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

import recipes
from recipes import bridge_entry
from recipes.bridge_entry import BridgeApi, CheckpointNotFinal, Deadline, run_bridge
from recipes.run_spec import RunSpec
from synthscale.errors import SynthscaleError
from tests.recipes.helpers import invoke, paper_blend


def test_megatron_bridge_is_imported_only_inside_the_entry_functions():
    package = Path(recipes.__file__).parent
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(name.startswith("megatron.bridge") for name in names):
                assert path.name == "bridge_entry.py", f"{path.name} imports megatron.bridge"
        if path.name == "bridge_entry.py":  # only function-level imports: the module loads without Bridge
            for node in tree.body:
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                    assert not (module or "").startswith("megatron"), module


def test_loss_curve_keeps_the_last_value_of_a_step_logged_twice(tmp_path):
    path = tmp_path / "train_loss.jsonl"
    lines = [[1, 5.0], [2, 4.5], [3, 4.4], [2, 4.6], [3, 4.3], [4, 4.1]]  # resumed after step 3
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert bridge_entry._read_curve(path) == [[1, 5.0], [2, 4.6], [3, 4.3], [4, 4.1]]
    assert bridge_entry._read_curve(tmp_path / "missing.jsonl") == []


def test_last_rank_comes_from_the_launcher_environment(monkeypatch):
    monkeypatch.setenv("RANK", "7")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert bridge_entry._is_last_rank()
    monkeypatch.setenv("RANK", "3")
    assert not bridge_entry._is_last_rank()


# --- run_bridge's own logic, with a stand-in for the four Bridge functions it calls -----------------
# The stand-in behaves as Megatron-Bridge 0.6 does where it matters here (read from its source,
# training/train.py and training/setup.py): `on_train_step_end` fires before `train_state.step` is
# incremented; rank 0 writes checkpoints/latest_checkpointed_iteration.txt and iter_<N>; with
# `exit_duration_in_mins` set, training stops once the minutes since pretrain() began exceed it
# (checked after each step), saves a checkpoint and calls sys.exit(0); an evaluation config loads
# nothing when no checkpoint exists (`_should_load_checkpoint` is False) and scores whatever model
# it has; the evaluation loss is on the last pipeline stage (the last rank) only. Each step takes
# `minutes_per_step` of the test's clock `now`. With torch.distributed initialised every training
# step and evaluation makes a collective, and the last rank leaves training after the others (it
# logs the losses).


def _namespace(value):
    if isinstance(value, dict):
        return types.SimpleNamespace(**{k: _namespace(v) for k, v in value.items()})
    return value


def _collective() -> None:
    import torch

    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(torch.ones(1))


def _rank_and_size() -> tuple[int, int]:
    import torch

    if torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class FakeBridge:
    def __init__(self, now: list | None = None, minutes_per_step: float = 0.0, eval_losses: dict | None = None):
        self.calls: list[str] = []
        self.exit_durations: list = []
        self.now = now if now is not None else [0.0]
        self.minutes_per_step = minutes_per_step
        self.eval_losses = eval_losses or {}

    def api(self) -> BridgeApi:
        return BridgeApi(self.from_yaml, self.pretrain, object(), object)

    def from_yaml(self, path):
        return _namespace(yaml.safe_load(Path(path).read_text()))

    def pretrain(self, cfg, forward_step, callbacks):
        checkpoints = Path(cfg.checkpoint.load)
        tracker = checkpoints / "latest_checkpointed_iteration.txt"
        rank, size = _rank_and_size()
        if getattr(cfg.validation, "skip_train", False):
            domain = cfg.dataset.blend_per_split[2][0][0].rsplit("/", 1)[-1].removeprefix("eval_")
            self.calls.append(f"eval:{domain}")
            _collective()
            if rank == size - 1:
                for cb in callbacks:
                    cb.on_test_end(types.SimpleNamespace(total_loss_dict={"lm loss": self.eval_losses.get(domain, 2.5)}))
            return
        start = int(tracker.read_text()) if tracker.is_file() else 0
        limit = getattr(cfg.train, "exit_duration_in_mins", None)
        self.exit_durations.append(limit)
        began, exit_now = self.now[0], False
        state = types.SimpleNamespace(train_state=types.SimpleNamespace(step=start))
        while state.train_state.step < cfg.train.train_iters and not exit_now:
            _collective()
            step = state.train_state.step
            for cb in callbacks:
                cb.on_train_step_end(types.SimpleNamespace(state=state, loss_dict={"lm loss": 10.0 - step / 100}))
            state.train_state.step += 1  # after the callbacks, as Bridge does
            self.now[0] += self.minutes_per_step * 60
            exit_now = bool(limit) and (self.now[0] - began) / 60 > limit
        end = state.train_state.step
        self.calls.append(f"train:{start}-{end}")
        if rank == 0:
            (checkpoints / f"iter_{end:07d}").mkdir(parents=True, exist_ok=True)
            tracker.write_text(str(end))
        if size > 1 and rank == size - 1:
            time.sleep(0.5)
        if exit_now:
            sys.exit(0)


@pytest.fixture()
def bridge_run(workspace, tmp_path, monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "SLURM_PROCID", "SLURM_NTASKS", "SYNTHSCALE_JOB_START"):
        monkeypatch.delenv(name, raising=False)
    blend = paper_blend(tmp_path / "hq_33.yaml", tmp_path / "data", tokens=2 * 10**9)
    args = ["sweep", "--sizes", "100M", "--tokens", "200M", "--blends", str(blend), "--eval",
            f"wiki={workspace.prefixes['eval_wiki']}", "--eval", f"news={workspace.prefixes['eval_news']}",
            "--backend", "bridge", "--gpus-per-node", "1", "--output", str(tmp_path / "runs"), "--dry-run"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir() and not p.name.startswith("_")]
    return run_dir


@pytest.fixture()
def fake_clock(monkeypatch):
    """The test's clock, for the deadline and for the time the stages measure."""
    now = [1_700_000_000.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    return now


def test_evaluation_refuses_without_the_final_checkpoint(bridge_run):
    train_done = bridge_run / "bridge" / "train_done.json"
    train_done.write_text('{"train_time_s": 1.0, "loss_curve": [[1, 5.0]]}')  # says trained, no checkpoint
    fake = FakeBridge()
    with pytest.raises(CheckpointNotFinal, match="no checkpoint to evaluate"):
        run_bridge(bridge_run, api=fake.api())
    assert fake.calls == []  # no evaluation of a random model
    (bridge_run / "checkpoints" / "iter_0000010").mkdir(parents=True)
    (bridge_run / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("10")
    with pytest.raises(CheckpointNotFinal, match="iteration 10, not the final 190"):
        run_bridge(bridge_run, api=fake.api())
    assert fake.calls == [] and not (bridge_run / "results.json").exists()
    evaluation = yaml.safe_load((bridge_run / "bridge" / "eval_wiki.yaml").read_text())
    assert evaluation["checkpoint"]["ckpt_step"] == 190  # Bridge loads the final iteration, no other


def test_curve_steps_run_1_to_n_like_the_cpu_backend_and_results_are_written(bridge_run):
    fake = FakeBridge()
    record = run_bridge(bridge_run, api=fake.api())
    assert fake.calls == ["train:0-190", "eval:wiki", "eval:news"]
    steps = [step for step, _ in record["train_loss_curve"]]
    assert steps == list(range(1, 191))  # Bridge's step counter is 0..189 when the callback fires
    assert set(record["eval"]) == {"wiki", "news"} and record["backend"] == "bridge"
    assert record["eval_windows"]["method"].startswith("megatron-core GPTDataset test split")


def test_training_gets_the_job_time_left_minus_the_margin_and_a_rerun_continues(bridge_run, fake_clock, monkeypatch):
    # the job started 30 minutes before this process (queue to srun, container start, torchrun, imports)
    monkeypatch.setenv("SYNTHSCALE_JOB_START", str(fake_clock[0] - 30 * 60))
    fake = FakeBridge(now=fake_clock, minutes_per_step=1.0)
    deadline = Deadline.for_job(240, clock=lambda: fake_clock[0])
    assert run_bridge(bridge_run, api=fake.api(), deadline=deadline) is None
    # 240 minutes - 30 gone - a 24-minute margin (10% of the limit): Bridge stops after step 187 (> 186 min)
    assert fake.exit_durations == [240 - 30 - 24] and fake.calls == ["train:0-187"]
    assert not (bridge_run / "bridge" / "train_done.json").exists() and not (bridge_run / "results.json").exists()
    monkeypatch.setenv("SYNTHSCALE_JOB_START", str(fake_clock[0]))  # the requeued job
    record = run_bridge(bridge_run, api=fake.api(), deadline=Deadline.for_job(240, clock=lambda: fake_clock[0]))
    assert fake.calls[1:] == ["train:187-190", "eval:wiki", "eval:news"]
    assert [s for s, _ in record["train_loss_curve"]] == list(range(1, 191))


def test_the_command_counts_the_deadline_from_the_job_start(bridge_run, monkeypatch):
    from click.testing import CliRunner

    from recipes import bridge_entry

    fake = FakeBridge()
    monkeypatch.setattr(bridge_entry, "load_bridge_api", fake.api)
    monkeypatch.setenv("SYNTHSCALE_JOB_START", str(time.time() - 29.5 * 60))
    result = CliRunner().invoke(bridge_entry.main, ["--run-dir", str(bridge_run), "--time-limit", "240"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert fake.exit_durations == [int(240 - 29.5 - 24)]  # limit - elapsed since the job started - margin


def test_train_time_and_tokens_per_s_cover_every_segment(bridge_run, fake_clock):
    fake = FakeBridge(now=fake_clock, minutes_per_step=2.0)
    deadline = Deadline(240, clock=lambda: fake_clock[0])  # usable 216 minutes: 109 steps of 2 minutes
    assert run_bridge(bridge_run, api=fake.api(), deadline=deadline) is None
    assert fake.calls == ["train:0-109"]
    record = run_bridge(bridge_run, api=fake.api(), deadline=Deadline(240, clock=lambda: fake_clock[0]))
    assert fake.calls[1] == "train:109-190"
    assert record["train_time_s"] == 190 * 2 * 60  # both segments, not the last one's 81 steps
    assert record["tokens_per_s"] == record["D"] / (190 * 2 * 60)


def test_a_nan_score_is_reported_with_its_domain_and_does_not_wedge_the_run(bridge_run):
    from recipes.arrays import progress_stamp

    def stamp() -> str:  # what the sbatch requeue trap compares before and after an attempt
        env = {**os.environ, "SYNTHSCALE_ITEM": str(bridge_run)}
        return subprocess.run(["sh", "-c", progress_stamp()], env=env, capture_output=True, text=True).stdout

    with pytest.raises(SynthscaleError, match=r"domain 'news' \(loss=nan"):
        run_bridge(bridge_run, api=FakeBridge(eval_losses={"news": math.nan}).api())
    before = stamp()
    fake = FakeBridge(eval_losses={"news": math.nan})
    with pytest.raises(SynthscaleError, match="news"):
        run_bridge(bridge_run, api=fake.api())
    assert fake.calls == ["eval:news"] and stamp() == before  # scored again; no progress for the trap
    fake = FakeBridge()
    record = run_bridge(bridge_run, api=fake.api())
    assert fake.calls == ["eval:news"] and record["eval"]["news"]["loss"] == 2.5


def test_no_evaluation_starts_inside_the_time_margin(bridge_run):
    fake = FakeBridge()
    assert run_bridge(bridge_run, api=fake.api(), stage="train") is None  # trained, not evaluated
    now = [0.0]
    deadline = Deadline(60, 10, clock=lambda: now[0])
    now[0] = 55 * 60  # 5 minutes left, inside the 10-minute margin
    assert run_bridge(bridge_run, api=fake.api(), deadline=deadline) is None
    assert fake.calls == ["train:0-190"]


def test_per_domain_children_run_one_stage_each_and_count_from_the_job_start(bridge_run, monkeypatch):
    fake, stages = FakeBridge(), []

    def child(run_dir, spec, stage, deadline):  # the child process's work, in this process
        stages.append(stage)
        run_bridge(run_dir, api=fake.api(), deadline=deadline, stage=stage)

    monkeypatch.setattr(bridge_entry, "_stage_in_child", child)
    record = run_bridge(bridge_run, eval_process="per-domain")
    assert stages == ["train", "eval:wiki", "eval:news"] and set(record["eval"]) == {"wiki", "news"}
    assert run_bridge(bridge_run, eval_process="per-domain") is None and len(stages) == 3  # complete
    monkeypatch.undo()
    launched = []
    monkeypatch.setattr(bridge_entry.subprocess, "run",
                        lambda command, env: launched.append((command, env)) or subprocess.CompletedProcess(command, 0))
    deadline = Deadline(240, started=1_700_000_000.0)
    bridge_entry._stage_in_child(bridge_run, RunSpec.load(bridge_run), "eval:wiki", deadline)
    ((command, env),) = launched
    assert command[-4:] == ["--stage", "eval:wiki", "--time-limit", "240"]  # the job's limit, not what is left
    assert float(env["SYNTHSCALE_JOB_START"]) == 1_700_000_000.0  # and the job's start


# --- running functions on real ranks ------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def join_rank(rank: int, size: int, port: int) -> None:
    """This process as rank `rank` of a gloo world, with torchrun's environment."""
    import torch

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=size, timeout=timedelta(seconds=30))


def spawn_ranks(worker, args: tuple, size: int = 2, limit_s: float = 180.0) -> None:
    """Run worker(rank, *args) on `size` fresh processes; fail on a rank's error or on a hang."""
    import torch.multiprocessing as mp

    context = mp.start_processes(worker, args=args, nprocs=size, join=False, start_method="spawn")
    give_up = time.monotonic() + limit_s  # a safety net for a hung collective, not a speed check
    while not context.join(timeout=2):
        if time.monotonic() > give_up:
            for process in context.processes:
                process.kill()
            pytest.fail(f"ranks still running after {limit_s:.0f} s: a rank is stuck in a collective")


def _two_rank_bridge(rank: int, run_dir: str, port: int, report: str) -> None:
    join_rank(rank, 2, port)
    outcome = {}
    try:  # the first attempt scores 'news' as NaN
        run_bridge(run_dir, api=FakeBridge(eval_losses={"news": math.nan}).api())
        outcome["error"] = None
    except SynthscaleError as exc:
        outcome["error"] = str(exc)
    fake = FakeBridge()
    outcome["record"] = run_bridge(run_dir, api=fake.api()) is not None
    outcome["calls"] = fake.calls
    Path(report, f"rank{rank}.json").write_text(json.dumps(outcome))
    import torch

    torch.distributed.destroy_process_group()


def test_two_ranks_agree_that_training_is_done_evaluate_together_and_report_a_nan_once(bridge_run, tmp_path):
    spawn_ranks(_two_rank_bridge, (str(bridge_run), free_port(), str(tmp_path)))
    first, last = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    # the last rank (the writer, on the last pipeline stage) reports the NaN, with its domain; rank 0 does not
    assert first["error"] is None and "domain 'news' (loss=nan" in last["error"]
    assert first["calls"] == last["calls"] == ["eval:news"]  # the next attempt scores news again, on both ranks
    assert last["record"] and not first["record"]
    record = json.loads((bridge_run / "results.json").read_text())
    assert record["world_size"] == 2 and set(record["eval"]) == {"wiki", "news"}
    assert [s for s, _ in record["train_loss_curve"]] == list(range(1, RunSpec.load(bridge_run).plan.train_iters + 1))
