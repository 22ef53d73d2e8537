"""`analysis fit` and bad input as a user meets it on the command line; the CLI conventions."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from analysis.cli import main
from analysis.data.table import TableError
from synthscale.errors import SynthscaleError
from tests.analysis.simulate import TrueLaw, simulate_table

TRUE = TrueLaw(A=400.0, B=1200.0, E=1.7, alpha=0.34, beta=0.28)
BUDGETS = [1e9, 2e9, 4e9, 8e9, 1.6e10]


def _csv(tmp_path, frame, name="r.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def _run(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("command", [[], ["fit"], ["report"], ["unigram"]])
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_ends_with_an_example(command, flag):
    result = _run(*command, flag)
    assert result.exit_code == 0, result.output
    assert re.search(r"\n  Example:\n    analysis " + (command[0] if command else r"\w+"), result.output)


def test_fit_prints_parameters_holdout_and_predictions(tmp_path):
    path = _csv(tmp_path, simulate_table({"m": TRUE}, [1e8], BUDGETS, noise=0.001, seed=2))
    out = tmp_path / "fits.json"
    result = _run("fit", path, "--law", "data", "--bootstrap", "20", "--predict-D", "1T", "--json-file", str(out))
    assert result.exit_code == 0, result.output
    assert "m at N=100M, data law: L(D) = B / D^beta + E, 5 runs" in result.stdout
    assert "beta=0.2" in result.stdout and "holdout data: RMAE" in result.stdout
    assert "predicted data m N=100M D=1T:" in result.stdout and "(extrapolated, 5 runs)" in result.stdout
    document = json.loads(out.read_text())
    (fit,) = document["fits"]["data"]
    assert fit["converged"] and fit["points"] == 5 and fit["bootstrap"]["resamples"] == 20
    assert document["extrapolation"][0]["D"] == 1e12


def test_json_goes_to_stdout_alone_and_workers_0_uses_every_core(tmp_path):
    """`--json`: stdout is the JSON document and nothing else; `--workers 0` (all cores) gives the
    numbers one worker gives (resamples are seeded per fit, not per worker)."""
    path = _csv(tmp_path, simulate_table({"m": TRUE}, [1e8], BUDGETS, noise=0.001, seed=2))
    args = ["fit", path, "--law", "data", "--bootstrap", "20", "--grid", "coarse"]
    one = _run(*args, "--json", "--workers", "1")
    assert one.exit_code == 0, one.output
    document = json.loads(one.stdout)
    assert document["kind"] == "synthscale.analysis"  # json.loads: nothing but the document on stdout
    every = _run(*args, "--json", "-w", "0")
    assert every.exit_code == 0, every.output
    fits = [json.loads(r.stdout)["fits"]["data"][0] for r in (one, every)]
    assert fits[0]["params"] == fits[1]["params"] and fits[0]["intervals"] == fits[1]["intervals"]
    assert _run(*args, "--workers", "-1").exit_code == 2


def test_project_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
    missing = str(tmp_path / "missing.csv")
    result = _run("fit", missing)
    assert result.exit_code == 1
    assert result.output == f"Error: results table {missing!r} does not exist or is not a file\n"
    for debug in (_run("--debug", "fit", missing), _run("fit", missing, "--debug")):
        assert isinstance(debug.exception, TableError) and isinstance(debug.exception, SynthscaleError)


def test_too_few_points_is_an_error_naming_the_mixture(tmp_path):
    frame = pd.concat([simulate_table({"natural": TRUE}, [1e8], BUDGETS, noise=0.001),
                       simulate_table({"hq_33": TRUE}, [1e8], BUDGETS[:3], noise=0.001)])
    path = _csv(tmp_path, frame)
    result = _run("fit", path, "--law", "data", "--bootstrap", "0")
    assert result.exit_code == 1
    assert "hq_33 at N=100M, data law" in result.output
    assert "3 usable run(s), a fit needs at least 4 (3 free parameters + 1)" in result.output
    assert "--skip-unfittable" in result.output
    result = _run("fit", path, "--law", "data", "--bootstrap", "0", "--skip-unfittable")
    assert result.exit_code == 0, result.output
    assert "not fitted: hq_33 at N=100M" in result.output and "natural at N=100M, data law" in result.output


def test_bad_losses_excluded_and_listed_duplicates_flagged(tmp_path):
    frame = simulate_table({"m": TRUE}, [1e8], BUDGETS + [3.2e10], noise=0.001)
    frame.loc[1, "loss"] = np.nan
    frame.loc[2, "loss"] = np.inf
    frame = pd.concat([frame, frame.iloc[[0]]])  # the same run twice
    path = _csv(tmp_path, frame)
    result = _run("fit", path, "--law", "data", "--bootstrap", "0")
    assert result.exit_code == 0, result.output
    assert "excluded row 2 (run m-N1e+08-D2e+09): loss is NaN" in result.output
    assert "excluded row 3 (run m-N1e+08-D4e+09): loss is infinite" in result.output
    assert "dropped row 7 (run m-N1e+08-D1e+09): same run_id as an earlier row (row 1)" in result.output
    assert ", 4 runs" in result.output


def test_a_fit_that_is_not_identified_prints_no_numbers(tmp_path):
    D = np.geomspace(1e9, 1e11, 6)
    up = pd.DataFrame({"mixture": "rising", "N": 1e8, "D": D, "loss": 2.0 + 0.1 * np.log(D / 1e9)})
    path = _csv(tmp_path, pd.concat([up, simulate_table({"good": TRUE}, [1e8], BUDGETS, noise=0.001)]))
    result = _run("fit", path, "--law", "data", "--bootstrap", "10", "--no-holdout")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    at = lines.index(next(line for line in lines if line.startswith("rising at N=100M")))
    assert lines[at + 1].strip().startswith("not identified: ")
    assert "exponent beta on its lower bound 0" in lines[at + 1]
    assert "B=" not in lines[at + 1] and "E=" not in lines[at + 1]
    good = lines.index(next(line for line in lines if line.startswith("good at N=100M")))
    assert "B=" in lines[good + 1]


def test_bad_options_are_named(tmp_path):
    path = _csv(tmp_path, simulate_table({"m": TRUE}, [1e8], BUDGETS, noise=0.001))
    result = _run("fit", path, "--confidence", "1.5")
    assert result.exit_code == 2 and "'--confidence': 1.5 is not in the range 0.5<=x<1" in result.output
    result = _run("fit", path, "--predict-D", "lots")
    assert result.exit_code == 2 and "'--predict-D'" in result.output and "expected a number like 5e9" in result.output
    result = _run("fit", path, "--target", "accuracy")
    assert result.exit_code == 2 and "target: expected 'loss' or 'loss.<domain>', got 'accuracy'" in result.output
    result = _run("report", path, "-o", str(tmp_path / "r"), "--baseline", "nope", "--bootstrap", "0")
    assert result.exit_code == 2 and "'nope' is not a mixture" in result.output
    result = _run("report", path, "-o", str(tmp_path / "r"), "--domain-bootstrap", "-1")
    assert result.exit_code == 2 and "'--domain-bootstrap': -1 is not in the range x>=0" in result.output
    result = _run("report", path, "-o", str(tmp_path / "r"), "--unigram-train", "natural", "--unigram-test", "t")
    assert result.exit_code == 2 and "'--unigram-train': expected NAME=PREFIX, got 'natural'" in result.output
    assert not (tmp_path / "r").exists()


def test_the_law_choices_are_the_laws():
    from analysis.core.defaults import LAW_NAMES
    from analysis.core.laws import LAWS

    assert sorted(LAW_NAMES) == sorted(LAWS)
