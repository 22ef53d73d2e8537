"""The study's config file: study/demo.yaml is the demo, typed, validated, overridable."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from study.__main__ import DEMO_CONFIG, main
from study.config import StudyConfig
from synthscale.errors import SynthscaleError

ROOT = Path(__file__).resolve().parents[2]


def _printed(*args) -> dict:
    result = CliRunner().invoke(main, ["--config", str(DEMO_CONFIG), *args, "--print-config"])
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.output)


def test_demo_yaml_is_the_demo_config_and_covers_every_field():
    printed = _printed()
    defaults = StudyConfig()
    for f in fields(StudyConfig):
        value = getattr(defaults, f.name)
        expected = list(value) if isinstance(value, tuple) else str(value) if isinstance(value, Path) else value
        assert printed[f.name] == expected, f.name
    in_file = set()
    for key, value in yaml.safe_load(DEMO_CONFIG.read_text()).items():
        in_file |= set(value) if isinstance(value, dict) else {key}
    assert in_file == {f.name for f in fields(StudyConfig)} - {"cache"}


def test_dotted_overrides_and_flags_reach_the_study_config():
    printed = _printed("--set", "training.sizes=[tiny-xs,tiny-s,tiny-m]", "--set", "peak_lr=1e-3", "--jobs", "1")
    assert printed["sizes"] == ["tiny-xs", "tiny-s", "tiny-m"]
    assert printed["peak_lr"] == 0.001 and printed["jobs"] == 1


def test_bad_values_are_named_in_one_line(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text(DEMO_CONFIG.read_text().replace("backend: megatron ", "backend: cpu "))
    result = CliRunner().invoke(main, ["--config", str(mine), "--print-config"])
    assert result.exit_code == 1
    assert "backend: 'cpu' (the transformers CPU trainer) was retired" in result.output
    result = CliRunner().invoke(main, ["--config", str(DEMO_CONFIG), "--set", "data.natural_corpus=web/*.jsonl",
                                       "--print-config"])
    assert result.exit_code == 1 and "eval_domains: your own natural corpus needs" in result.output


def test_help_is_fast_to_import_and_shows_an_example():
    out = subprocess.run([sys.executable, "-m", "study", "-h"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "python -m study --config study/demo.yaml" in out.stdout
    assert "torch" not in subprocess.run(
        [sys.executable, "-c", "import sys, study.__main__; print(' '.join(sys.modules))"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()


def test_a_users_own_corpus_and_domains_and_the_cluster_wait(tmp_path):
    from study.config import StudyConfig
    from study.pipeline import Study

    web = tmp_path / "web"
    web.mkdir()
    for i in range(2):
        (web / f"part-{i}.jsonl").write_text('{"id": "a", "text": "one document"}\n')
    held = tmp_path / "wiki.jsonl"
    held.write_text('{"id": "h", "text": "held out"}\n')
    study = Study(StudyConfig(workdir=tmp_path / "out", natural_corpus=str(web / "*.jsonl"),
                              eval_domains=(f"wiki={held}",), backend="bridge", executor="slurm"))
    files, evals = study.natural()
    assert files == [str(web / "part-0.jsonl"), str(web / "part-1.jsonl")] and evals == {"wiki": held}
    runs = tmp_path / "out" / "runs"
    for name, done in (("1B-5B-abc-hq", True), ("1B-5B-def-natural", False)):
        (runs / name).mkdir(parents=True)
        (runs / name / "run.json").write_text("{}")
        if done:
            (runs / name / "results.json").write_text("{}")
    (runs / "_sweeps").mkdir()
    (runs / "_arrays" / "bridge-n1").mkdir(parents=True)
    assert study.unfinished_runs() == ["1B-5B-def-natural"]  # bookkeeping folders are not runs

    missing = Study(StudyConfig(workdir=tmp_path / "out2", natural_corpus=str(web / "*.jsonl"),
                                eval_domains=(f"wiki={tmp_path / 'nope.jsonl'}",)))
    with pytest.raises(SynthscaleError, match="eval_domains: wiki: no such file"):
        missing.natural()
