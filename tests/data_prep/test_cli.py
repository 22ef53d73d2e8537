"""data_prep's command line follows the shared conventions: -h, examples, --json/--json-file,
--workers 0, exit 2 for usage and 1 for bad data, one-line errors unless --debug, light --help."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from data_prep.blend import make_blend, open_tokenized
from data_prep.cli import main
from data_prep.tokenize import TokenizeConfig, tokenize
from synthscale.cli import resolve_workers
from synthscale.errors import MissingInputError
from tests.data_prep.conftest import make_docs, write_jsonl

COMMANDS = ([], ["tokenize"], ["merge"], ["blend"], ["grid"], ["blend-check"])


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def pair(tmp_path_factory, hf_tokenizer_path):
    """Two small tokenized corpora, as `data_prep tokenize` writes them."""
    root = tmp_path_factory.mktemp("cli")
    prefixes = {}
    for name, seed in (("cc", 1), ("hq", 2)):
        docs = write_jsonl(root / f"{name}.jsonl", make_docs(400, seed=seed))
        tokenize(TokenizeConfig((str(docs),), str(root / name), f"hf:{hf_tokenizer_path}", show_progress=False))
        prefixes[name] = root / name
    return prefixes


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "data_prep")
def test_h_and_help_show_an_example(command):
    short, long = invoke(*command, "-h"), invoke(*command, "--help")
    assert short.exit_code == 0 and short.output == long.output
    assert "Example" in short.output and "Usage:" in short.output


def test_help_and_bad_input_do_not_import_torch_or_megatron(tmp_path):
    """`data_prep X --help` stays light, and tokenize checks its inputs before importing megatron-core."""
    code = ("import sys\nfrom data_prep.cli import main\n"
            "for c in ([], ['tokenize'], ['merge'], ['blend'], ['grid'], ['blend-check']):\n"
            "    try:\n        main([*c, '--help'])\n    except SystemExit:\n        pass\n"
            f"try:\n    main(['tokenize', {str(tmp_path / 'none.jsonl')!r}, '-o', 'x', '--tokenizer', 'hf:x'])\n"
            "except SystemExit as exit:\n    assert exit.code == 1\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'megatron')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_tokenize_json_on_stdout_and_json_file(tmp_path, hf_tokenizer_path):
    docs = write_jsonl(tmp_path / "d.jsonl", make_docs(30))
    result = invoke("tokenize", docs, "--output", tmp_path / "a", "--tokenizer", f"hf:{hf_tokenizer_path}",
                    "--no-progress", "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # stdout holds the JSON document only
    assert printed == json.loads((tmp_path / "a.manifest.json").read_text())
    assert printed["documents"] == 30
    result = invoke("tokenize", docs, "--output", tmp_path / "b", "--tokenizer", f"hf:{hf_tokenizer_path}",
                    "--no-progress", "--json-file", tmp_path / "out.json")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("wrote 30 documents")  # the human line; the JSON went to the file
    assert json.loads((tmp_path / "out.json").read_text()) == json.loads((tmp_path / "b.manifest.json").read_text())


def test_workers_0_means_all_cores(tmp_path, hf_tokenizer_path):
    docs = write_jsonl(tmp_path / "d.jsonl", make_docs(600))
    result = invoke("tokenize", docs, "--output", tmp_path / "w", "--tokenizer", f"hf:{hf_tokenizer_path}",
                    "--no-progress", "--workers", "0")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "w.manifest.json").read_text())
    assert manifest["provenance"]["config"]["workers"] == resolve_workers(0) == len(os.sched_getaffinity(0))
    assert invoke("tokenize", docs, "--output", tmp_path / "x", "--tokenizer", "hf:x", "--workers", "-1").exit_code == 2


def test_blend_and_grid_json(tmp_path, pair):
    result = invoke("blend", "--data", f"cc={pair['cc']}", "--data", f"hq={pair['hq']}", "--synthetic", "hq",
                    "--weights", "cc=0.75,hq=0.25", "--tokens", "2K", "--seq-length", "32",
                    "--output", tmp_path / "b.yaml", "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    written = yaml.safe_load((tmp_path / "b.yaml").read_text())
    assert printed["identity_sha256"] == written["identity_sha256"] and printed["data_path"] == written["data_path"]
    assert printed["synthetic_fraction"] == 0.25
    result = invoke("grid", "--data", f"cc={pair['cc']}", "--data", f"hq={pair['hq']}", "--synthetic", "hq",
                    "--tokens", "2K", "--seq-length", "32", "--ratios", "0,50", "--output-dir", tmp_path / "g", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["name"], r["synthetic_fraction"]) for r in rows] == [("cc", 0), ("hq-50pct", 0.5)]
    assert all(os.path.isfile(r["path"]) for r in rows)


def test_grid_roles_have_one_meaning(tmp_path, pair):
    base = ["grid", "--tokens", "2K", "--seq-length", "32", "--ratios", "0,50", "--output-dir", tmp_path / "g"]
    # the old form (--synthetic declaring a source) is a usage error that says what to write
    result = invoke(*base, "--data", f"cc={pair['cc']}", "--synthetic", f"hq={pair['hq']}")
    assert result.exit_code == 2
    assert "--synthetic takes the NAME of a --data source" in result.output and f"--data hq={pair['hq']}" in result.output
    # neither corpus names a generator: both are natural until one is marked
    result = invoke(*base, "--data", f"cc={pair['cc']}", "--data", f"hq={pair['hq']}")
    assert result.exit_code == 1 and "needs exactly one natural source, got ['cc', 'hq']" in result.output
    result = invoke(*base, "--data", f"cc={pair['cc']}", "--data", f"hq={pair['hq']}", "--synthetic", "qa")
    assert result.exit_code == 1 and "--synthetic: no --data for 'qa'" in result.output
    result = invoke(*base, "--data", f"cc={pair['cc']}", "--data", f"hq={pair['hq']}", "--natural", "hq",
                    "--synthetic", "cc")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["cc-50pct.yaml", "hq.yaml"]


def test_usage_errors_exit_2_bad_data_exits_1(tmp_path, pair):
    blend = ["blend", "--data", f"cc={pair['cc']}", "--weights", "cc=1", "--seq-length", "32",
             "--output", tmp_path / "b.yaml"]
    assert invoke(*blend, "--tokens", "lots").exit_code == 2
    assert invoke(*blend, "--tokens", "1K", "--data", "cc=other").exit_code == 2  # a name given twice
    assert invoke("grid", "--data", f"cc={pair['cc']}", "--tokens", "1K", "--seq-length", "8", "--ratios", "0,150",
                  "--output-dir", tmp_path / "g").exit_code == 2
    missing = invoke("blend", "--data", f"x={tmp_path / 'none'}", "--weights", "x=1", "--tokens", "1K",
                     "--seq-length", "8", "--output", tmp_path / "b.yaml")
    assert missing.exit_code == 1
    assert missing.output.strip().splitlines() == [
        f"Error: data 'x': no manifest at {str(tmp_path / 'none.manifest.json')!r} "
        f"(run `data_prep tokenize ... --output {tmp_path / 'none'}` first)"]
    bad_input = invoke("tokenize", tmp_path / "nope.jsonl", "--output", tmp_path / "t", "--tokenizer", "hf:x")
    assert bad_input.exit_code == 1 and "does not exist or is not a file" in bad_input.output


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.delenv("SYNTHSCALE_DEBUG", raising=False)
    args = ["blend", "--data", f"x={tmp_path / 'none'}", "--weights", "x=1", "--tokens", "1K", "--seq-length", "8",
            "--output", tmp_path / "b.yaml"]
    assert isinstance(invoke("--debug", *args).exception, MissingInputError)
    run = [sys.executable, "-m", "data_prep", *map(str, args)]
    quiet = subprocess.run(run, capture_output=True, text=True, env={**os.environ, "SYNTHSCALE_DEBUG": "0"})
    loud = subprocess.run(run, capture_output=True, text=True, env={**os.environ, "SYNTHSCALE_DEBUG": "1"})
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr and quiet.stderr.startswith("Error: data 'x'")
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "MissingInputError" in loud.stderr


def test_blend_check_failure_exits_1_after_the_report(tmp_path, pair):
    path = tmp_path / "b.yaml"
    members = [open_tokenized(n, pair[n]) for n in ("cc", "hq")]
    # 1,001 samples: 0.67 of them is not a whole number, so the realised share cannot be exact
    make_blend("b", members, {"cc": 0.67, "hq": 0.33}, tokens=8_008, seq_length=8).save(path)
    passed = invoke("blend-check", path, "--json-file", tmp_path / "ok.json")
    assert passed.exit_code == 0 and "OK" in passed.stdout
    report = json.loads((tmp_path / "ok.json").read_text())
    assert report["ok"] is True and report["max_abs_error"] > 0
    failed = invoke("blend-check", path, "--tolerance", "0", "--json")
    assert failed.exit_code == 1
    assert json.loads(failed.stdout)["ok"] is False  # the report is printed before the failure
    assert "exceeds --tolerance 0" in failed.stderr
