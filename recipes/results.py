"""`results.json` (one per run, docs/formats.md section 4) and the results table (section 5).

Every backend writes the same record through `build_result`, with its `eval_identity`: the
evaluation definition of each scored domain (data sha256, windows, samples and tokens;
recipes.evaluation) and its sha256. `gather_results` turns a runs folder into one row per
completed run: run_id, model, N, D, mixture, synthetic_fraction, family, generator, backend,
recipe_hash, seed, loss, eval_identity, loss_domains, and one `loss.<domain>` column per
evaluation domain. `family` and `generator` come from the blend's sources (empty for natural
text only), `recipe_hash` from the training recipe without its seed: `analysis` groups runs by
these fields, never by parsing the mixture's name.

The table's `loss` compares like with like: it is the token-weighted mean over the domains
every run of the table was scored on (`loss_domains`), never over each run's own set, and its
`eval_identity` is the sha256 of those domains' definitions in that run: two rows' `loss`
compare only when their `eval_identity` is the same (analysis makes it part of the condition).
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import math
import platform
from pathlib import Path

from data_prep.blend_spec import BlendSpec
from recipes.evaluation import eval_definition, eval_identity, eval_windows_record, token_weighted_loss
from recipes.run_spec import RESULTS_FILE, RunSpec, recipe_hash
from synthscale.errors import MissingInputError, SynthscaleError
from synthscale.files import atomic_paths, write_json_atomic
from synthscale.provenance import provenance

REQUIRED_KEYS = (
    "run_id", "model", "N", "D", "mixture", "synthetic_fraction", "family", "generator", "backend",
    "recipe_hash", "seed", "eval_domains", "blend", "eval", "loss", "train_loss_curve", "wall_time_s",
    "tokens_per_s", "versions",
)
WRITTEN_KEYS = (*REQUIRED_KEYS, "eval_identity")  # what build_result writes (older records lack eval_identity)
TABLE_COLUMNS = ("run_id", "model", "N", "D", "mixture", "synthetic_fraction", "family", "generator", "backend",
                 "recipe_hash", "seed", "loss", "eval_identity", "loss_domains")
VERSIONED_PACKAGES = (
    "synthscale", "torch", "transformers", "megatron-core", "megatron-bridge", "transformer-engine",
    "nemo-run", "numpy",
)


def software_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def check_scores(per_domain: dict[str, dict]) -> None:
    """Every domain's score is a finite loss over a positive number of tokens."""
    for name, scores in per_domain.items():
        if not math.isfinite(scores["loss"]) or scores["tokens"] <= 0:
            raise ValueError(f"eval domain {name!r}: bad score {scores}")


def requested_definition(spec: RunSpec, domains=None) -> dict:
    """The evaluation definition the spec asks for, of `domains` (default: all of the spec's)."""
    names = spec.eval_domains if domains is None else domains
    return eval_definition({d: spec.eval_domains[d] for d in names}, spec.recipe.seq_length, spec.eval_max_tokens)


def _scored_definition(spec: RunSpec, per_domain: dict[str, dict]) -> dict:
    """The definition of the domains just scored, checked against what the scorer reports."""
    definition = requested_definition(spec, per_domain)
    for name, scores in per_domain.items():
        want = definition[name]
        if int(scores["tokens"]) != want["tokens"] or int(scores.get("samples", want["samples"])) != want["samples"]:
            raise ValueError(f"eval domain {name!r}: scored {scores.get('samples')} samples / {scores['tokens']} "
                             f"tokens, but its evaluation set is {want['samples']} / {want['tokens']}")
    return definition


def identity_record(definition: dict) -> dict:
    """results.json's `eval_identity`: the sha256 of the definition, and the definition."""
    return {"sha256": eval_identity(definition), "definition": definition}


def stale_domains(record: dict, spec: RunSpec) -> list[str]:
    """The spec's domains a results.json record lacks or scored under another definition (another
    --eval-max-tokens, other data, other windows): those to score again from the final checkpoint."""
    recorded = (record.get("eval_identity") or {}).get("definition") or {}
    wanted = requested_definition(spec)
    return sorted(d for d in wanted if d not in record.get("eval", {}) or recorded.get(d) != wanted[d])


def build_result(
    spec: RunSpec,
    blend: BlendSpec,
    per_domain: dict[str, dict],
    train_loss_curve: list[list],
    wall_time_s: float,
    train_time_s: float,
    extra: dict | None = None,
) -> dict:
    """The results.json record; `per_domain` is {domain: {loss, tokens}}."""
    if set(per_domain) != set(spec.eval_domains):
        raise ValueError(f"evaluated domains {sorted(per_domain)} != the run's {sorted(spec.eval_domains)}")
    check_scores(per_domain)
    definition = _scored_definition(spec, per_domain)
    record = {
        "kind": "synthscale.run_result",
        "version": 1,
        "run_id": spec.run_id,
        "backend": spec.backend,
        "model": spec.shape.name,
        "N": spec.shape.non_embedding_params,
        "D": spec.plan.tokens,
        "D_requested": spec.plan.tokens_requested,
        "mixture": blend.name,
        "synthetic_fraction": blend.synthetic_fraction,
        "family": blend.family,
        "generator": blend.generator,
        "recipe_hash": recipe_hash(spec.recipe),
        "seed": spec.recipe.seed,
        "eval_domains": sorted(per_domain),
        "blend": {
            "name": blend.name,
            "path": spec.blend_path,
            "identity_sha256": spec.blend_identity,
            "weights": blend.weights,
            "data_path": blend.data_path,
            "sources": {
                s.name: {"prefix": s.prefix, "manifest_sha256": s.manifest_sha256, "role": s.role,
                         "family": s.family, "generator": s.generator}
                for s in blend.sources
            },
        },
        "shape": spec.shape.to_dict(),
        "recipe": spec.recipe.to_dict(),
        "plan": spec.plan.to_dict(),
        "layout": spec.layout,
        "eval": {name: _domain_entry(spec, name, s) for name, s in per_domain.items()},
        "eval_windows": eval_windows_record(spec.recipe.seq_length),
        "eval_identity": identity_record(definition),
        "loss": token_weighted_loss(per_domain),
        "final_train_loss": train_loss_curve[-1][1] if train_loss_curve else None,
        "train_loss_curve": [[int(step), float(loss)] for step, loss in train_loss_curve],
        "wall_time_s": float(wall_time_s),
        "train_time_s": float(train_time_s),
        "tokens_per_s": spec.plan.tokens / train_time_s if train_time_s > 0 else None,
        "versions": software_versions(),
        "provenance": provenance(config=spec.to_dict()),
    }
    if extra:
        record.update(extra)
    return record


def _domain_entry(spec: RunSpec, name: str, scores: dict) -> dict:
    entry = {"loss": float(scores["loss"]), "tokens": int(scores["tokens"]), "prefix": spec.eval_domains[name]}
    if "samples" in scores:  # the first `samples` windows of the domain's evaluation set (recipes.evaluation)
        entry["samples"] = int(scores["samples"])
    return entry


def add_domain_scores(record: dict, spec: RunSpec, per_domain: dict[str, dict]) -> dict:
    """`record` with domains scored (again) added: eval, eval_domains, eval_identity, loss. Domains
    not scored now are kept with their definition; those of a record written before eval_identity
    existed have none and are dropped (their scores mean nothing comparable)."""
    check_scores(per_domain)
    definition = dict((record.get("eval_identity") or {}).get("definition") or {})
    definition.update(_scored_definition(spec, per_domain))
    for name, scores in per_domain.items():
        record["eval"][name] = _domain_entry(spec, name, scores)
    record["eval"] = {name: entry for name, entry in record["eval"].items() if name in definition}
    record["eval_domains"] = sorted(record["eval"])
    record["eval_identity"] = identity_record({name: definition[name] for name in record["eval"]})
    record["loss"] = token_weighted_loss(record["eval"])
    return record


def write_result(run_dir: str | Path, record: dict) -> Path:
    missing = [k for k in WRITTEN_KEYS if k not in record]
    if missing:
        raise ValueError(f"results record for {run_dir} lacks {missing}")
    path = Path(run_dir) / RESULTS_FILE
    write_json_atomic(path, record)
    return path


def is_complete(run_dir: str | Path) -> bool:
    return (Path(run_dir) / RESULTS_FILE).is_file()


def load_result(path: str | Path) -> dict:
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SynthscaleError(f"{path}: not valid JSON: {exc}") from None
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise SynthscaleError(f"{path}: not a run result, missing {missing}")
    return record


def gather_results(runs_dir: str | Path) -> tuple[list[dict], list[str]]:
    """(rows, columns) for every `*/results.json` under runs_dir, sorted by mixture, N, D.

    `loss` is each run's token-weighted mean over the domains common to all runs (`loss_domains`),
    `eval_identity` the sha256 of those domains' definitions in that run. Refused: a record
    without eval_identity, and runs that share no domain (no loss compares them)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise MissingInputError(f"no runs folder at {str(runs_dir)!r}")
    records = [load_result(path) for path in sorted(runs_dir.glob(f"*/{RESULTS_FILE}"))]
    if not records:
        raise MissingInputError(f"no completed runs (*/{RESULTS_FILE}) under {str(runs_dir)!r}")
    for record in records:
        if not record.get("eval_identity"):
            raise SynthscaleError(f"run {record['run_id']}: its results.json has no eval_identity (written before "
                                  f"evaluations were identified); rerun its sweep to score it again from its final "
                                  f"checkpoint")
    common = sorted(set.intersection(*(set(r["eval"]) for r in records)))
    if not common:
        sets = sorted({"+".join(sorted(r["eval"])) for r in records})
        raise SynthscaleError(f"the runs under {str(runs_dir)!r} share no evaluation domain (they were scored on "
                              f"{', '.join(sets)}): no loss compares them; tabulate them separately")
    rows, domains = [], set()
    for record in records:
        row = {key: ("" if record.get(key) is None else record[key]) for key in TABLE_COLUMNS}
        row["loss"] = token_weighted_loss({d: record["eval"][d] for d in common})
        row["eval_identity"] = eval_identity(record["eval_identity"]["definition"], common)
        row["loss_domains"] = "+".join(common)
        for domain, scores in record["eval"].items():
            row[f"loss.{domain}"] = scores["loss"]
            domains.add(domain)
        rows.append(row)
    rows.sort(key=lambda r: (str(r["mixture"]), r["N"], r["D"], r["run_id"]))
    columns = list(TABLE_COLUMNS) + [f"loss.{d}" for d in sorted(domains)]
    return rows, columns


def write_table(rows: list[dict], columns: list[str], output: str | Path) -> Path:
    """CSV, or Parquet when the name ends in .parquet; written atomically."""
    output = Path(output)
    if table_format(output) == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows])
        with atomic_paths(output) as (temp,):
            pq.write_table(table, temp)
    else:
        with atomic_paths(output) as (temp,):
            with open(temp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns, restval="")
                writer.writeheader()
                writer.writerows(rows)
    return output


def table_format(output: str | Path) -> str:
    """'csv' or 'parquet', from the table's file name; any other name is refused."""
    suffix = Path(output).suffix
    if suffix not in (".csv", ".parquet"):
        raise SynthscaleError(f"--output {str(output)!r}: use a .csv or .parquet name")
    return suffix[1:]
