"""Reading the results table (docs/formats.md section 5) and cleaning it, loudly.

Accepted: CSV (also .csv.gz), Parquet, JSONL (also .jsonl.gz / .json lines) with at least the
columns mixture, N, D, loss; `run_id`, `synthetic_fraction`, `loss.<domain>` and the labelling
fields `family, generator, backend, recipe_hash, seed, eval_identity` are used when present. Mixtures
are identified by these fields, never by parsing their names; a table lacking one degrades as
`notes` say (e.g. every synthetic mixture in one family "unlabelled"). A run's *condition* is
(backend, recipe_hash, eval_identity): runs trained or scored differently are never fitted or
averaged together by default (a table without eval_identity, written before it existed, still
loads: its runs are taken as scored alike).
Rows whose N or D is not a positive count, or whose loss is NaN, infinite or not positive, are
excluded and listed. Exact duplicates (the same run_id twice, or without run_id the same
mixture, N, D and loss) are dropped and listed; different runs of the same (condition,
mixture, N, D) are kept, fitted as separate points, and flagged as repeats (seed repeats when
their seeds differ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.data.labels import conditions, label_mixtures
from synthscale.errors import SynthscaleError
from synthscale.units import parse_count

REQUIRED_COLUMNS = ("mixture", "N", "D", "loss")
LABEL_COLUMNS = ("family", "generator", "backend", "recipe_hash", "seed", "eval_identity")


class TableError(SynthscaleError):
    """The results table cannot be used as it is; the message says why."""


@dataclass
class ResultsTable:
    path: Path
    target: str
    # run_id, mixture, N, D, loss (the target), synthetic_fraction, family, generator, backend,
    # recipe_hash, eval_identity, seed (NaN if not recorded), condition ("" when the table cannot tell), row
    runs: pd.DataFrame
    domains: list[str]
    excluded: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    repeated: list[dict] = field(default_factory=list)
    recorded: tuple[str, ...] = LABEL_COLUMNS  # which of LABEL_COLUMNS the file has
    notes: list[str] = field(default_factory=list)  # how a table lacking labels was read
    condition: str | None = None  # set on a table cut to one condition (see data/grouping.py)

    @property
    def mixtures(self) -> list[str]:
        return sorted(self.runs["mixture"].unique())

    @property
    def conditions(self) -> list[str]:
        return sorted(self.runs["condition"].unique())

    @property
    def has_synthetic_fraction(self) -> bool:
        return bool(self.runs["synthetic_fraction"].notna().all()) and len(self.runs) > 0

    def synthetic_fraction(self, mixture: str) -> float:
        values = self.runs.loc[self.runs["mixture"] == mixture, "synthetic_fraction"]
        return float(values.iloc[0]) if len(values) else math.nan

    def label(self, mixture: str) -> tuple[str, str]:
        """(family, generator) of a mixture; ("", "") for natural text only."""
        rows = self.runs.loc[self.runs["mixture"] == mixture]
        if not len(rows):
            raise KeyError(f"mixture {mixture!r} is not in the table; mixtures: {self.mixtures}")
        return str(rows["family"].iloc[0]), str(rows["generator"].iloc[0])

    def subset(self, mask, condition: str | None) -> "ResultsTable":
        """The table restricted to the runs of `mask` (bad rows and duplicates stay listed)."""
        runs = self.runs[np.asarray(mask, bool)].copy()
        if condition is not None:
            runs["condition"] = condition
        runs = runs.reset_index(drop=True)
        return replace(self, runs=runs, repeated=repeated_configurations(runs), condition=condition)

    def summary(self) -> dict:
        return {
            "path": str(self.path),
            "target": self.target,
            "runs_used": int(len(self.runs)),
            "recorded_labels": list(self.recorded),
            "missing_labels": [c for c in LABEL_COLUMNS if c not in self.recorded],
            "mixtures": {
                m: {
                    "runs": int((self.runs["mixture"] == m).sum()),
                    "synthetic_fraction": _none_if_nan(self.synthetic_fraction(m)),
                    "family": self.label(m)[0] or None,
                    "generator": self.label(m)[1] or None,
                }
                for m in self.mixtures
            },
            "conditions": self.conditions,
            "domains": self.domains,
            "excluded": self.excluded,
            "duplicates_dropped": self.duplicates,
            "repeated_configurations": self.repeated,
            "notes": self.notes,
        }


def _none_if_nan(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def load_frame(path: str | Path) -> pd.DataFrame:
    """The raw table from CSV, Parquet or JSONL (plain or .gz), by file name."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"results table {str(path)!r} does not exist or is not a file")
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        if name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson")):
            return pd.read_json(path, lines=True, dtype=False)
        if name.endswith((".csv", ".csv.gz", ".tsv")):
            # Text cells stay text ("nan" can be a run_id); numbers are coerced column by column.
            return pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",", dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises many types; name the file
        raise TableError(f"cannot read results table {str(path)!r}: {exc}") from exc
    raise TableError(
        f"results table {str(path)!r}: unknown format (expected .csv, .parquet or .jsonl)"
    )


def _run_id(value, row: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return f"row{row}"
    return str(value)


def _parse_count_cell(value) -> float:
    """A positive count from a number or a string like '124M'; NaN when it is not one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    try:
        number = float(value)
        return number if math.isfinite(number) and number > 0 else math.nan
    except (TypeError, ValueError):
        pass
    try:
        return float(parse_count(str(value)))
    except ValueError:
        return math.nan


def _text(value) -> str:
    """A label cell as text: "" for an empty cell, None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _seed(value) -> float:
    """A seed cell as a number (NaN when empty); an unreadable seed is an error naming it."""
    text = _text(value)
    if text == "":
        return math.nan
    try:
        number = float(text)
    except ValueError:
        raise TableError(f"seed {text!r} is not an integer") from None
    if not (math.isfinite(number) and number == int(number)):
        raise TableError(f"seed {text!r} is not an integer")
    return number


def read_results(path: str | Path, target: str = "loss") -> ResultsTable:
    """Read, validate and clean a results table; `target` is `loss` or a `loss.<domain>`."""
    path = Path(path)
    frame = load_frame(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise TableError(
            f"results table {str(path)!r} lacks column(s) {missing}; "
            f"it has {list(frame.columns)} (needed: {list(REQUIRED_COLUMNS)})"
        )
    if target not in frame.columns:
        raise TableError(
            f"results table {str(path)!r} has no column {target!r} to fit; "
            f"loss columns: {[c for c in frame.columns if c.startswith('loss')]}"
        )
    domains = sorted(c[len("loss.") :] for c in frame.columns if c.startswith("loss."))
    has_run_id = "run_id" in frame.columns
    recorded = tuple(c for c in LABEL_COLUMNS if c in frame.columns)
    labels = {c: [_text(v) for v in frame[c]] if c in frame.columns else [""] * len(frame)
              for c in ("family", "generator", "backend", "recipe_hash", "eval_identity")}
    try:
        seeds = [_seed(v) for v in frame["seed"]] if "seed" in frame.columns else [math.nan] * len(frame)
    except TableError as exc:
        raise TableError(f"results table {str(path)!r}: {exc}") from None
    runs = pd.DataFrame(
        {
            "row": np.arange(1, len(frame) + 1),
            "run_id": [_run_id(frame["run_id"].iloc[i] if has_run_id else None, i + 1) for i in range(len(frame))],
            "mixture": frame["mixture"],
            "N": [_parse_count_cell(v) for v in frame["N"]],
            "D": [_parse_count_cell(v) for v in frame["D"]],
            "loss": pd.to_numeric(frame[target], errors="coerce").astype(float),
            "synthetic_fraction": (
                pd.to_numeric(frame["synthetic_fraction"], errors="coerce").astype(float)
                if "synthetic_fraction" in frame.columns
                else math.nan
            ),
            **labels,
            "seed": np.array(seeds, dtype=float),
        }
    )
    excluded = _exclude_bad_rows(runs, frame, target)
    runs = runs[~runs["row"].isin([e["row"] for e in excluded])].copy()
    runs["mixture"] = runs["mixture"].astype(str)
    runs, duplicates = _drop_duplicates(runs, has_run_id)
    if runs.empty:
        raise TableError(
            f"results table {str(path)!r}: no usable runs ({len(excluded)} excluded, "
            f"{len(duplicates)} duplicates dropped)"
        )
    notes: list[str] = []
    _check_fractions(runs, path)
    runs = label_mixtures(runs, recorded, notes)
    runs["condition"] = conditions(runs, recorded, notes)
    runs = runs.reset_index(drop=True)
    return ResultsTable(path, target, runs, domains, excluded, duplicates, repeated_configurations(runs),
                        recorded, notes)


def _exclude_bad_rows(runs: pd.DataFrame, frame: pd.DataFrame, target: str) -> list[dict]:
    excluded = []
    for i, run in enumerate(runs.itertuples(index=False)):
        reasons = []
        mixture = frame["mixture"].iloc[i]
        if mixture is None or (isinstance(mixture, float) and math.isnan(mixture)) or str(mixture).strip() == "":
            reasons.append("mixture is empty")
        if math.isnan(run.N):
            reasons.append(f"N is not a positive count: {frame['N'].iloc[i]!r}")
        if math.isnan(run.D):
            reasons.append(f"D is not a positive count: {frame['D'].iloc[i]!r}")
        raw = frame[target].iloc[i]
        if math.isnan(run.loss):
            reasons.append(f"{target} is NaN or not a number: {raw!r}")
        elif math.isinf(run.loss):
            reasons.append(f"{target} is infinite: {raw!r}")
        elif run.loss <= 0:
            reasons.append(f"{target} is not positive: {raw!r}")
        if reasons:
            excluded.append(
                {
                    "row": int(run.row),
                    "run_id": run.run_id,
                    "mixture": None if any("mixture" in r for r in reasons) else str(run.mixture),
                    "N": _none_if_nan(run.N),
                    "D": _none_if_nan(run.D),
                    "reason": "; ".join(reasons),
                }
            )
    return excluded


def _drop_duplicates(runs: pd.DataFrame, has_run_id: bool) -> tuple[pd.DataFrame, list[dict]]:
    key = ["run_id"] if has_run_id else ["mixture", "N", "D", "loss"]
    first_row = runs.groupby(key, sort=False)["row"].transform("min")
    dup_mask = runs["row"] != first_row
    duplicates = [
        {
            "row": int(r.row),
            "run_id": r.run_id,
            "mixture": r.mixture,
            "duplicate_of_row": int(first),
            "reason": "same run_id as an earlier row" if has_run_id else "same mixture, N, D and loss as an earlier row",
        }
        for r, first in zip(runs[dup_mask].itertuples(index=False), first_row[dup_mask])
    ]
    return runs[~dup_mask].copy(), duplicates


def _check_fractions(runs: pd.DataFrame, path: Path) -> None:
    spread = runs.groupby("mixture")["synthetic_fraction"].agg(["min", "max"])
    bad = spread[(spread["max"] - spread["min"]).abs() > 1e-9]
    if len(bad):
        raise TableError(
            f"results table {str(path)!r}: synthetic_fraction differs between runs of mixture(s) "
            f"{list(bad.index)}; one mixture must have one fraction"
        )
    fractions = runs["synthetic_fraction"].dropna()
    if ((fractions < 0) | (fractions > 1)).any():
        raise TableError(
            f"results table {str(path)!r}: synthetic_fraction outside [0, 1]: "
            f"{sorted(set(fractions[(fractions < 0) | (fractions > 1)]))}"
        )


def repeated_configurations(runs: pd.DataFrame) -> list[dict]:
    """Several runs of one (condition, mixture, N, D): seed repeats when their seeds differ."""
    repeated = []
    for (condition, mixture, n, d), group in runs.groupby(["condition", "mixture", "N", "D"], sort=True):
        if len(group) < 2:
            continue
        seeds = group["seed"].to_numpy(float)
        if np.isnan(seeds).any():
            kind = "repeats (seed not recorded)"
        elif len(set(seeds.tolist())) == len(seeds):
            kind = "seed repeats"
        else:
            kind = "repeats (some with the same seed)"
        repeated.append(
            {
                "condition": condition,
                "mixture": mixture,
                "N": float(n),
                "D": float(d),
                "kind": kind,
                "run_ids": list(group["run_id"]),
                "seeds": [None if math.isnan(x) else int(x) for x in seeds],
                "losses": [float(x) for x in group["loss"]],
            }
        )
    return repeated


def choose_baseline(table: ResultsTable, name: str | None = None) -> tuple[str | None, str]:
    """The natural baseline: the mixture named by the user, else the one with fraction 0.

    Returns (mixture or None, explanation).
    """
    if name is not None:
        if name not in table.mixtures:
            raise TableError(f"baseline {name!r} is not a mixture of the table; mixtures: {table.mixtures}")
        return name, f"{name!r} (named by the user)"
    if not table.has_synthetic_fraction:
        return None, "no synthetic_fraction column: name the baseline with --baseline"
    natural = [m for m in table.mixtures if table.synthetic_fraction(m) == 0]
    if len(natural) == 1:
        return natural[0], f"{natural[0]!r} (the only mixture with synthetic_fraction 0)"
    if not natural:
        return None, "no mixture has synthetic_fraction 0: name the baseline with --baseline"
    return None, f"several mixtures have synthetic_fraction 0 ({natural}): name one with --baseline"
