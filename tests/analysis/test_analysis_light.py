"""`synthscale[analysis]` without torch or megatron-core: fit and report work, unigram says what to install;
`analysis --help` imports nothing heavy.

Each check runs the real CLI in a fresh interpreter whose import system refuses torch, megatron-core
and the data_prep extra's other libraries, as if they were not installed.
"""

from __future__ import annotations

import json
import subprocess
import sys

HIDDEN = ("torch", "megatron", "transformers", "tokenizers", "tiktoken", "zstandard", "psutil", "vllm", "nemo_run")

RUNNER = """
import importlib.abc, json, sys

HIDDEN = set(json.loads(sys.argv[1]))


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
from analysis.cli import main

try:
    main(sys.argv[3:], prog_name="analysis")
except SystemExit as exc:
    code = exc.code
loaded = sorted({m.split(".")[0] for m in sys.modules} & (HIDDEN | {"data_prep", "numpy", "scipy", "pandas", "matplotlib"}))
with open(sys.argv[2], "w") as f:
    json.dump({"code": code, "loaded": loaded}, f)
"""


def _analysis(tmp_path, *args: str) -> tuple[dict, subprocess.CompletedProcess]:
    record = tmp_path / "record.json"
    proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(HIDDEN), str(record), *args],
                          capture_output=True, text=True, timeout=600)
    assert record.exists(), proc.stderr
    return json.loads(record.read_text()), proc


def test_fit_and_report_without_torch_or_megatron(results_csv, tmp_path):
    out = tmp_path / "report"
    run, proc = _analysis(tmp_path, "report", str(results_csv), "--output", str(out), "--law", "data", "--grid",
                          "coarse", "--bootstrap", "3")
    assert run["code"] == 0, proc.stderr
    assert (out / "report.html").is_file() and (out / "report.config.yaml").is_file()
    assert json.loads((out / "fits.json").read_text())["fits"]["data"]
    assert not set(run["loaded"]) & {*HIDDEN, "data_prep"}, run["loaded"]
    assert {"scipy", "pandas", "matplotlib"} <= set(run["loaded"])  # the report really ran here

    fits = tmp_path / "fits.json"
    run, proc = _analysis(tmp_path, "fit", str(results_csv), "--law", "data", "--bootstrap", "0", "--grid", "coarse",
                          "--json-file", str(fits))
    assert run["code"] == 0, proc.stderr
    assert "natural at N=200M, data law" in proc.stdout and json.loads(fits.read_text())["fits"]["data"]
    assert not set(run["loaded"]) & {*HIDDEN, "data_prep"}, run["loaded"]


def test_unigram_without_the_data_extra_says_what_to_install(tmp_path, write_tokens):
    prefix = str(write_tokens(tmp_path / "tokens", [[1, 2, 3]]))  # written here, where megatron-core is installed
    run, proc = _analysis(tmp_path, "unigram", "--train", f"a={prefix}", "--test", prefix)
    assert run["code"] == 1
    (line,) = proc.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith("Error: unigram set 'test': ") and "pip install 'synthscale[data_prep]'" in line
    assert not set(run["loaded"]) & set(HIDDEN)


def test_help_imports_nothing_heavy(tmp_path):
    for command in ([], ["fit"], ["report"], ["unigram"]):
        run, proc = _analysis(tmp_path, *command, "--help")
        assert run["code"] == 0 and "Example:" in proc.stdout
        assert run["loaded"] == [], (command, run["loaded"])  # numpy, scipy, pandas, matplotlib load in the commands
