"""The `recipes` CLI follows the project's conventions (synthscale.cli): -h and an example on every
command, exit 2 for a bad flag value and 1 for bad data, one-line errors unless --debug, --json on
stdout and --json-file; and `recipes sweep --config`: the paper example file, --set, --print-config,
the resolved config kept beside the runs without changing any run id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from recipes.cli import main
from recipes.sweep_config import NOT_CONFIG, SECTIONS
from synthscale.errors import MissingInputError
from tests.recipes.helpers import sweep_args

EXAMPLE = Path(__file__).resolve().parents[2] / "recipes" / "examples" / "sweep.paper.yaml"
COMMANDS = ("shapes", "sweep", "train", "results")


def run(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


@pytest.mark.parametrize("command", ("", *COMMANDS))
def test_h_works_and_every_help_ends_with_an_example(command):
    result = run(*filter(None, [command, "-h"]))
    assert result.exit_code == 0, result.output
    assert "--debug" in run("-h").output
    examples = result.output.split("Example")
    assert len(examples) > 1 and f"recipes {command}".rstrip() in examples[-1]


def test_bad_flag_values_exit_2_bad_data_exits_1(workspace, tmp_path):
    runs = tmp_path / "runs"
    for flag, bad in (("--tokens", "lots"), ("--seeds", "1,x"), ("--seeds", "-1"), ("--eval-max-tokens", "0")):
        args = sweep_args(workspace, runs, "tiny-xs", "12800") + [flag, bad]
        result = run(*args)
        assert result.exit_code == 2, (flag, result.output)
        assert flag in result.output and bad in result.output
    assert run("results", tmp_path, "--output", tmp_path / "table.txt").exit_code == 2  # not .csv/.parquet
    # bad data: an evaluation prefix with no .bin/.idx is one line, exit 1, no traceback
    args = sweep_args(workspace, runs, "tiny-xs", "12800", evals=()) + ["--eval", f"wiki={tmp_path / 'none'}"]
    result = run(*args, env={"SYNTHSCALE_DEBUG": ""})
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(f"Error: --eval wiki={tmp_path / 'none'}: no ")
    assert "Traceback" not in result.output and not runs.exists()
    debug = run("--debug", *args)
    assert isinstance(debug.exception, MissingInputError)  # --debug keeps the traceback
    assert "'wiki' is given twice" in run(*sweep_args(workspace, runs, "tiny-xs", "12800"),
                                          "--eval", f"wiki={workspace.prefixes['eval_wiki']}").output
    assert run("results", tmp_path, "--output", tmp_path / "t.csv").exit_code == 1  # no completed runs


def test_json_goes_to_stdout_and_json_file(workspace, tmp_path):
    shapes = run("shapes", "--json")
    rows = json.loads(shapes.stdout)
    assert {r["name"]: r["N"] for r in rows}["tiny-xs"] > 0
    assert run("shapes", "--json-file", tmp_path / "shapes.json").exit_code == 0
    assert json.loads((tmp_path / "shapes.json").read_text()) == rows

    runs = tmp_path / "runs"
    result = run(*sweep_args(workspace, runs, "tiny-xs", "12800,25600", "--dry-run", "--json"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # the log went to stderr
    assert "would run" in result.stderr and "would run" not in result.stdout
    assert [r["status"] for r in summary["runs"]] == ["pending", "pending"]
    assert {Path(r["run_dir"]).name for r in summary["runs"]} == {p.parent.name for p in runs.glob("*/run.json")}
    assert Path(summary["config"]).parent == runs.resolve() / "_sweeps"


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_config_file_sections_set_and_print_config(workspace, tmp_path):
    printed = run("sweep", "--config", EXAMPLE, "--print-config")
    assert printed.exit_code == 0, printed.output
    config = yaml.safe_load(printed.output)
    assert list(config) == list(SECTIONS)
    assert config["grid"]["sizes"] == ["100M", "200M", "500M", "1B", "2B", "3B"]
    assert config["grid"]["tokens"][0] == 5_000_000_000
    assert config["training"]["recipe"] == "paper" and config["execution"]["backend"] == "bridge"
    assert config["execution"]["executor"] == "slurm" and config["execution"]["dry_run"] is True
    assert all(Path(b).is_absolute() for b in config["grid"]["blends"])
    # every sweep option is in one section (but --json, which is how this invocation reports)
    keys = {k for section in SECTIONS.values() for k in section}
    options = {p.opts[0].lstrip("-").replace("-", "_") for p in main.commands["sweep"].params
               if p.opts[0].startswith("--") and p.name not in ("config_file", "overrides", "print_config", "help")}
    assert options - {"debug"} == keys | set(NOT_CONFIG)
    # --set beats the file, a flag beats --set; comma lists and YAML lists are the same
    changed = yaml.safe_load(run("sweep", "--config", EXAMPLE, "--set", "training.peak_lr=1e-3",
                                 "--set", "grid.sizes=1B,3B", "--set", "grid.tokens=[5B, 1e10]",
                                 "--peak-lr", "2e-3", "--print-config").output)
    assert changed["training"]["peak_lr"] == 2e-3
    assert changed["grid"]["sizes"] == ["1B", "3B"] and changed["grid"]["tokens"] == [5 * 10**9, 10**10]
    bad = run("sweep", "--config", EXAMPLE, "--set", "training.peak_lrr=1", "--print-config")
    assert bad.exit_code == 2 and "unknown key 'training.peak_lrr'" in bad.output
    assert run("sweep", "--config", EXAMPLE, "--set", "grid.tokens=[5B, lots]").exit_code == 2
    timed = run("sweep", "--config", EXAMPLE, "--set", "execution.slurm_time=4:00:00", "--print-config")
    assert yaml.safe_load(timed.output)["execution"]["slurm_time"] == "4:00:00"  # --set keeps a time as text
    unquoted = tmp_path / "unquoted.yaml"  # in a file, YAML 1.1 reads 4:00:00 as 14400 (base 60): refused
    unquoted.write_text(Path(EXAMPLE).read_text().replace('slurm_time: "04:00:00"', "slurm_time: 4:00:00"))
    refused = run("sweep", "--config", str(unquoted), "--print-config")
    assert refused.exit_code == 2 and "quote a Slurm time" in refused.output


def test_paper_example_dry_run_on_tiny_blends_keeps_its_config_and_the_run_ids(workspace, tmp_path):
    # a real tiny blend that can feed the paper's budgets (max_epochs) and the tiny tokenizer's recipe
    blend = workspace.make_blend("paper_tiny", "natural=0.67,synth=0.33", tokens=40_000, seq_length=64,
                                 max_epochs=1e7)
    runs = tmp_path / "runs"
    overrides = _write(tmp_path / "tiny.yaml", {
        "grid": {"blends": [str(blend)]},
        "evaluation": {"eval": [f"wiki={workspace.prefixes['eval_wiki']}"]},
        "training": {"recipe": "cpu-tiny", "seq_length": 64, "global_batch_size": 256, "micro_batch_size": 1},
        "execution": {"output": str(runs), "slurm_account": "acct"},
    })
    result = run("sweep", "--config", EXAMPLE, "--config", overrides)
    assert result.exit_code == 0, result.output
    run_dirs = sorted(p.parent for p in runs.glob("*/run.json"))
    assert len(run_dirs) == 6 * 6 and "#SBATCH --array=" in result.output  # dry run: sbatch printed
    assert not list(runs.glob("*/results.json"))
    (record,) = (runs / "_sweeps").glob("*.yaml")
    assert all((d / "sweep.config.yaml").read_text() == record.read_text() for d in run_dirs)
    kept = yaml.safe_load(record.read_text())
    assert kept["grid"]["blends"] == [str(blend)] and kept["training"]["seq_length"] == 64
    # the kept config is a config: it resolves to itself
    again = run("sweep", "--config", run_dirs[0] / "sweep.config.yaml", "--print-config")
    assert yaml.safe_load(again.output) == kept
    # the same run from flags, into another folder: the same run id (the config is not hashed)
    flags = ["sweep", "--sizes", "100M", "--tokens", "5B", "--blends", blend, "--eval",
             f"wiki={workspace.prefixes['eval_wiki']}", "--backend", "bridge", "--executor", "slurm",
             "--slurm-account", "other", "--recipe", "cpu-tiny", "--seq-length", "64", "--global-batch-size", "256",
             "--micro-batch-size", "1", "--output", tmp_path / "other", "--dry-run"]
    assert run(*flags).exit_code == 0
    (other,) = (tmp_path / "other").glob("*/run.json")
    assert other.parent.name in {d.name for d in run_dirs}


def broken_trainer(run_dir, threads=None):
    """A trainer with a bug (module level: the sweep's worker processes import it)."""
    raise KeyError("an internal bug")


def test_a_failed_run_is_one_line_but_a_bug_in_it_keeps_its_traceback(workspace, tmp_path):
    from recipes.launchers import ExecutorSettings
    from recipes.recipe import get_recipe
    from recipes.run_spec import parse_eval_domains
    from recipes.sweep import RunFailed, SweepRequest, execute_sweep

    request = SweepRequest(sizes=("tiny-xs",), tokens=(12800,), blends=(str(workspace.blend),), backend="megatron",
                           recipe=get_recipe("cpu-tiny").with_overrides(seq_length=64, global_batch_size=4,
                                                                         micro_batch_size=4),
                           eval_domains=parse_eval_domains([f"wiki={workspace.prefixes['eval_wiki']}"]),
                           output=str(tmp_path / "runs"), executor=ExecutorSettings(gpus_per_node=None),
                           config_text="grid: {}\n")
    log: list[str] = []
    with pytest.raises(RunFailed, match=r"(?s)1 of 1 runs failed .*KeyError: 'an internal bug'"):
        execute_sweep(request, echo=log.append, train_fn=broken_trainer)
    # the worker's traceback, down to the trainer's line (concurrent.futures carries it across processes)
    assert any("Traceback (most recent call last)" in line and "broken_trainer" in line for line in log)
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/run.json")]
    assert (run_dir / "sweep.config.yaml").read_text() == "grid: {}\n"
