"""Converged is not identified: bounds, E driven to zero, intervals spanning more than a decade."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from analysis.cli import main
from analysis.core.identify import E_FLOOR_SHARE, interval_problems
from analysis.core.settings import AnalysisConfig
from analysis.data.grouping import split_conditions
from analysis.data.table import read_results
from analysis.pipeline import run_analysis
from analysis.report.textfmt import fmt
from tests.analysis.helpers import GENERATOR
from tests.analysis.simulate import TrueLaw, simulate_table

TRUE = TrueLaw(A=400.0, B=1200.0, E=1.7, alpha=0.34, beta=0.28)
N = 1e8


def _data_fit(tmp_path, loss_of_D, bootstrap=100, budgets=np.geomspace(1e8, 1e11, 12)):
    frame = pd.DataFrame({"run_id": [f"r{i}" for i in range(len(budgets))], "mixture": "m", "N": N, "D": budgets,
                          "loss": loss_of_D(np.asarray(budgets))})
    path = tmp_path / "r.csv"
    frame.to_csv(path, index=False)
    (table,), _ = split_conditions(read_results(path))
    analysis = run_analysis(table, AnalysisConfig(laws=("data",), bootstrap=bootstrap, holdout=False))
    (fitted,) = analysis.fits["data"]
    return fitted


def test_a_planted_well_posed_curve_is_identified_and_recovered(tmp_path):
    rng = np.random.default_rng(4)
    fitted = _data_fit(tmp_path, lambda D: TRUE.loss(N, D) * np.exp(rng.normal(0, 0.002, D.size)))
    assert fitted.fit.converged and fitted.identified, fitted.reason()
    assert fitted.identification.bootstrap_checked and fitted.identification.problems == []
    intervals = fitted.samples.param_intervals("m", 0.95)
    floor = TRUE.E + TRUE.A / N**TRUE.alpha
    for name, value in {"B": TRUE.B, "E": floor, "beta": TRUE.beta}.items():
        lo, hi = intervals[name]
        assert lo <= value <= hi and hi / lo <= 10, (name, value, lo, hi)
    assert fitted.to_dict(0.95)["params"]["E"] == pytest.approx(floor, rel=0.02)


def test_a_pure_power_law_drives_E_to_zero_and_is_not_identified(tmp_path):
    """No curvature on log axes (E = 0): the optimiser converges with E at nothing."""
    rng = np.random.default_rng(5)
    fitted = _data_fit(tmp_path, lambda D: 1200.0 / D**0.28 * np.exp(rng.normal(0, 0.002, D.size)), bootstrap=30)
    assert fitted.fit.converged and not fitted.identified
    rules = {(p.rule, p.parameter) for p in fitted.identification.problems}
    assert ("E to zero", "E") in rules
    assert fitted.fit.params()["E"] < E_FLOOR_SHARE * fitted.unit.loss.min()  # the boundary solution behind it
    assert "E driven to zero" in fitted.reason() and f"below {E_FLOOR_SHARE:g} x the smallest observed loss" in fitted.reason()
    record = fitted.to_dict(0.95)
    assert "params" not in record and "intervals" not in record and record["identified"] is False
    assert record["not_identified"]["optimum"]["E"] == fitted.fit.params()["E"]


def test_a_flat_loss_puts_a_parameter_on_a_bound(tmp_path):
    rng = np.random.default_rng(6)
    fitted = _data_fit(tmp_path, lambda D: 3.0 * np.exp(rng.normal(0, 0.001, D.size)), bootstrap=0)
    assert fitted.fit.converged and not fitted.identified
    assert any(p.rule == "bound" for p in fitted.identification.problems), fitted.reason()
    assert "bound" in fitted.reason() and not fitted.identification.bootstrap_checked


def test_interval_rules():
    ok = {"m": {"A": [10.0, 90.0], "E": [1.5, 1.9], "alpha": [0.2, 0.4]}}
    assert interval_problems(ok, 100, 3, shared=False, loss_scale={"m": 2.5}) == []
    wide = {"m": {"A": [9.56, 1.06e13], "E": [1.0e-27, 1.33e-12], "alpha": [0.0, 0.4], "beta": [0.1, np.inf]}}
    problems = interval_problems(wide, 100, 60, shared=False, loss_scale={"m": 2.5})
    by = {p.parameter: p for p in problems}
    assert set(by) == {None, "A", "alpha", "beta"}  # E within 1e-12 of 0 is narrow: E's rule is absolute width
    assert by[None].reason == "only 40 of 100 bootstrap resamples converged"
    assert "the bootstrap interval of A spans a factor 1.11e+12 (hi/lo), more than a decade" == by["A"].reason
    assert "reaches 0" in by["alpha"].reason and "without an upper end" in by["beta"].reason
    assert "9.56" not in " ".join(p.reason for p in problems)  # the reason gives no estimate
    # E: its width against the loss scale, not hi/lo: [1.5, 1.9] is 16% of 2.5 but 27% of 1.5
    (e,) = interval_problems({"m": {"E": [1.5, 1.9]}}, 100, 0, shared=False, loss_scale={"m": 1.5})
    assert e.parameter == "E" and "wider than 20% of the smallest observed loss" in e.reason
    # fewer than 2 resamples: nothing can be checked (the pipeline marks the fit not bootstrap-checked)
    assert interval_problems({"m": {"A": [1.0, 1e9]}}, 1, 0, shared=False) == []
    (few,) = interval_problems({"m": {"A": None}}, 2, 1, shared=False)
    assert few.reason == "only 1 of 2 bootstrap resamples converged"


def _report_with_a_pure_power_law(tmp_path):
    """natural: a law with a floor; hq-33pct: the same without E (no floor to find)."""
    sizes, budgets = np.geomspace(1e7, 1e9, 4), np.geomspace(1e8, 1e11, 5)
    laws = {"natural": TRUE, "hq-33pct": TrueLaw(A=400.0, B=1000.0, E=0.0, alpha=0.34, beta=0.28)}
    frame = simulate_table(laws, sizes, budgets, noise=0.001, seed=2, fractions={"natural": 0.0, "hq-33pct": 0.33},
                           labels={"natural": ("", ""), "hq-33pct": ("hq", GENERATOR)}, condition=("cpu", "h1"))
    path = tmp_path / "r.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", str(path), "-o", str(out), "--law", "data", "--law", "joint",
                                       "--grid", "coarse", "--bootstrap", "20", "--label", "tiny-scale demonstration"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_findings_from_a_fit_that_is_not_identified_say_so_and_print_no_estimate(tmp_path):
    out, printed = _report_with_a_pure_power_law(tmp_path)
    fits = json.loads((out / "fits.json").read_text())
    joint = {f["mixture"]: f for f in fits["fits"]["joint"]}
    assert joint["natural"]["identified"], joint["natural"]["reasons"]
    bad = joint["hq-33pct"]
    assert bad["converged"] and not bad["identified"] and "params" not in bad
    assert "E driven to zero" in bad["not_identified"]["reason"]
    E = {r["mixture"]: r for r in fits["irreducible_loss"]}
    assert E["hq-33pct"]["E"] is None and E["hq-33pct"]["reason"] == bad["not_identified"]["reason"]
    assert E["natural"]["identified"] and E["natural"]["E"] == pytest.approx(1.7, rel=0.05)
    (ratio,) = fits["best_ratio"]
    assert not ratio["identified"] and "'hq-33pct' joint fit: E driven to zero" in ratio["reason"]
    # At a fixed N the data law's floor is A / N^alpha + E, which the runs do show: identified.
    assert all(s["identified"] for s in fits["speedup"]) and all(f["identified"] for f in fits["fits"]["data"])

    markdown, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    summary = (out / "summary.txt").read_text()
    assert "| joint | hq-33pct | all runs | 20 | " in markdown and "| not identified | E→0" in markdown
    assert "1 of 2 irreducible losses E cannot be stated: their joint-law fits are not identified (E→0" in markdown
    lines = summary.splitlines()
    assert lines[2].startswith("fits: ") and "E→0" in lines[2]
    assert "E natural " in lines[4] and "E hq-33pct" not in summary
    assert summary.startswith("tiny-scale demonstration: ") and len(summary.splitlines()) <= 5
    # No estimate of a parameter that is not identified (nor its interval), in any text a reader sees.
    unidentified = [f for law in ("data", "joint") for f in fits["fits"][law] if "not_identified" in f]
    assert unidentified
    for fit in unidentified:
        entry, flagged = fit["not_identified"], {r["parameter"] for r in fit["reasons"]}
        assert "E" in flagged
        values = [entry["optimum"][name] for name in flagged]
        values += [v for name in flagged for v in (entry["intervals"] or {}).get(name) or []]
        for value in values:
            text = fmt(value)
            for document in (markdown, html, summary, printed):
                assert not re.search(rf"(?<![\d.]){re.escape(text)}(?![\d])", document), (text, entry)


def test_half_the_resamples_and_two_of_them_are_enough():
    """'At least half of them converged (and at least 2)': exactly half passes, exactly 2 pass; one
    fewer is refused as the rule 'resamples', written to the report with its reason."""
    from analysis.core.identify import Identification

    ok = {"m": {"A": [10.0, 90.0], "alpha": [0.2, 0.4]}}
    assert interval_problems(ok, 100, 50, shared=False) == []  # 50 of 100: half
    assert interval_problems(ok, 2, 0, shared=False) == [] and interval_problems(ok, 4, 2, shared=False) == []
    (few,) = interval_problems(ok, 100, 51, shared=False)
    assert few.to_dict() == {"rule": "resamples", "parameter": None, "mixture": None,
                             "reason": "only 49 of 100 bootstrap resamples converged"}
    fit = Identification(converged=True, problems=[few])
    assert not fit.identified and fit.short() == "resamples"
    assert fit.to_dict()["reasons"] == [few.to_dict()]


def test_reasons_of_one_mixture_keep_the_shared_ones_and_short_names_each_once():
    """A fit shared across mixtures: a mixture's reason is its own problems and the shared ones, in
    order, '; '-joined; a mixture with none of its own still reads the shared ones; with no
    mixture every problem is read. The short form names each kind once, in order."""
    from analysis.core.identify import Identification, Problem

    shared = Problem("bound", "alpha", None, "alpha is on a bound", "on a bound")
    of_a = Problem("interval", "A", "a", "a: A spans more than a decade", "wide interval")
    of_b = Problem("bound", "B", "b", "b: B is on a bound", "on a bound")
    fit = Identification(converged=True, problems=[shared, of_a, of_b])
    assert fit.reason() == "alpha is on a bound; a: A spans more than a decade; b: B is on a bound"
    assert fit.reason("a") == "alpha is on a bound; a: A spans more than a decade"
    assert fit.reason("c") == "alpha is on a bound"
    assert fit.short() == "on a bound, wide interval"
    only_b = Identification(converged=True, problems=[of_b])
    assert only_b.reason("a") == "b: B is on a bound"  # nothing of its own or shared: every reason


def test_a_shared_fit_checks_its_exponents_once_and_each_mixtures_scales():
    """Across mixtures sharing alpha and beta, a wide exponent is one problem of the whole fit; a
    wide A is a problem of each mixture that has it, named by mixture."""
    wide = {"a": {"A": [1.0, 1e3], "alpha": [0.0, 0.4], "beta": [0.1, np.inf]},
            "b": {"alpha": [0.0, 0.4], "beta": [0.1, np.inf], "A": [1.0, 1e3]}}  # b's A after the exponents
    problems = interval_problems(wide, 100, 0, shared=True)
    assert [(p.parameter, p.mixture) for p in problems] == [("A", "a"), ("alpha", None), ("beta", None), ("A", "b")]
    assert problems[0].reason.startswith("a: ") and problems[3].reason.startswith("b: ")
    assert not any(p.reason.startswith(("a: ", "b: ")) for p in problems[1:3])
    # a parameter without an interval (too few valid resamples) leaves the others checked
    (b_wide,) = interval_problems({"m": {"A": None, "B": [1.0, 1e3]}}, 100, 0, shared=False)
    assert b_wide.parameter == "B"
    with pytest.raises(ValueError, match=r"^interval_problems: E's rule needs loss_scale \(the smallest observed loss\)$"):
        interval_problems({"m": {"E": [1.0, 1.1]}}, 100, 0, shared=False)


def test_the_E_width_rule_and_the_one_sided_D_l_rule_at_their_edges():
    """E: a width of exactly 20% of the smallest loss passes, more is refused with its share; in a
    shared fit the problem is the mixture's. D_l / D_min^beta: an interval reaching 1e-3 reads as
    [0, hi] and passes up to hi = 1 (exactly 1 too); above 1 or without an upper end it is refused;
    away from 0 it must span at most a decade, named in D_min^beta units."""
    assert interval_problems({"m": {"E": [1.0, 1.5]}}, 100, 0, shared=False, loss_scale={"m": 2.5}) == []
    (e,) = interval_problems({"m": {"E": [1.5, 1.9]}}, 100, 0, shared=True, loss_scale={"m": 1.5})
    assert e.to_dict() == {"rule": "interval", "parameter": "E", "mixture": "m", "reason":
                           "m: the bootstrap interval of E is wider than 20% of the smallest observed loss "
                           "(its width: 27% of it)"}  # 0.4 / 1.5
    assert e.short == "E wide"

    def dl(lo, hi):
        return interval_problems({"m": {"D_l": [lo, hi]}}, 100, 0, shared=False, zero_ok={"D_l": 1e-3})

    assert dl(0.0005, 0.5) == [] and dl(1e-3, 0.5) == [] and dl(0.0005, 1.0) == []
    (above,) = dl(0.0005, 2.0)
    assert above.to_dict() == {"rule": "interval", "parameter": "D_l", "mixture": None, "reason":
                               "the bootstrap interval of D_l / D_min^beta reaches 0 but reaches above 1: "
                               "the runs do not tell whether D_l matters"}
    assert above.short == "D_l wide"
    (open_ended,) = dl(0.0005, np.inf)
    assert open_ended.reason == ("the bootstrap interval of D_l / D_min^beta reaches 0 but has no upper end: "
                                 "the runs do not tell whether D_l matters")
    (decades,) = dl(0.01, 0.5)
    assert decades.reason == ("the bootstrap interval of D_l / D_min^beta spans a factor 50 (hi/lo), "
                              "more than a decade")


def test_intervals_reaching_zero_are_named_by_mixture_in_a_shared_fit():
    """A scale whose interval reaches 0 or below, and D_l's one-sided interval above 1, are the
    mixture's problems in a shared fit; a D_l that passes leaves the mixture's other scales checked."""
    problems = interval_problems({"m": {"A": [-1.0, 5.0], "B": [0.0, 5.0], "D_l": [0.0005, 2.0]}}, 100, 0,
                                 shared=True, zero_ok={"D_l": 1e-3})
    assert [p.to_dict() for p in problems] == [
        {"rule": "interval", "parameter": "A", "mixture": "m", "reason": "m: the bootstrap interval of A reaches below 0"},
        {"rule": "interval", "parameter": "B", "mixture": "m", "reason": "m: the bootstrap interval of B reaches 0"},
        {"rule": "interval", "parameter": "D_l", "mixture": "m", "reason":
         "m: the bootstrap interval of D_l / D_min^beta reaches 0 but reaches above 1: the runs do not tell "
         "whether D_l matters"},
    ]
    assert [p.short for p in problems] == ["A wide", "B wide", "D_l wide"]
    (after,) = interval_problems({"m": {"D_l": [0.0005, 0.5], "A": [1.0, 1e3]}}, 100, 0, shared=False,
                                 zero_ok={"D_l": 1e-3})
    assert after.parameter == "A"


def test_exactly_a_decade_passes_and_an_open_interval_is_named_as_such():
    assert interval_problems({"m": {"A": [1.0, 10.0], "alpha": [0.1, 1.0]}}, 100, 0, shared=False) == []
    (open_ended,) = interval_problems({"m": {"B": [2.0, np.inf]}}, 100, 0, shared=True)
    assert open_ended.to_dict() == {"rule": "interval", "parameter": "B", "mixture": "m", "reason":
                                    "m: the bootstrap interval of B spans without an upper end, more than a decade"}
    assert open_ended.short == "B wide"
