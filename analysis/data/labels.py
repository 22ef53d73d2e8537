"""How runs are labelled: the family and generator of each mixture, and each run's condition.

Only the table's fields are used, never the mixtures' names. A table from elsewhere may lack
some of them; then every synthetic mixture without a family goes into one family "unlabelled",
runs without backend/recipe_hash form one condition, and each such choice is added to `notes`
(the report prints them).
"""

from __future__ import annotations

import re

import pandas as pd

UNLABELLED = "unlabelled"  # the family or generator of a synthetic mixture the table does not name


def _label_blanks(runs: pd.DataFrame, synthetic: pd.Series, column: str, says: str, notes: list[str]) -> None:
    """Synthetic runs with an empty `column` get UNLABELLED there, and a note naming their mixtures."""
    blank = synthetic & (runs[column] == "")
    if blank.any():
        runs.loc[blank, column] = UNLABELLED
        notes.append(f"mixture(s) {sorted(set(runs.loc[blank, 'mixture']))} are synthetic but {says} {UNLABELLED!r}")


def label_mixtures(runs: pd.DataFrame, recorded: tuple[str, ...], notes: list[str]) -> pd.DataFrame:
    """Fill the family and generator of synthetic mixtures the table does not label ("unlabelled"),
    and tell apart mixtures that share a name but not their (family, generator)."""
    runs = runs.copy()
    synthetic = runs["synthetic_fraction"] > 0  # NaN (no fraction recorded) is not known to be synthetic
    if runs["synthetic_fraction"].isna().all():
        notes.append("the table has no synthetic_fraction: natural and synthetic mixtures cannot be told apart, "
                     "so there is no family grouping and no best ratio (name the baseline with --baseline)")
    elif "family" not in recorded:
        runs.loc[synthetic, "family"] = UNLABELLED
        notes.append(f"the table has no family column: every synthetic mixture is put in one family "
                     f"{UNLABELLED!r} (mixture names are never parsed)")
    else:
        _label_blanks(runs, synthetic, "family", "have no family: put in family", notes)
    if "generator" not in recorded and synthetic.any():
        runs.loc[synthetic, "generator"] = UNLABELLED
        notes.append(f"the table has no generator column: the generator of every synthetic mixture is {UNLABELLED!r}")
    else:
        _label_blanks(runs, synthetic, "generator", "name no generator: generator", notes)
    natural = runs["synthetic_fraction"] == 0
    runs.loc[natural, ["family", "generator"]] = ""  # natural text only has neither
    # One mixture name, several blends (e.g. the same recipe from two generators): keep them apart.
    pairs = runs.groupby("mixture")[["family", "generator"]].apply(lambda g: sorted(set(map(tuple, g.to_numpy()))))
    for mixture, found in pairs.items():
        if len(found) < 2:
            continue
        by_generator = len({g for _, g in found}) == len(found)
        for family, generator in found:
            mask = (runs["mixture"] == mixture) & (runs["family"] == family) & (runs["generator"] == generator)
            tag = (generator or "natural") if by_generator else f"{family or 'natural'}, {generator or '-'}"
            runs.loc[mask, "mixture"] = f"{mixture} [{tag}]"
        notes.append(f"mixture name {mixture!r} is used by {len(found)} different (family, generator) pairs "
                     f"{[list(p) for p in found]}: they are analysed as separate mixtures, named "
                     f"'{mixture} [...]'")
    return runs


CONDITION_FIELDS = ("backend", "recipe_hash", "eval_identity")
IDENTITY_SHOWN = 12  # hex digits of eval_identity in a condition's label


def condition_label(backend: str, recipe_hash: str, recorded: tuple[str, ...], identity: str = "") -> str:
    """'backend/recipe_hash/e:<eval_identity>' with the parts the table records ('?' for a blank cell)."""
    parts = []
    if "backend" in recorded:
        parts.append(backend or "?")
    if "recipe_hash" in recorded:
        parts.append(recipe_hash or "?")
    if "eval_identity" in recorded:
        parts.append("e:" + (identity or "?"))
    return "/".join(parts)


def conditions(runs: pd.DataFrame, recorded: tuple[str, ...], notes: list[str]) -> list[str]:
    """Each run's condition label. eval_identity is part of it when the table holds several (shortened to
    IDENTITY_SHOWN digits unless that would merge two); with one, every run was scored alike and the
    label leaves it out (the report's Input section names it)."""
    missing = [c for c in ("backend", "recipe_hash") if c not in recorded]
    if missing:
        notes.append(f"the table has no {' and no '.join(missing)} column: runs trained differently cannot be "
                     f"told apart by {' or '.join(missing)} and are fitted together")
    if "seed" not in recorded:
        notes.append("the table has no seed column: several runs of one configuration are reported as repeats "
                     "of unknown seed")
    blank = [c for c in CONDITION_FIELDS if c in recorded and (runs[c] == "").any()]
    for column in blank:
        notes.append(f"{int((runs[column] == '').sum())} run(s) have an empty {column}: their condition shows it as '?'")
    identities = list(runs["eval_identity"]) if "eval_identity" in runs else [""] * len(runs)
    full = set(identities)
    if len(full) == 1:  # one evaluation for every run: it tells no runs apart, the label leaves it out
        recorded = tuple(c for c in recorded if c != "eval_identity")
    elif len({i[:IDENTITY_SHOWN] for i in full}) == len(full):
        identities = [i[:IDENTITY_SHOWN] for i in identities]
    return [condition_label(b, h, recorded, i) for b, h, i in zip(runs["backend"], runs["recipe_hash"], identities)]


def slug(text: str | None) -> str:
    """A file-name-safe form of a label (figure names)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text or "").strip("_") or "x"
