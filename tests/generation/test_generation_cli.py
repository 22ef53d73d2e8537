"""The command line: help needs no engine; the shared conventions (-h, --debug, an example
in every help, exit 2 for usage and 1 for bad data, --json on stdout, --json-file, NAME=VALUE and
counts); SIGTERM stops cleanly; merge."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
from click.testing import CliRunner

from generation.cli import main
from generation.run.config import RunConfig
from generation.run.loop import run
from study.tiny_llama import sample_text

from genhelpers import PYTHON, EchoBackend, free_port, read_outputs, subprocess_env, write_jsonl


def test_help_imports_no_engine():
    code = ("import sys; from generation.cli import main; "
            "assert not any(m.split('.')[0] in ('vllm', 'torch', 'transformers', 'httpx', 'numpy', 'yaml') "
            "for m in sys.modules), sorted(m for m in sys.modules if m.split('.')[0] in "
            "('vllm', 'torch', 'transformers', 'httpx', 'numpy', 'yaml'));"
            "import generation.run.loop, generation.run.config, generation.run.work_plan, generation.run.manifest, "
            "generation.engine, generation.engine.vllm_engine, generation.engine.openai_client, generation.run.merge; "
            "assert 'vllm' not in sys.modules and 'torch' not in sys.modules and 'transformers' not in sys.modules"
            " and 'httpx' not in sys.modules, sorted(m for m in sys.modules if m.split('.')[0] in "
            "('vllm', 'torch', 'transformers', 'httpx'));"
            "assert not any(m.split('.')[0] in ('data_prep', 'recipes', 'analysis') for m in sys.modules)")
    subprocess.run([PYTHON, "-c", code], check=True, env=subprocess_env())
    done = subprocess.run([PYTHON, "-m", "generation", "run", "--help"], capture_output=True, text=True,
                          env=subprocess_env())
    assert done.returncode == 0 and "--shard" in done.stdout and "data_prep tokenize" in done.stdout


def test_every_command_has_h_debug_and_an_example():
    runner = CliRunner()
    assert set(main.commands) == {"run", "merge", "convert-gguf", "recipes", "concepts", "concept-graph", "diversity",
                                  "submit"}
    for args in [[], *([name] for name in main.commands)]:
        result = runner.invoke(main, [*args, "-h"])
        assert result.exit_code == 0, (args, result.output)
        assert "Example:" in result.output and "--debug" in result.output, args
        example = result.output.split("Example:")[1]
        assert f"generation {args[0] if args else ''}".strip() in example, args


def test_recipes_command_lists_and_shows(tmp_path):
    runner = CliRunner()
    listed = runner.invoke(main, ["recipes"])
    assert listed.exit_code == 0
    assert "textbook" in listed.output and "outline -> chapter x10" in listed.output
    shown = runner.invoke(main, ["recipes", "--show", "qa"])
    assert "Question-answer pairs with corresponding tags" in shown.output
    bad = runner.invoke(main, ["recipes", "--show", "nope"])
    assert bad.exit_code == 1 and bad.output.startswith("Error: unknown recipe 'nope'")
    as_json = runner.invoke(main, ["recipes", "--json", "--json-file", str(tmp_path / "recipes.json")])
    recipes = json.loads(as_json.stdout)  # stdout is the JSON alone
    assert json.loads((tmp_path / "recipes.json").read_text()) == recipes
    assert [s["name"] for s in recipes["textbook"]["steps"]] == ["outline", "chapter"]
    assert recipes["textbook"]["steps"][1]["repeat"] == 10 and recipes["hq"]["prompt_version"].startswith("paper/")
    shown = json.loads(runner.invoke(main, ["recipes", "--show", "qa", "--json"]).stdout)
    assert shown["name"] == "qa" and "Question-answer pairs" in shown["steps"][0]["user"]


def test_run_refuses_changed_settings_before_loading_any_engine(tmp_path, tiny_tokenizer):
    write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": sample_text(40)}])
    run(RunConfig(recipe="hq", inputs=[str(tmp_path / "in.jsonl")], output=str(tmp_path / "out"), model="m",
                  quiet=True, filters={"min_tokens": 1}), EchoBackend(tiny_tokenizer))
    result = CliRunner().invoke(main, ["run", "--recipe", "hq", "--input", str(tmp_path / "in.jsonl"),
                                       "--model", "m", "--output", str(tmp_path / "out"), "--seed", "3",
                                       "--min-tokens", "1"])
    assert result.exit_code == 1
    assert "started with other settings" in result.output and "seed: was 0, now 3" in result.output


@pytest.mark.parametrize("extra, message", [
    (["--shard", "2/2"], "--shard: need 0 <= I < N, got '2/2'"),
    (["--shard", "two"], "--shard: expected I/N such as 0/4, got 'two'"),
    (["--engine-arg", "enforce_eager"], "Invalid value for '--engine-arg': expected NAME=VALUE, got 'enforce_eager'"),
    (["--engine-arg", "seed=1", "--engine-arg", "seed=2"], "'--engine-arg': 'seed' is given twice"),
    (["--max-new-tokens", "chapter=lots"], "--max-new-tokens chapter=: expected a number like 5e9"),
    (["--max-new-tokens", "0"], "--max-new-tokens: must be a positive number, got '0'"),
    (["--limit", "1.5K5"], "Invalid value for '--limit': expected a number like 5e9"),
    (["--combination-size", "5-2"], "--combination-size: need 1 <= KMIN <= KMAX <= 32, got '5-2'"),
    (["--backend", "openai"], "--backend openai needs --base-url"),
    (["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--batch-invariant"], "VLLM_BATCH_INVARIANT=1"),
])
def test_bad_flag_values_are_usage_errors_exit_2(tmp_path, extra, message):
    write_jsonl(tmp_path / "in.jsonl", [{"text": "x"}])
    result = CliRunner().invoke(main, ["run", "--recipe", "hq", "--model", "m", "--output", str(tmp_path / "o"),
                                       "--input", str(tmp_path / "in.jsonl"), *extra])
    assert result.exit_code == 2, result.output
    assert "Usage: " in result.output and message in result.output
    assert not (tmp_path / "o").exists()


def test_bad_data_and_failed_checks_exit_1_with_one_line(tmp_path):
    runner = CliRunner()
    base = ["run", "--recipe", "hq", "--model", "m", "--output", str(tmp_path / "o")]
    result = runner.invoke(main, base + ["--input", str(tmp_path / "missing*.jsonl")])
    assert result.exit_code == 1 and result.output == f"Error: no input matches {str(tmp_path / 'missing*.jsonl')!r}\n"
    write_jsonl(tmp_path / "in.jsonl", [{"text": "x"}])
    result = runner.invoke(main, base + ["--input", str(tmp_path / "in.jsonl"), "--max-new-tokens", "outline=5"])
    assert result.exit_code == 1 and "has no step ['outline'] (steps: article)" in result.output
    result = runner.invoke(main, ["run", "--recipe", "nope", "--model", "m", "--output", str(tmp_path / "o"),
                                  "--input", str(tmp_path / "in.jsonl")])
    assert result.exit_code == 1 and "Error: unknown recipe 'nope'" in result.output


def test_a_project_error_is_one_line_and_debug_shows_the_traceback(tmp_path):
    command = [PYTHON, "-m", "generation", "run", "--recipe", "hq", "--model", "m", "--output", str(tmp_path / "o"),
               "--input", str(tmp_path / "missing.jsonl")]
    env = {k: v for k, v in subprocess_env().items() if k != "SYNTHSCALE_DEBUG"}
    plain = subprocess.run(command, capture_output=True, text=True, env=env)
    assert plain.returncode == 1 and plain.stdout == ""
    assert plain.stderr == f"Error: input {str(tmp_path / 'missing.jsonl')!r} does not exist or is not a file\n"
    for debug_command, debug_env in ((command[:3] + ["--debug"] + command[3:], env), (command + ["--debug"], env),
                                     (command, {**env, "SYNTHSCALE_DEBUG": "1"})):
        debug = subprocess.run(debug_command, capture_output=True, text=True, env=debug_env)
        assert debug.returncode == 1
        assert "Traceback (most recent call last)" in debug.stderr
        assert "synthscale.errors.MissingInputError: input" in debug.stderr


def test_run_json_on_stdout_json_file_and_named_values(tmp_path, flaky_server, tiny_model):
    url, _ = flaky_server
    write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "OK first"}, {"id": "b", "text": "OK second"}])
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "run", "--recipe", "hq", "--input", str(tmp_path / "in.jsonl"), "--model", "flaky", "--output", str(out),
        "--backend", "openai", "--base-url", url, "--tokenizer", str(tiny_model), "--no-progress",
        "--max-new-tokens", "1K", "--max-new-tokens", "article=200", "--limit", "1K", "--docs-per-file", "10K",
        "--engine-arg", "enforce_eager=true", "--engine-arg", "kv_cache_memory_bytes=67108864",
        "--engine-arg", "note=plain text", "--keep-repetitive",  # the server answers "river" x 60
        "--json", "--json-file", str(tmp_path / "run.json")])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # the manifest alone on stdout; the summary went to stderr
    assert printed["filters"]["config"]["article"]["drop_repetitive"] is False
    assert printed == json.loads((tmp_path / "run.json").read_text())
    assert printed["limit"] == 1000 and printed["counts"]["documents"] == 2 == len(read_outputs(out))
    assert printed["fingerprint"]["max_new_tokens"] == {"article": 200}  # STEP=N beats N
    config = printed["provenance"]["config"]
    assert config["engine_kwargs"] == {"enforce_eager": True, "kv_cache_memory_bytes": 67108864, "note": "plain text"}
    assert config["max_new_tokens"] == {"*": 1000, "article": 200} and config["limit"] == 1000
    assert config["docs_per_file"] == 10000
    assert json.loads((out / "manifest.json").read_text())["counts"] == printed["counts"]


def test_an_unreachable_server_is_one_line_exit_1(tmp_path, tiny_model):
    write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "OK"}])
    result = CliRunner().invoke(main, [
        "run", "--recipe", "hq", "--input", str(tmp_path / "in.jsonl"), "--model", "x", "--output", str(tmp_path / "o"),
        "--backend", "openai", "--base-url", f"http://127.0.0.1:{free_port()}/v1", "--tokenizer", str(tiny_model),
        "--retries", "0", "--no-progress"])
    assert result.exit_code == 1 and result.output.startswith("Error: cannot reach http://127.0.0.1:")


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
    resumed = EchoBackend(tiny_tokenizer)
    manifest = run(config, resumed)
    assert manifest["complete"] and manifest["counts"]["documents"] == 20
    # the rerun asks the engine for exactly the documents the first run did not finish, each once
    submitted = [json.loads(r.key)[0] for r in resumed.submitted]
    assert len(submitted) == len(set(submitted))
    assert set(submitted) == {f"d{i}" for i in range(20)} - {r["source_id"] for r in first}
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
    again = runner.invoke(main, ["merge", str(tmp_path / "w0"), str(tmp_path / "w1"), "--output", str(tmp_path / "all"),
                                 "--json", "--json-file", str(tmp_path / "merged.json")])
    merged = json.loads(again.stdout)
    assert merged == json.loads((tmp_path / "merged.json").read_text())
    assert merged["counts"]["documents"] == 5 and len(merged["shards"]) == 2
    assert merged["counts"] == json.loads((tmp_path / "all" / "manifest.json").read_text())["counts"]
