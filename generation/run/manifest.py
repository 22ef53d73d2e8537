"""The manifest of one worker's output (`DIR/manifest.json`, or `manifest.part-*.json` for one of
n workers) and the summary printed at the end of a run.

The manifest is the file contract with `data_prep tokenize` and `generation merge` (see
docs/formats.md): the data files with their sizes, hashes and document counts, the inputs with
their sha256, the settings (`fingerprint`), counts of documents, tokens, post-filter drops and
failures, throughput and provenance. It is rebuilt from the commit log's totals, so a resumed
run reports the whole job, not only its own invocation (that is `throughput.this_invocation`).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

from synthscale import __version__
from synthscale.files import sha256_file
from synthscale.provenance import provenance

from generation.corpus.outputs import MANIFEST_KIND, MANIFEST_VERSION
from generation.run.config import RunSettings, jsonable_config
from generation.run.store import ShardStore
from generation.synthllm.diversity import measure
from generation.text.fidelity import summarise, totals_from_counters


def build_manifest(settings: RunSettings, store: ShardStore, backend_info: dict, fingerprint: dict,
                   inputs: list[dict], input_counts: dict, complete: bool, session: Counter,
                   elapsed_now: float) -> dict:
    """The manifest of `store` (this worker's output). `session` holds this invocation's counts
    and `elapsed_now` its duration; `input_counts` the reader's per-input line counts."""
    output = settings.output
    recipe = settings.recipe
    r = store.replayed
    counters = r.counters
    dropped: Counter = Counter()
    modified: Counter = Counter()
    by_step: dict[str, Counter] = defaultdict(Counter)
    for name, value in counters.items():
        if name.startswith("dropped."):
            _, step, reason = name.split(".", 2)
            dropped[reason] += value
            by_step[step][reason] += value
        elif name.startswith("modified."):
            _, step, reason = name.split(".", 2)
            modified[reason] += value
    failures: Counter = Counter()
    failed_by_step: dict[str, Counter] = defaultdict(Counter)
    for key, state in r.status.items():
        if state == "failed":
            reason = r.failure_reason.get(key, "unknown")
            failures[reason] += 1
            failed_by_step[json.loads(key)[3]][reason] += 1
    files = []
    for name in sorted(r.files):
        path = output / name
        if not path.exists():
            continue
        files.append({"path": name, "documents": r.files[name], "bytes": path.stat().st_size,
                      "sha256": sha256_file(path)})
    total_elapsed = r.elapsed_s
    documents = int(counters.get("documents", 0))
    generated = int(counters.get("generated_tokens", 0))
    inputs = [dict(d) for d in inputs]
    for d in inputs:
        d.pop("mtime_ns", None)
    # input_counts are keyed by the path as given; match on resolved paths
    given = {str(Path(p).resolve()): v for p, v in input_counts.items()}
    for d in inputs:
        d.update(given.get(d["path"], {}))
    return {
        "kind": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "complete": bool(complete),
        "limit": settings.config.limit,  # a --limit run is a trial: never complete, never merged
        "recipe": recipe.name,
        "prompt_version": recipe.prompt_version,
        "prompt_set": {"name": recipe.set_name, "version": recipe.set_version,
                       "sha256": recipe.set_sha256, "path": recipe.set_path},
        "recipe_spec": recipe.to_dict(),
        "generator": dict(settings.generator_info),
        "engine": backend_info,
        "seed": settings.config.seed,
        "sampling": {**settings.sampling, "max_new_tokens": settings.max_new},
        "chunk_tokens": settings.config.chunk_tokens,
        "shard": {"index": settings.shard[0], "count": settings.shard[1], "tag": store.tag},
        "fingerprint_sha256": hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest(),
        "fingerprint": fingerprint,
        "text_key": "text",
        "id_key": "id",
        "files": files,
        "intermediate_file": str(store.inter_path.relative_to(output)) if len(recipe.steps) > 1 else None,
        "failures_file": str(store.fail_path.relative_to(output)),
        "inputs": inputs,
        "counts": {
            "sources": int(counters.get("sources", 0)),
            "chunks": int(counters.get("chunks", 0)),
            "requests": int(counters.get("requests", 0)),
            "documents": documents,
            "document_tokens": int(counters.get("document_tokens", 0)),
            "prompt_tokens": int(counters.get("prompt_tokens", 0)),
            "generated_tokens": generated,
            "intermediate": {k.split(".", 1)[1]: int(v) for k, v in counters.items() if k.startswith("intermediate.")},
            "filtered": int(sum(dropped.values())),
            "failed": int(sum(failures.values())),
        },
        "filters": {
            "config": {name: f.to_dict() for name, f in settings.filters.items()},
            "dropped": dict(sorted(dropped.items())),
            "modified": dict(sorted(modified.items())),
            "by_step": {k: dict(sorted(v.items())) for k, v in sorted(by_step.items())},
        },
        "failures": {"total": int(sum(failures.values())), "by_reason": dict(sorted(failures.items())),
                     "by_step": {k: dict(sorted(v.items())) for k, v in sorted(failed_by_step.items())}},
        "fidelity": summarise(totals_from_counters(counters)),
        "graph_sampling": settings.graph_sampling,
        "diversity": _diversity(output, files) if recipe.diversity else None,
        "throughput": {
            "elapsed_s": round(total_elapsed, 3),
            "documents_per_s": round(documents / total_elapsed, 4) if total_elapsed > 0 else None,
            "generated_tokens_per_s": round(generated / total_elapsed, 2) if total_elapsed > 0 else None,
            "this_invocation": {
                "elapsed_s": round(elapsed_now, 3),
                "documents": int(session["documents"]),
                "generated_tokens": int(session["generated_tokens"]),
                "documents_per_s": round(session["documents"] / elapsed_now, 4) if elapsed_now > 0 else None,
                "generated_tokens_per_s": round(session["generated_tokens"] / elapsed_now, 2) if elapsed_now > 0 else None,
            },
            "commits": r.commits,
        },
        "repairs": r.repairs,  # what each `--repair` found damaged and generated again
        "provenance": provenance(config=jsonable_config(settings.config), inputs=None),
        "synthscale_version": __version__,
    }


def _diversity(output: Path, files: list[dict]) -> dict:
    """SynthLLM's diversity figures, measured on this worker's documents (generation/synthllm/diversity.py)."""
    return measure([output / f["path"] for f in files])


def _diversity_lines(diversity: dict | None) -> list[str]:
    if not diversity:
        return []
    d = diversity
    return [f"  diversity         : {d['distinct_concepts']} concepts, {d['distinct_concept_pairs']} concept pairs, "
            f"{d['combinations_spanning_documents']} of combinations span documents, "
            f"{d['multi_document_share']} cite 2+ documents, distinct-2 {d['distinct_n'].get('2')} "
            f"(on {d['distinct_n']['tokens']:,} tokens)"]


def _fidelity_line(fidelity: dict | None) -> str:
    if not fidelity or not fidelity.get("outputs"):
        return "  fidelity          : no outputs yet"
    recall = fidelity["source_word_recall"]
    return (f"  fidelity          : {fidelity['pass_rate']:.1%} of {fidelity['outputs']:,} outputs pass the filters, "
            f"{fidelity['mean_output_tokens']:,.0f} tokens each on average, "
            f"{'n/a' if recall is None else f'{recall:.1%}'} of their sources' content words kept"
            + _degenerate_text(fidelity))


def _degenerate_text(fidelity: dict) -> str:
    before, after = fidelity.get("degenerate_share"), fidelity.get("degenerate_share_kept")
    if before is None:
        return ""
    return (f"; repetitive (Gopher rules): {before:.1%} of outputs"
            + ("" if after is None else f", {after:.1%} of the documents kept"))


def print_summary(manifest: dict, path: Path, file=sys.stderr) -> None:
    counts = manifest["counts"]
    thr = manifest["throughput"]
    now = thr["this_invocation"]
    if manifest["complete"]:
        state = "complete"
    elif manifest.get("limit") is not None and not manifest.get("interrupted"):
        state = f"done up to --limit {manifest['limit']} (a trial, not the whole input)"
    else:
        state = "INCOMPLETE (rerun the same command to continue)"
    lines = [
        f"generation {manifest['recipe']} [{manifest['shard']['tag']}]: {state}",
        f"  documents written : {counts['documents']:,} ({counts['document_tokens']:,} tokens) "
        f"from {counts['sources']:,} sources, {counts['chunks']:,} chunks, {counts['requests']:,} requests",
        f"  filtered          : {counts['filtered']:,} {manifest['filters']['dropped'] or ''}",
        f"  failed            : {counts['failed']:,} {manifest['failures']['by_reason'] or ''}",
        _fidelity_line(manifest.get("fidelity")),
        *_diversity_lines(manifest.get("diversity")),
        f"  this run          : {now['documents']:,} docs, {now['generated_tokens']:,} generated tokens in "
        f"{now['elapsed_s']:.1f} s ({now['documents_per_s'] or 0:.2f} docs/s, {now['generated_tokens_per_s'] or 0:,.0f} tok/s)",
        f"  manifest          : {path}",
    ]
    print("\n".join(lines), file=file)
