"""Reading the results table: formats, bad rows excluded and listed, duplicates flagged."""

import math

import pandas as pd
import pytest

from analysis.data.table import TableError, choose_baseline, read_results


def _rows():
    return [
        {"run_id": "r1", "mixture": "natural", "N": 1e8, "D": 1e9, "loss": 3.0, "synthetic_fraction": 0.0, "loss.web": 3.1},
        {"run_id": "r2", "mixture": "natural", "N": 1e8, "D": 2e9, "loss": 2.9, "synthetic_fraction": 0.0, "loss.web": 3.0},
        {"run_id": "r3", "mixture": "hq_33", "N": "100M", "D": "4B", "loss": 2.7, "synthetic_fraction": 0.33, "loss.web": 2.8},
    ]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_reads_every_format(tmp_path, suffix):
    frame = pd.DataFrame(_rows())
    frame["N"] = frame["N"].astype(str)
    frame["D"] = frame["D"].astype(str)
    path = tmp_path / f"results{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    table = read_results(path)
    assert len(table.runs) == 3
    assert table.runs.loc[table.runs.run_id == "r3", "N"].item() == 1e8  # "100M" parsed
    assert table.runs.loc[table.runs.run_id == "r3", "D"].item() == 4e9
    assert table.domains == ["web"]
    assert table.mixtures == ["hq_33", "natural"]
    assert choose_baseline(table) == ("natural", "'natural' (the only mixture with synthetic_fraction 0)")


def test_domain_target(tmp_path):
    path = tmp_path / "r.csv"
    pd.DataFrame(_rows()).to_csv(path, index=False)
    table = read_results(path, target="loss.web")
    assert list(table.runs["loss"]) == [3.1, 3.0, 2.8]
    with pytest.raises(TableError, match="no column 'loss.code'"):
        read_results(path, target="loss.code")


def test_missing_columns_are_named(tmp_path):
    path = tmp_path / "r.csv"
    pd.DataFrame([{"mixture": "a", "N": 1, "loss": 2}]).to_csv(path, index=False)
    with pytest.raises(TableError, match=r"lacks column\(s\) \['D'\]"):
        read_results(path)


def test_bad_losses_are_excluded_and_listed(tmp_path):
    rows = _rows() + [
        {"run_id": "nan", "mixture": "hq_33", "N": 1e8, "D": 8e9, "loss": float("nan"), "synthetic_fraction": 0.33},
        {"run_id": "inf", "mixture": "hq_33", "N": 1e8, "D": 8e9, "loss": float("inf"), "synthetic_fraction": 0.33},
        {"run_id": "neg", "mixture": "hq_33", "N": 1e8, "D": 8e9, "loss": -1.0, "synthetic_fraction": 0.33},
        {"run_id": "badN", "mixture": "hq_33", "N": "lots", "D": 8e9, "loss": 2.0, "synthetic_fraction": 0.33},
    ]
    path = tmp_path / "r.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    table = read_results(path)
    assert list(table.runs["run_id"]) == ["r1", "r2", "r3"]
    reasons = {e["run_id"]: e["reason"] for e in table.excluded}
    assert set(reasons) == {"nan", "inf", "neg", "badN"}
    assert "NaN" in reasons["nan"] and "infinite" in reasons["inf"]
    assert "not positive" in reasons["neg"] and "N is not a positive count: 'lots'" in reasons["badN"]
    assert [e["row"] for e in table.excluded] == [4, 5, 6, 7]
    assert table.summary()["excluded"] == table.excluded


def test_duplicates_dropped_and_repeats_flagged(tmp_path):
    rows = _rows() + [dict(_rows()[0]), {**_rows()[0], "run_id": "r1-seed2", "loss": 3.02}]
    path = tmp_path / "r.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    table = read_results(path)
    assert [d["row"] for d in table.duplicates] == [4]
    assert table.duplicates[0]["duplicate_of_row"] == 1
    assert len(table.runs) == 4
    assert table.repeated == [{"condition": "", "mixture": "natural", "N": 1e8, "D": 1e9,
                               "kind": "repeats (seed not recorded)", "run_ids": ["r1", "r1-seed2"],
                               "seeds": [None, None], "losses": [3.0, 3.02]}]


def test_duplicates_without_run_id(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "run_id"} for r in _rows()]
    path = tmp_path / "r.csv"
    pd.DataFrame(rows + [rows[1]]).to_csv(path, index=False)
    table = read_results(path)
    assert len(table.runs) == 3 and table.duplicates[0]["reason"].startswith("same mixture, N, D and loss")


def test_inconsistent_fraction_is_an_error(tmp_path):
    rows = _rows()
    rows[1]["synthetic_fraction"] = 0.5
    path = tmp_path / "r.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    with pytest.raises(TableError, match="synthetic_fraction differs.*natural"):
        read_results(path)


def test_baseline_choice(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "synthetic_fraction"} for r in _rows()]
    path = tmp_path / "r.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    table = read_results(path)
    assert math.isnan(table.synthetic_fraction("natural"))
    assert choose_baseline(table)[0] is None
    assert choose_baseline(table, "natural")[0] == "natural"
    with pytest.raises(TableError, match="'web' is not a mixture"):
        choose_baseline(table, "web")


def test_unreadable_inputs(tmp_path):
    with pytest.raises(TableError, match="does not exist"):
        read_results(tmp_path / "missing.csv")
    (tmp_path / "r.txt").write_text("x")
    with pytest.raises(TableError, match="unknown format"):
        read_results(tmp_path / "r.txt")
