"""`generation merge`: check the manifests of the n workers of one job and combine them.

Checks: every shard 0..n-1 is there exactly once and complete; all were run with the same
settings (recipe, prompt set, model, seed, sampling, filters, inputs by hash); every data file
exists with the size, hash and document count its manifest states; no document id appears
twice. Writes OUT/manifest.json (files relative to OUT); data files from other directories are
hard-linked (or copied) into OUT, so `data_prep tokenize 'OUT/*.jsonl'` reads the whole corpus.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

from synthscale.errors import SynthscaleError
from synthscale.files import sha256_file, write_json_atomic
from synthscale.provenance import provenance

from generation.corpus.outputs import MANIFEST_KIND, MANIFEST_VERSION, find_manifests
from generation.synthllm.diversity import measure
from generation.text.fidelity import merge_totals, summarise


class MergeError(SynthscaleError):
    """The manifests cannot be merged (a shard missing or incomplete, other settings, changed files)."""


def _shared_settings(fingerprint: dict) -> dict:
    """What every shard of a job shares: the fingerprint less the shard, and less the sha256 of
    each input, which covers the shard's own slice of it (generation/corpus/documents.py)."""
    shared = {k: v for k, v in fingerprint.items() if k != "shard"}
    if "input_slicing" in shared:
        shared["inputs"] = [d["path"] for d in shared.get("inputs", [])]
    return shared


def _merged_inputs(manifests: list[tuple[Path, dict]]) -> list[dict]:
    """Each input once, with every shard's slice of it (what it read and that slice's sha256)."""
    merged: dict[str, dict] = {}
    for _path, m in sorted(manifests, key=lambda pm: pm[1]["shard"]["index"]):
        for d in m["inputs"]:
            entry = merged.setdefault(d["path"], {"path": d["path"], "bytes": d.get("bytes"), "slices": []})
            entry["slices"].append({"shard": m["shard"]["index"], **{k: v for k, v in d.items()
                                                                    if k not in ("path", "bytes", "in_shard")}})
    for entry in merged.values():
        if len(entry["slices"]) == 1 and "slice" not in entry["slices"][0]:
            entry.update(entry.pop("slices")[0])  # a whole file read by one shard (or an older manifest)
            entry.pop("shard", None)
    return list(merged.values())


def _diversity(out_dir: Path, files: list[dict]) -> dict:
    """Diversity over every shard's documents together (distinct counts do not add up)."""
    return measure([out_dir / f["path"] for f in sorted(files, key=lambda f: f["path"])])


def merge(sources: list[str], output: str | None = None, link: bool = True, check_ids: bool = True) -> dict:
    manifests = find_manifests(sources)
    if not manifests:
        raise MergeError("nothing to merge")
    out_dir = Path(output) if output else manifests[0][0].parent
    problems: list[str] = []

    counts = {m["shard"]["count"] for _, m in manifests}
    if len(counts) != 1:
        raise MergeError(f"the manifests come from jobs split into different numbers of shards: {sorted(counts)}")
    n = counts.pop()
    by_index: dict[int, list[Path]] = {}
    for path, m in manifests:
        by_index.setdefault(m["shard"]["index"], []).append(path)
    for index in range(n):
        paths = by_index.get(index, [])
        if not paths:
            problems.append(f"shard {index}/{n} is missing: run `generation run ... --shard {index}/{n}`")
        elif len(paths) > 1:
            problems.append(f"shard {index}/{n} appears {len(paths)} times: {', '.join(map(str, paths))}")

    reference_path, reference = manifests[0]
    ref_fp = _shared_settings(reference["fingerprint"])
    for path, m in manifests:
        fp = _shared_settings(m["fingerprint"])
        diffs = [k for k in sorted(set(fp) | set(ref_fp)) if fp.get(k) != ref_fp.get(k)]
        if diffs:
            problems.append(f"{path}: run with other settings than {reference_path}: {', '.join(diffs)}")
        if not m.get("complete"):
            problems.append(f"{path}: shard {m['shard']['index']}/{n} is not complete: rerun its command to finish it")

    files: list[dict] = []
    ids: set[str] = set()
    duplicates: list[str] = []
    names: set[str] = set()
    for path, m in manifests:
        base = path.parent
        for f in m["files"]:
            data = base / f["path"]
            if not data.exists():
                problems.append(f"{path}: data file {data} is missing")
                continue
            size = data.stat().st_size
            if size != f["bytes"] or sha256_file(data) != f["sha256"]:
                problems.append(f"{data}: size or sha256 differs from {path} (changed after the run?)")
                continue
            documents = 0
            with open(data, "rb") as handle:
                for line in handle:
                    documents += 1
                    if check_ids:
                        doc_id = json.loads(line)["id"]
                        if doc_id in ids:
                            duplicates.append(doc_id)
                        ids.add(doc_id)
            if documents != f["documents"]:
                problems.append(f"{data}: {documents} documents, its manifest says {f['documents']}")
            if Path(f["path"]).name in names:
                problems.append(f"{data}: two shards wrote a file named {Path(f['path']).name}")
            names.add(Path(f["path"]).name)
            files.append({**f, "source": data})
    if duplicates:
        problems.append(f"{len(duplicates)} document ids appear more than once, e.g. {duplicates[:3]}")
    if problems:
        raise MergeError("cannot merge:\n  " + "\n  ".join(problems))

    out_dir.mkdir(parents=True, exist_ok=True)
    out_files = []
    for f in files:
        src: Path = f.pop("source")
        dst = out_dir / Path(f["path"]).name
        if src.resolve() != dst.resolve():
            if dst.exists():
                if dst.stat().st_size == f["bytes"] and sha256_file(dst) == f["sha256"]:
                    pass  # already there from an earlier merge
                else:
                    raise MergeError(f"{dst} exists and differs from {src}")
            else:
                try:
                    if not link:
                        raise OSError
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)
        out_files.append({**f, "path": dst.name})

    total = Counter()
    dropped, modified, failures = Counter(), Counter(), Counter()
    elapsed = 0.0
    for _, m in manifests:
        for key, value in m["counts"].items():
            if isinstance(value, (int, float)):
                total[key] += value
        dropped.update(m["filters"]["dropped"])
        modified.update(m["filters"]["modified"])
        failures.update(m["failures"]["by_reason"])
        elapsed = max(elapsed, float(m["throughput"]["elapsed_s"]))
    merged = {
        "kind": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "complete": True,
        "merged": True,
        "recipe": reference["recipe"],
        "prompt_version": reference["prompt_version"],
        "prompt_set": reference["prompt_set"],
        "recipe_spec": reference.get("recipe_spec"),
        "generator": reference["generator"],
        "engine": reference.get("engine"),
        "seed": reference["seed"],
        "sampling": reference["sampling"],
        "chunk_tokens": reference["chunk_tokens"],
        "fingerprint": ref_fp,
        "text_key": "text",
        "id_key": "id",
        "files": sorted(out_files, key=lambda f: f["path"]),
        "inputs": _merged_inputs(manifests),
        "shards": [
            {"index": m["shard"]["index"], "count": n, "manifest": str(p.resolve()), "counts": m["counts"],
             "failures_file": str((p.parent / m["failures_file"]).resolve()),
             "throughput": m["throughput"]}
            for p, m in sorted(manifests, key=lambda pm: pm[1]["shard"]["index"])
        ],
        "counts": dict(total),
        "filters": {"config": reference["filters"]["config"], "dropped": dict(sorted(dropped.items())),
                    "modified": dict(sorted(modified.items()))},
        "failures": {"total": int(sum(failures.values())), "by_reason": dict(sorted(failures.items()))},
        "fidelity": summarise(merge_totals([m.get("fidelity") for _, m in manifests])),
        "graph_sampling": reference.get("graph_sampling"),
        "diversity": _diversity(out_dir, out_files) if reference.get("diversity") is not None else None,
        "throughput": {
            "slowest_shard_elapsed_s": elapsed,
            "documents_per_s": round(total["documents"] / elapsed, 4) if elapsed else None,
            "generated_tokens_per_s": round(total["generated_tokens"] / elapsed, 2) if elapsed else None,
        },
        "provenance": provenance(config={"sources": [str(s) for s in sources], "output": str(out_dir)}),
    }
    write_json_atomic(out_dir / "manifest.json", merged)
    return merged
