"""`Study.__call__`, what `make demo` runs, through the real Study code with stand-in stage commands.

Every stage command the study launches goes through `Study.run`, whose process launch is replaced
by a stand-in: it parses the command with that stage's real click command (so a flag the stage
does not take fails here as it would there), records it with its environment, and writes the
files the real command writes that the study reads next (a corpus and its manifest, a tokenized
prefix, blend files, run folders, a results table, a report). The stages themselves are tested in
their own folders and end to end in tests/test_end_to_end.py; here the subject is the study: which
commands, in what order, each fed the previous one's output, skipped when its output exists, and
the wait for a cluster's runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from study.config import StudyConfig
from study.pipeline import RANDOM_GENERATOR, REAL_GENERATOR, SYNTHLLM_CORPUS, VLLM_CPU_ENV, Study



# ----------------------------------------------------------------------------- the stand-in stages
def _value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def _values(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def _parse_with_the_real_cli(stage: str, args: list[str]) -> None:
    """Parse (never run) the command with the stage's own click command: unknown flags, bad values
    and missing inputs that click checks fail as they would for the real command."""
    import importlib

    group = importlib.import_module(f"{stage}.cli").main
    command = group.get_command(None, args[0])
    assert command is not None, f"{stage} has no command {args[0]!r}"
    command.make_context(f"{stage} {args[0]}", list(args[1:]))


def _write_outputs(stage: str, args: list[str]) -> None:
    """The files the real command writes that the study looks at next."""
    command = args[0]
    if stage == "generation" and command in ("run", "concepts"):
        out = Path(_value(args, "--output"))
        out.mkdir(parents=True, exist_ok=True)
        recipe = _value(args, "--recipe") if command == "run" else "concepts"
        (out / "part-00000-of-00001-00000.jsonl").write_text(
            json.dumps({"id": "g0", "text": "made up", "recipe": recipe, "generator": "stand-in"}) + "\n")
        (out / "manifest.json").write_text(json.dumps({"complete": True}))
    elif stage == "generation" and command == "concept-graph":
        out = Path(_value(args, "--output"))
        out.mkdir(parents=True, exist_ok=True)
        (out / "graph.json").write_text("{}")
    elif stage == "data_prep" and command == "tokenize":
        prefix = Path(_value(args, "--output"))
        prefix.parent.mkdir(parents=True, exist_ok=True)
        for suffix in (".bin", ".idx", ".manifest.json"):
            Path(f"{prefix}{suffix}").write_text("{}")
    elif stage == "data_prep" and command == "grid":
        out = Path(_value(args, "--output-dir"))
        out.mkdir(parents=True, exist_ok=True)
        names = [d.partition("=")[0] for d in _values(args, "--data")]
        synthetic = set(_values(args, "--synthetic"))
        for ratio in _value(args, "--ratios").split(","):
            for name in names:
                if (name in synthetic) == (float(ratio) > 0):
                    stem = name if float(ratio) == 0 else f"{name}-{ratio}pct"
                    (out / f"{stem}.yaml").write_text(f"name: {stem}\n")
    elif stage == "recipes" and command == "sweep":
        runs = Path(_value(args, "--output"))
        seeds = _value(args, "--seeds").split(",") if "--seeds" in args else [""]
        on_cluster = _value(args, "--executor") != "local"
        for blend in _values(args, "--blends"):
            for size in _value(args, "--sizes").split(","):
                for tokens in _value(args, "--tokens").split(","):
                    for seed in seeds:
                        run = runs / "-".join(filter(None, (size, tokens, Path(blend).stem, seed and f"s{seed}")))
                        run.mkdir(parents=True, exist_ok=True)
                        (run / "run.json").write_text("{}")
                        if not on_cluster:  # a local sweep trains before it returns; a cluster's runs finish later
                            (run / "results.json").write_text("{}")
        (runs / "_sweeps").mkdir(parents=True, exist_ok=True)  # bookkeeping, not a run
    elif stage == "recipes" and command == "results":
        Path(_value(args, "--output")).write_text("run_id,loss\n")
    elif stage == "analysis" and command == "report":
        out = Path(_value(args, "--output"))
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.html").write_text("<html></html>")
        (out / "summary.txt").write_text(f"{_value(args, '--label')}: stand-in summary\n")


class StandInStages:
    """Replaces the process launch of `Study.run` (`subprocess.run([python, "-m", STAGE, *args], check=True, env=...)`)."""

    def __init__(self):
        self.commands: list[dict] = []

    def run(self, command, check=False, env=None):
        assert command[:2] == [sys.executable, "-m"], command
        stage, args = command[2], [str(a) for a in command[3:]]
        try:
            _parse_with_the_real_cli(stage, args)
        except Exception as exc:  # what the real command would refuse: exit 2
            print(f"{stage} {args[0]}: {type(exc).__name__}: {getattr(exc, 'format_message', str)()}")
            if check:
                raise subprocess.CalledProcessError(2, command) from None
            return subprocess.CompletedProcess(command, 2)
        self.commands.append({"stage": stage, "args": args, "env": {k: (env or os.environ).get(k) for k in VLLM_CPU_ENV}})
        _write_outputs(stage, args)
        return subprocess.CompletedProcess(command, 0)


@pytest.fixture
def stages(monkeypatch) -> StandInStages:
    """The study's stage commands go to the stand-in; `.commands` lists those run so far."""
    import study.pipeline

    stand_in = StandInStages()
    monkeypatch.setattr(study.pipeline, "subprocess", SimpleNamespace(run=stand_in.run))
    for key in VLLM_CPU_ENV:
        monkeypatch.delenv(key, raising=False)
    return stand_in


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    """A user's corpus, two held-out domains, a tokenizer file and a generator folder; the random
    generator of the ablation is built by a stand-in (a folder with config.json)."""
    import study.tiny_llama

    web = tmp_path / "web"
    web.mkdir()
    for i in range(2):
        (web / f"part-{i}.jsonl").write_text("".join(json.dumps({"id": f"w{i}-{j}", "text": f"document {j}"}) + "\n"
                                                     for j in range(3)))
    domains = {}
    for name in ("wiki", "news"):
        domains[name] = tmp_path / f"{name}.jsonl"
        domains[name].write_text(json.dumps({"id": name, "text": "held out"}) + "\n")
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "generator").mkdir()
    (tmp_path / "generator" / "config.json").write_text("{}")

    def build_tiny_model(path, **_):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "config.json").write_text("{}")
        return Path(path)

    monkeypatch.setattr(study.tiny_llama, "build_tiny_model", build_tiny_model)
    return {"natural_corpus": str(web / "*.jsonl"), "eval_domains": tuple(f"{n}={p}" for n, p in domains.items()),
            "tokenizer": f"hf:{tmp_path / 'tokenizer.json'}", "generator": str(tmp_path / "generator")}


def tiny_config(tmp_path, inputs, **overrides) -> StudyConfig:
    values = dict(workdir=tmp_path / "study", recipes=("hq", "qa"), ablation_recipe="hq", sizes=("tiny-2xs", "tiny-xs", "tiny-s"),
                  baseline_sizes=("tiny-m",), budgets=("26K", "36K", "52K", "72K", "100K"),
                  synthetic_budgets=("26K", "52K", "100K"), ratios_pct=(0, 33), seed_repeats=(1,), bootstrap=10,
                  generation_args=("--max-inflight", "4"), synthllm=True, label="stand-in study", **inputs)
    values.update(overrides)
    return StudyConfig(**values)


def _named(commands: list[dict]) -> list[str]:
    return [f"{c['stage']} {c['args'][0]}" for c in commands]


# ----------------------------------------------------------------------------- the tests
def test_the_study_runs_every_stage_in_order_each_fed_the_last_ones_output(tmp_path, stages, inputs, capsys):
    config = tiny_config(tmp_path, inputs)
    study = Study(config)
    report = study()
    root = config.workdir
    commands = stages.commands
    assert _named(commands) == [
        "generation run", "generation run", "generation run",  # hq, qa, the ablation's hq by the random model
        "generation concepts", "generation concept-graph", "generation run",  # SynthLLM level 3
        "data_prep tokenize", "data_prep tokenize", "data_prep tokenize",  # natural, eval-wiki, eval-news
        "data_prep tokenize", "data_prep tokenize", "data_prep tokenize", "data_prep tokenize",  # 4 corpora
        "data_prep grid", *["data_prep blend-check"] * 5,  # natural + 4 corpora at 33%
        "recipes sweep", "recipes sweep", "recipes sweep",  # natural, synthetic, seed repeats
        "recipes results", "analysis report"]
    by_name = {}
    for c in commands:
        by_name.setdefault(f"{c['stage']} {c['args'][0]}", []).append(c["args"])

    # generation: each recipe by the real generator, the ablation by the random one; vLLM's CPU settings
    runs = by_name["generation run"]
    assert [(_value(a, "--recipe"), _value(a, "--model"), _value(a, "--output")) for a in runs[:3]] == [
        ("hq", inputs["generator"], str(root / "synthetic" / "hq")),
        ("qa", inputs["generator"], str(root / "synthetic" / "qa")),
        ("hq", str(root / "generator-random"), str(root / "synthetic" / "hq-random"))]
    assert all(_values(a, "--input") == [str(p) for p in sorted((tmp_path / "web").glob("*.jsonl"))] for a in runs[:3])
    assert "--max-inflight" in runs[0] and "--max-inflight" not in runs[2]  # the user's flags: real generator only
    assert _value(runs[2], "--min-tokens") == "8"
    assert _value(runs[3], "--recipe") == "synthllm-l3" and _value(runs[3], "--graph") == str(root / "synthetic" / "synthllm" / "graph")
    assert all(c["env"] == VLLM_CPU_ENV for c in commands if c["stage"] == "generation" and c["args"][0] != "concept-graph")
    assert all(c["env"] == dict.fromkeys(VLLM_CPU_ENV) for c in commands if c["stage"] != "generation")

    # tokenize: the natural files, each held-out domain, each corpus's shards, with the user's tokenizer
    tokenized = {_value(a, "--output"): a[1:a.index("--output")] for a in by_name["data_prep tokenize"]}
    tokens = root / "tokens"
    assert tokenized[str(tokens / "natural")] == [str(p) for p in sorted((tmp_path / "web").glob("*.jsonl"))]
    assert tokenized[str(tokens / "eval-wiki")] == [str(tmp_path / "wiki.jsonl")]
    for name in ("hq", "qa", "hq-random", SYNTHLLM_CORPUS):
        assert tokenized[str(tokens / name)] == [str(root / "synthetic" / name / "part-*.jsonl")]
    assert {_value(a, "--tokenizer") for a in by_name["data_prep tokenize"]} == {inputs["tokenizer"]}

    # blends from the tokenized prefixes; every blend checked
    grid = by_name["data_prep grid"][0]
    assert _values(grid, "--data") == [f"natural={tokens / 'natural'}", *(f"{n}={tokens / n}" for n in
                                                                          ("hq", "qa", "hq-random", SYNTHLLM_CORPUS))]
    assert _value(grid, "--tokens") == "100K" and _value(grid, "--ratios") == "0,33"
    blends = sorted((root / "blends").glob("*.yaml"))
    assert sorted(a[1] for a in by_name["data_prep blend-check"]) == [str(b) for b in blends]

    # training: the natural baseline over every size and budget, the mixtures over theirs, seed repeats
    natural, synthetic, repeats = by_name["recipes sweep"]
    assert _values(natural, "--blends") == [str(root / "blends" / "natural.yaml")]
    assert _value(natural, "--sizes") == "tiny-2xs,tiny-xs,tiny-s,tiny-m" and _value(natural, "--tokens") == "26K,36K,52K,72K,100K"
    assert sorted(_values(synthetic, "--blends")) == [str(b) for b in blends if b.stem != "natural"]
    assert _value(synthetic, "--tokens") == "26K,52K,100K" and _value(synthetic, "--sizes") == "tiny-2xs,tiny-xs,tiny-s"
    assert (_value(repeats, "--sizes"), _value(repeats, "--tokens"), _value(repeats, "--seeds")) == ("tiny-s", "52K", "1")
    assert sorted(Path(b).stem for b in _values(repeats, "--blends")) == ["hq-33pct", "natural"]
    for sweep in (natural, synthetic, repeats):
        assert _values(sweep, "--eval") == [f"wiki={tokens / 'eval-wiki'}", f"news={tokens / 'eval-news'}"]
        assert _value(sweep, "--jobs") == "2" and _value(sweep, "--output") == str(root / "runs")

    # the report reads the results table and the corpora; unigram test set: the first held-out domain
    table = _value(by_name["recipes results"][0], "--output")
    analysis = by_name["analysis report"][0]
    assert analysis[1] == table == str(root / "results.csv")
    assert _value(analysis, "--unigram-test") == str(tokens / "eval-wiki")
    assert _values(analysis, "--corpus") == [f"{n}={root / 'synthetic' / n}" for n in ("hq", "qa", "hq-random", SYNTHLLM_CORPUS)]
    assert _value(analysis, "--label") == "stand-in study"

    # the result: the report's path, study.json with every stage's time, the commands echoed as typed
    assert report == root / "report" / "report.html"
    summary = json.loads((root / "study.json").read_text())
    assert summary["report"] == str(report) and summary["results"] == table
    assert list(summary["stage_seconds"]) == ["natural text", "generators", "generation", "tokenize", "blends",
                                              "training", "analysis"]
    printed = capsys.readouterr().out
    assert f"$ data_prep grid --data natural={tokens / 'natural'}" in printed
    assert "stand-in study: stand-in summary" in printed and f"report: {report}" in printed


def test_a_rerun_skips_every_step_whose_output_exists(tmp_path, stages, inputs):
    config = tiny_config(tmp_path, inputs)
    Study(config)()
    first = len(stages.commands)
    (config.workdir / "synthetic" / "qa" / "manifest.json").unlink()  # as if killed while generating qa
    assert Study(config)() == config.workdir / "report" / "report.html"
    again = stages.commands[first:]
    # qa again, then what always runs: the sweeps (recipes skips finished runs itself), results, report
    assert _named(again) == ["generation run", "recipes sweep", "recipes sweep", "recipes sweep",
                             "recipes results", "analysis report"]
    assert _value(again[0]["args"], "--recipe") == "qa"


def test_a_rerun_that_adds_synthllm_blends_its_corpus_too(tmp_path, stages, inputs):
    """Turning SynthLLM on after a first study: its corpus joins the grid, so its mixtures are
    trained (the blends are made again from every corpus, and checked)."""
    from dataclasses import replace

    config = tiny_config(tmp_path, inputs, synthllm=False)
    Study(config)()
    first = len(stages.commands)
    assert not list((config.workdir / "blends").glob(f"{SYNTHLLM_CORPUS}-*.yaml"))
    Study(replace(config, synthllm=True))()
    again = stages.commands[first:]
    (grid,) = [c["args"] for c in again if c["args"][0] == "grid"]
    assert f"{SYNTHLLM_CORPUS}={config.workdir / 'tokens' / SYNTHLLM_CORPUS}" in _values(grid, "--data")
    added = sorted((config.workdir / "blends").glob(f"{SYNTHLLM_CORPUS}-*.yaml"))
    assert added and all(any(c["args"] == ["blend-check", str(b)] for c in again) for b in added)
    synthetic_sweep = [c["args"] for c in again if c["args"][0] == "sweep"][1]
    assert {str(b) for b in added} <= set(_values(synthetic_sweep, "--blends"))
    Study(replace(config, synthllm=True))()  # nothing changed since: no grid again
    assert not [c for c in stages.commands[len(again) + first:] if c["args"][0] == "grid"]


def test_on_a_cluster_the_study_submits_waits_and_a_rerun_collects(tmp_path, stages, inputs, capsys):
    config = tiny_config(tmp_path, inputs, backend="bridge", executor="slurm", synthllm=False,
                         sweep_args=("--slurm-account", "ACC"))
    assert Study(config)() is None  # submitted, not finished: no results, no report
    commands = stages.commands
    assert _named(commands)[-3:] == ["recipes sweep"] * 3
    assert all(_value(c["args"], "--executor") == "slurm" and "--jobs" not in c["args"]
               and _value(c["args"], "--slurm-account") == "ACC" for c in commands if c["stage"] == "recipes")
    runs = sorted(p.parent for p in (config.workdir / "runs").glob("*/run.json"))
    printed = capsys.readouterr().out
    assert f"training submitted: {len(runs)} training run(s) submitted to slurm are not finished" in printed
    assert not (config.workdir / "study.json").exists() and not (config.workdir / "results.csv").exists()

    for run in runs[:-1]:  # all but one finished: still waiting, nothing collected
        (run / "results.json").write_text("{}")
    assert Study(config)() is None
    assert f"(e.g. {runs[-1].name})" in capsys.readouterr().out
    (runs[-1] / "results.json").write_text("{}")  # the last one finished: the rerun collects and fits
    before = len(stages.commands)
    assert Study(config)() == config.workdir / "report" / "report.html"
    assert _named(stages.commands[before:]) == ["recipes sweep"] * 3 + ["recipes results", "analysis report"]
    assert json.loads((config.workdir / "study.json").read_text())["results"] == str(config.workdir / "results.csv")


def test_a_command_the_stage_refuses_stops_the_study(tmp_path, stages, inputs):
    """The stand-in parses with the real CLIs: a flag a stage does not take fails the study at once."""
    config = tiny_config(tmp_path, inputs, generation_args=("--no-such-flag",))
    from study.pipeline import StageFailed

    with pytest.raises(StageFailed, match=r"`generation run` exited 2 \(its error is above\)"):
        Study(config)()
    assert stages.commands == []
