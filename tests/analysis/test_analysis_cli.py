"""`analysis fit` and bad input as a user meets it on the command line."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from analysis.cli import main
from analysis.simulate import TrueLaw, simulate_table

TRUE = TrueLaw(A=400.0, B=1200.0, E=1.7, alpha=0.34, beta=0.28)
BUDGETS = [1e9, 2e9, 4e9, 8e9, 1.6e10]


def _csv(tmp_path, frame, name="r.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def _run(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("command", [[], ["fit"], ["report"], ["unigram"]])
def test_help_has_an_example(command):
    result = _run(*command, "--help")
    assert result.exit_code == 0 and "Example: analysis" in result.output


def test_fit_prints_parameters_holdout_and_predictions(tmp_path):
    path = _csv(tmp_path, simulate_table({"m": TRUE}, [1e8], BUDGETS, noise=0.001, seed=2))
    out = tmp_path / "fits.json"
    result = _run("fit", path, "--law", "data", "--bootstrap", "20", "--predict-D", "1T", "--json", str(out))
    assert result.exit_code == 0, result.output
    assert "m at N=100M, data law: L(D) = B / D^beta + E, 5 runs" in result.output
    assert "beta=0.2" in result.output and "holdout data: RMAE" in result.output
    assert "predicted data m N=100M D=1T:" in result.output
    document = json.loads(out.read_text())
    (fit,) = document["fits"]["data"]
    assert fit["converged"] and fit["points"] == 5 and fit["bootstrap"]["resamples"] == 20
    assert document["extrapolation"][0]["D"] == 1e12


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
    assert result.exit_code == 2 and "confidence: must be in [0.5, 1), got 1.5" in result.output
    result = _run("fit", path, "--predict-D", "lots")
    assert result.exit_code == 2 and "--predict-D" in result.output
    result = _run("fit", str(tmp_path / "missing.csv"))
    assert result.exit_code == 1 and "does not exist" in result.output
    result = _run("report", path, "-o", str(tmp_path / "r"), "--baseline", "nope", "--bootstrap", "0")
    assert result.exit_code == 2 and "'nope' is not a mixture" in result.output
    result = _run("report", path, "-o", str(tmp_path / "r"), "--domain-bootstrap", "-1")
    assert result.exit_code == 2 and "--domain-bootstrap" in result.output and "got -1" in result.output
