"""The shared CLI toolkit: error convention, --debug, parsers, config files with dotted overrides."""

from __future__ import annotations

import click
import pytest
import yaml
from click.testing import CliRunner

from synthscale.cli import COUNT, parse_named_values, parse_percentages, expand_glob, resolve_workers, stage_group
from synthscale.config import ConfigCommand
from synthscale.errors import SynthscaleError


@stage_group()
def demo_group():
    """A group built like every stage's."""


@demo_group.command()
@click.argument("kind")
def fail(kind):
    if kind == "user":
        raise SynthscaleError("--tokens: expected a number, got 'x'")
    raise KeyError("an internal bug")


@demo_group.command(cls=ConfigCommand)
@click.option("--sizes", default="tiny-xs", show_default=True)
@click.option("--tokens", type=COUNT, default="26K")
@click.option("--peak-lr", type=float, default=2e-3)
@click.option("--eval", "evals", multiple=True)
def sweep(sizes, tokens, peak_lr, evals):
    click.echo(f"sizes={sizes} tokens={tokens} peak_lr={peak_lr} evals={list(evals)}")


def test_project_errors_are_one_line_and_exit_1_bugs_keep_tracebacks(monkeypatch):
    monkeypatch.delenv("SYNTHSCALE_DEBUG", raising=False)
    runner = CliRunner()
    result = runner.invoke(demo_group, ["fail", "user"])
    assert result.exit_code == 1
    assert "Error: --tokens: expected a number, got 'x'" in result.output
    bug = runner.invoke(demo_group, ["fail", "bug"])
    assert isinstance(bug.exception, KeyError)  # not turned into a one-line message
    debug = runner.invoke(demo_group, ["--debug", "fail", "user"])
    assert isinstance(debug.exception, SynthscaleError)
    monkeypatch.setenv("SYNTHSCALE_DEBUG", "1")
    assert isinstance(runner.invoke(demo_group, ["fail", "user"]).exception, SynthscaleError)


def test_usage_errors_exit_2_and_h_works():
    runner = CliRunner()
    assert runner.invoke(demo_group, ["sweep", "--tokens", "lots"]).exit_code == 2
    assert runner.invoke(demo_group, ["-h"]).exit_code == 0
    assert runner.invoke(demo_group, ["sweep", "-h"]).exit_code == 0


def test_config_file_sections_dotted_overrides_and_precedence(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({"sizes": ["tiny-xs", "tiny-s"], "training": {"peak_lr": 1e-3, "tokens": "52K"},
                                      "eval": ["wiki=data/wiki"]}))
    runner = CliRunner()
    out = runner.invoke(demo_group, ["sweep", "--config", str(config)]).output
    assert out.strip() == "sizes=tiny-xs,tiny-s tokens=52000 peak_lr=0.001 evals=['wiki=data/wiki']"
    out = runner.invoke(demo_group, ["sweep", "--config", str(config), "--set", "training.peak_lr=3e-4",
                                     "--tokens", "100K"]).output
    assert "tokens=100000 peak_lr=0.0003" in out  # the flag beats the file, --set beats the file
    printed = runner.invoke(demo_group, ["sweep", "--config", str(config), "--print-config"])
    assert printed.exit_code == 0
    assert yaml.safe_load(printed.output) == {"sizes": "tiny-xs,tiny-s", "tokens": 52000, "peak_lr": 0.001,
                                              "evals": ["wiki=data/wiki"]}


def test_config_unknown_key_is_named(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("training:\n  peak_lrr: 1e-3\n")
    result = CliRunner().invoke(demo_group, ["sweep", "--config", str(config)])
    assert result.exit_code == 2
    assert "unknown key 'training.peak_lrr'" in result.output


def test_parsers_name_the_bad_value(tmp_path):
    assert parse_named_values(["a=1,b=2"], "--weights", convert=lambda n, v: float(v), split_commas=True) == {"a": 1.0, "b": 2.0}
    with pytest.raises(SynthscaleError, match="--weights: 'a' is given twice"):
        parse_named_values(["a=1", "a=2"], "--weights")
    with pytest.raises(SynthscaleError, match="--weights 'a=x'"):
        parse_named_values(["a=x"], "--weights", convert=lambda n, v: float(v))
    with pytest.raises(SynthscaleError, match="expected NAME=PREFIX, got 'oops'"):
        parse_named_values(["oops"], "--eval", "PREFIX")
    assert parse_percentages("0, 33,67", "--ratios") == (0.0, 33.0, 67.0)
    with pytest.raises(SynthscaleError, match="--ratios: percentages must lie in \\[0, 100\\], got '0,150'"):
        parse_percentages("0,150", "--ratios")
    with pytest.raises(SynthscaleError, match="--ratios: expected comma-separated percentages, got '0,a'"):
        parse_percentages("0,a", "--ratios")
    (tmp_path / "shard-1.bin").write_bytes(b"")
    assert expand_glob(str(tmp_path / "shard-*.bin"), "--data") == [str(tmp_path / "shard-1.bin")]
    with pytest.raises(SynthscaleError, match="nothing matches"):
        expand_glob(str(tmp_path / "none-*"), "--data")
    assert resolve_workers(0) >= 1 and resolve_workers(3) == 3


def test_set_values_parse_as_yaml_but_times_stay_strings():
    from synthscale.config import parse_scalar

    assert parse_scalar("1e-3") == 0.001 and parse_scalar("[a, b]") == ["a", "b"] and parse_scalar("true") is True
    assert parse_scalar("04:00:00") == "04:00:00"  # YAML 1.1 would read 14400 (base 60)
    assert parse_scalar("tiny-xs") == "tiny-xs"
