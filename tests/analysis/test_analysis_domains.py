"""`analysis report` per evaluation domain, one best-ratio curve per family, and the summary."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from analysis.cli import main
from tests.analysis.helpers import GENERATOR, TABLE_COLUMNS
from tests.analysis.simulate import TrueLaw, simulate_table

SIZES, BUDGETS = list(np.geomspace(1e7, 1e9, 4)), list(np.geomspace(1e8, 1e11, 5))
NATURAL = TrueLaw(A=400.0, B=1200.0, E=1.80, alpha=0.34, beta=0.28)
HQ = TrueLaw(A=400.0, B=800.0, E=1.85, alpha=0.34, beta=0.28)
QA = TrueLaw(A=400.0, B=1100.0, E=1.70, alpha=0.34, beta=0.28)


def _shift(law: TrueLaw, dE: float) -> TrueLaw:
    return TrueLaw(law.A, law.B, law.E + dE, law.alpha, law.beta)


def _grid_table(tmp_path):
    """The names `data_prep grid` writes (hq-33pct, qa-33pct, ...), two domains of different kinds."""
    base = {"natural": NATURAL, "hq-33pct": HQ, "hq-67pct": _shift(HQ, 0.05), "qa-33pct": QA, "qa-67pct": _shift(QA, 0.1)}
    fractions = {"natural": 0.0, "hq-33pct": 0.33, "hq-67pct": 0.67, "qa-33pct": 0.33, "qa-67pct": 0.67}
    labels = {m: (m.split("-")[0], GENERATOR) if f else ("", "") for m, f in fractions.items()}  # the fixture's own truth
    domains = {"web": base, "code": {m: _shift(law, 0.6) for m, law in base.items()}}
    frame = simulate_table(base, SIZES, BUDGETS, noise=0.001, seed=3, fractions=fractions, labels=labels,
                           condition=("cpu", "h1"), domains=domains)
    assert list(frame.columns) == TABLE_COLUMNS + ["loss.web", "loss.code"]
    path = tmp_path / "results.csv"
    frame.to_csv(path, index=False)
    return path


def _report(path, out, *extra):
    result = CliRunner().invoke(main, ["report", str(path), "-o", str(out), "--law", "joint", "--grid", "coarse",
                                       "--bootstrap", "20", *extra])
    assert result.exit_code == 0, result.output
    return result.output, json.loads((out / "fits.json").read_text())


def test_each_domain_is_fitted_with_cheaper_settings(tmp_path):
    path = _grid_table(tmp_path)
    printed, fits = _report(path, tmp_path / "r", "--domain-bootstrap", "8", "--label", "tiny-scale demonstration",
                            "--speedup-law", "joint")
    assert set(fits["domains"]) == {"loss.web", "loss.code"}
    assert fits["domain_settings"]["bootstrap"] == 8 and fits["domain_settings"]["fit"]["grid"] is not None
    assert fits["domain_settings"]["holdout"] is False
    for target, shift in (("loss.web", 0.0), ("loss.code", 0.6)):
        (analysis,) = fits["domains"][target]
        assert analysis["target"] == target and analysis["condition"] == "cpu/h1"
        joint = {f["mixture"]: f for f in analysis["fits"]["joint"]}
        assert joint["natural"]["bootstrap"]["resamples"] == 8
        assert joint["natural"]["params"]["E"] == pytest.approx(1.80 + shift, rel=0.03)
        assert {(r["family"], r["generator"]) for r in analysis["best_ratio"]} == {("hq", GENERATOR), ("qa", GENERATOR)}
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert "## Per evaluation domain" in markdown
    assert "| mixture | loss | loss.code | loss.web |" in markdown
    assert f"| hq/{GENERATOR} | " in markdown.split("## Per evaluation domain")[1]
    summary = (tmp_path / "r" / "summary.txt").read_text().splitlines()
    assert len(summary) == 5 and summary[0].startswith("tiny-scale demonstration: results.csv, loss, 100 runs")
    assert summary[1].startswith("measured vs natural at equal (N, D): ") and summary[2].startswith("fits: ")
    assert summary[3].startswith("speed-up over natural, each N at its largest run: hq-33pct ")  # the largest first
    assert "at N=1B, D=100B (joint law; 20+20 runs; extrapolated)" in summary[3]
    assert summary[4].startswith(f"best ratio: hq/{GENERATOR} ") and "(joint law, 60 runs" in summary[4]
    assert all(len(line) <= 220 for line in summary)
    assert printed.rstrip().endswith("\n".join(summary))

    _, fits = _report(path, tmp_path / "r2", "--no-domains")
    assert fits["domains"] == {} and fits["domain_settings"] is None


def test_one_best_ratio_curve_per_family(tmp_path):
    """hq and qa blends named by `data_prep grid` give two ratio axes, each with the natural mixture."""
    _, fits = _report(_grid_table(tmp_path), tmp_path / "r", "--no-domains")
    curves = {}
    for r in fits["best_ratio"]:
        assert r["identified"], r
        curves.setdefault(r["family"], {tuple(c["mixture"] for c in r["curve"])})
        curves[r["family"]].add(tuple(c["mixture"] for c in r["curve"]))
    assert curves == {"hq": {("natural", "hq-33pct", "hq-67pct")}, "qa": {("natural", "qa-33pct", "qa-67pct")}}
    largest = [r for r in fits["best_ratio"] if r["N"] == SIZES[-1] and r["D"] == BUDGETS[-1]]
    truth = {"hq": HQ, "qa": QA}
    for r in largest:  # at the largest (N, D) the fitted best ratio is the true one
        family = r["family"]
        members = {"natural": NATURAL, f"{family}-33pct": truth[family],
                   f"{family}-67pct": _shift(truth[family], 0.05 if family == "hq" else 0.1)}
        best = min(members, key=lambda m: float(members[m].loss(SIZES[-1], BUDGETS[-1])))
        assert r["best_mixture"] == best
    figures = sorted(p.stem for p in (tmp_path / "r" / "figures").glob("best_ratio_*.png"))
    assert len(figures) == 2
