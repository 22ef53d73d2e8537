"""The command line: help is fast and needs no engine, errors are clear, SIGTERM stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from click.testing import CliRunner

from generation.cli import main
from generation.pipeline import run
from generation.run_config import RunConfig
from generation.tiny import sample_text

from genhelpers import PYTHON, EchoBackend, read_outputs, subprocess_env, write_jsonl


def test_help_is_fast_and_imports_no_engine():
    code = ("import sys, time; t = time.time(); from generation.cli import main; "
            "import generation.pipeline, generation.run_config, generation.work_plan, generation.manifest, "
            "generation.backend, generation.backend_vllm, generation.backend_openai, generation.merge; "
            "assert 'vllm' not in sys.modules and 'torch' not in sys.modules and 'transformers' not in sys.modules"
            " and 'httpx' not in sys.modules, sorted(m for m in sys.modules if m.split('.')[0] in "
            "('vllm', 'torch', 'transformers', 'httpx'));"
            "assert not any(m.split('.')[0] in ('data_prep', 'recipes', 'analysis') for m in sys.modules)")
    subprocess.run([PYTHON, "-c", code], check=True, env=subprocess_env())
    started = time.time()
    done = subprocess.run([PYTHON, "-m", "generation", "run", "--help"], capture_output=True, text=True,
                          env=subprocess_env())
    assert done.returncode == 0 and "--shard" in done.stdout and "data_prep tokenize" in done.stdout
    assert time.time() - started < 10


def test_recipes_command_lists_and_shows(tmp_path):
    runner = CliRunner()
    listed = runner.invoke(main, ["recipes"])
    assert listed.exit_code == 0
    assert "textbook" in listed.output and "outline -> chapter x10" in listed.output
    shown = runner.invoke(main, ["recipes", "--show", "qa"])
    assert "Question-answer pairs with corresponding tags" in shown.output
    bad = runner.invoke(main, ["recipes", "--show", "nope"])
    assert bad.exit_code == 2 and "unknown recipe" in bad.output


def test_run_refuses_changed_settings_before_loading_any_engine(tmp_path, tiny_tokenizer):
    write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": sample_text(40)}])
    run(RunConfig(recipe="hq", inputs=[str(tmp_path / "in.jsonl")], output=str(tmp_path / "out"), model="m",
                  quiet=True, filters={"min_tokens": 1}), EchoBackend(tiny_tokenizer))
    result = CliRunner().invoke(main, ["run", "--recipe", "hq", "--input", str(tmp_path / "in.jsonl"),
                                       "--model", "m", "--output", str(tmp_path / "out"), "--seed", "3",
                                       "--min-tokens", "1"])
    assert result.exit_code == 2
    assert "started with other settings" in result.output and "seed: was 0, now 3" in result.output


def test_run_argument_errors(tmp_path):
    runner = CliRunner()
    base = ["run", "--recipe", "hq", "--model", "m", "--output", str(tmp_path / "o")]
    result = runner.invoke(main, base + ["--input", str(tmp_path / "missing*.jsonl")])
    assert result.exit_code == 2 and "no input matches" in result.output
    write_jsonl(tmp_path / "in.jsonl", [{"text": "x"}])
    result = runner.invoke(main, base + ["--input", str(tmp_path / "in.jsonl"), "--shard", "2/2"])
    assert result.exit_code == 2 and "--shard" in result.output
    result = runner.invoke(main, base + ["--input", str(tmp_path / "in.jsonl"), "--max-new-tokens", "outline=5"])
    assert result.exit_code == 2 and "has no step" in result.output
    result = runner.invoke(main, base + ["--input", str(tmp_path / "in.jsonl"), "--backend", "openai"])
    assert result.exit_code == 2 and "--base-url" in result.output


def test_sigterm_stops_cleanly_and_the_rerun_finishes(tmp_path, tiny_tokenizer):
    write_jsonl(tmp_path / "in.jsonl", [{"id": f"d{i}", "text": sample_text(40, seed=i)} for i in range(20)])

    class Terminated(EchoBackend):
        def poll(self):
            if self.polls == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # as Slurm does before preempting a job
            return super().poll()

    config = RunConfig(recipe="hq", inputs=[str(tmp_path / "in.jsonl")], output=str(tmp_path / "out"), model="m",
                       quiet=True, filters={"min_tokens": 1}, commit_every=1000, commit_seconds=3600)
    manifest = run(config, Terminated(tiny_tokenizer, max_inflight=4))
    assert manifest["interrupted"] and not manifest["complete"]
    first = read_outputs(tmp_path / "out")
    assert 0 < len(first) < 20  # what finished before the signal was committed
    manifest = run(config, EchoBackend(tiny_tokenizer))
    assert manifest["complete"] and manifest["counts"]["documents"] == 20
    ids = [r["id"] for r in read_outputs(tmp_path / "out")]
    assert len(ids) == len(set(ids)) == 20
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["complete"]


def test_merge_command(tmp_path, tiny_tokenizer):
    write_jsonl(tmp_path / "in.jsonl", [{"id": f"d{i}", "text": sample_text(40, seed=i)} for i in range(5)])
    for i in range(2):
        run(RunConfig(recipe="qa", inputs=[str(tmp_path / "in.jsonl")], output=str(tmp_path / f"w{i}"), model="m",
                      quiet=True, filters={"min_tokens": 1}, shard=(i, 2)), EchoBackend(tiny_tokenizer))
    runner = CliRunner()
    result = runner.invoke(main, ["merge", str(tmp_path / "w0"), "--output", str(tmp_path / "all")])
    assert result.exit_code == 1 and "shard 1/2 is missing" in result.output
    result = runner.invoke(main, ["merge", str(tmp_path / "w0"), str(tmp_path / "w1"), "--output", str(tmp_path / "all")])
    assert result.exit_code == 0, result.output
    assert "merged 2 shards: 5 documents" in result.output
    assert len(read_outputs(tmp_path / "all")) == 5
