"""Diversity of a synthetic corpus (SynthLLM: is level 3 more diverse than levels 1 and 2?).

Measured from the output records themselves (so a resumed run, a merge, and a recount agree):

  records                      documents measured
  distinct_concepts            distinct concept ids over the records' `concept_ids` (levels 2, 3)
  distinct_concept_pairs       distinct unordered pairs of concepts used together in one record
  combinations_spanning_documents  share of records whose concepts no single source document holds
                               together (`combination.spans_documents`; level 2 is 0 by construction)
  multi_document_share         share of records that cite two or more distinct source documents
  mean_source_documents        mean distinct source documents per record (level 1: its one source)
  distinct_n                   {n: distinct n-grams / n-grams} for n = 1, 2, 3 over lowercased word
                               tokens of `text`, n-grams within one record, on a sample of exactly
                               `tokens` tokens: records taken in the order of a hash of their id
                               (not file order, which batching and resumption change), the last one
                               cut. Distinct-n falls as a corpus grows, so corpora are compared at
                               the same budget: `generation diversity A B C` uses the smallest.

Memory: the concept and pair sets, one (hash, tokens) pair per record, and the n-grams of the
sample (`max_tokens`, 1M by default).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Iterable

import numpy as np

_WORD = re.compile(r"\w+")
NGRAM_ORDERS = (1, 2, 3)
MAX_TOKENS = 1_000_000
METRICS_HIGHER_IS_MORE_DIVERSE = ("distinct_concepts", "distinct_concept_pairs", "combinations_spanning_documents",
                                  "multi_document_share", "distinct_n.1", "distinct_n.2", "distinct_n.3")


def _records(paths: Iterable[Path]):
    for path in paths:
        with open(path, "rb") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)


def _key(doc_id: str) -> int:
    return int.from_bytes(hashlib.sha256(str(doc_id).encode("utf-8")).digest()[:8], "big") >> 1


def _sources(record: dict) -> list[str]:
    return record.get("source_documents") or ([record["source_id"]] if record.get("source_id") is not None else [])


def corpus_tokens(paths: list[Path]) -> int:
    return sum(len(_WORD.findall(r["text"].lower())) for r in _records(paths))


def measure(paths: list[Path], max_tokens: int = MAX_TOKENS, tokens: int | None = None) -> dict:
    """The diversity block of the records in `paths` (see the module docstring). `tokens` fixes
    the distinct-n budget (else min(corpus tokens, max_tokens))."""
    paths = [Path(p) for p in paths]
    concepts: set[int] = set()
    pairs: set[int] = set()
    n_records = with_concepts = spanning = with_combination = multi = 0
    source_total = 0
    keys, lengths = [], []
    for record in _records(paths):
        n_records += 1
        ids = record.get("concept_ids")
        if ids:
            with_concepts += 1
            unique = sorted(set(int(c) for c in ids))
            concepts.update(unique)
            pairs.update((a << 32) | b for i, a in enumerate(unique) for b in unique[i + 1:])
        combination = record.get("combination")
        if isinstance(combination, dict) and "spans_documents" in combination:
            with_combination += 1
            spanning += bool(combination["spans_documents"])
        cited = len(set(_sources(record)))
        source_total += cited
        multi += cited >= 2
        keys.append(_key(record["id"]))
        lengths.append(len(_WORD.findall(record["text"].lower())))
    total_tokens = int(sum(lengths))
    budget = min(total_tokens, max_tokens) if tokens is None else min(int(tokens), total_tokens)
    distinct = _distinct_n(paths, np.asarray(keys, np.int64), np.asarray(lengths, np.int64), budget)

    def share(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    return {
        "records": n_records,
        "records_with_concepts": with_concepts,
        "distinct_concepts": len(concepts) if with_concepts else None,
        "distinct_concept_pairs": len(pairs) if with_concepts else None,
        "combinations_spanning_documents": share(spanning, with_combination),
        "multi_document_share": share(multi, n_records),
        "mean_source_documents": share(source_total, n_records),
        "corpus_tokens": total_tokens,
        "distinct_n": distinct,
        "definition": "generation/synthllm/diversity.py",
    }


def _distinct_n(paths: list[Path], keys: np.ndarray, lengths: np.ndarray, budget: int) -> dict:
    if budget <= 0:
        return {"tokens": 0, **{str(n): None for n in NGRAM_ORDERS}}
    order = np.argsort(keys, kind="stable")
    cum = np.cumsum(lengths[order])
    last = int(np.searchsorted(cum, budget))  # records order[:last + 1] hold the budget
    allowance = {int(order[i]): int(lengths[order[i]]) for i in range(last)}
    allowance[int(order[last])] = int(budget - (cum[last - 1] if last else 0))
    seen = {n: set() for n in NGRAM_ORDERS}
    total = {n: 0 for n in NGRAM_ORDERS}
    for position, record in enumerate(_records(paths)):
        keep = allowance.get(position)
        if not keep:
            continue
        words = _WORD.findall(record["text"].lower())[:keep]
        for n in NGRAM_ORDERS:
            grams = [hash(tuple(words[i:i + n])) for i in range(len(words) - n + 1)]
            seen[n].update(grams)
            total[n] += len(grams)
    return {"tokens": int(budget),
            **{str(n): (round(len(seen[n]) / total[n], 4) if total[n] else None) for n in NGRAM_ORDERS}}


def _metric(block: dict, name: str):
    if name.startswith("distinct_n."):
        return block["distinct_n"].get(name.split(".", 1)[1])
    return block.get(name)


def compare(corpora: dict[str, list[Path]], level3: str | None, max_tokens: int = MAX_TOKENS) -> dict:
    """Measure each corpus (label -> data files) at one distinct-n budget (the smallest corpus,
    at most `max_tokens`) and say, metric by metric, whether `level3` is above each other corpus."""
    budget = min([corpus_tokens(paths) for paths in corpora.values()] + [max_tokens])
    blocks = {label: measure(paths, tokens=budget) for label, paths in corpora.items()}
    verdict = {}
    if level3 is not None:
        for label, block in blocks.items():
            if label == level3:
                continue
            row = {}
            for name in METRICS_HIGHER_IS_MORE_DIVERSE:
                a, b = _metric(blocks[level3], name), _metric(block, name)
                row[name] = None if a is None or b is None else bool(a > b)
            decided = [v for v in row.values() if v is not None]
            row["all"] = bool(decided) and all(decided)
            verdict[label] = row
    return {"tokens": budget, "corpora": blocks, "level3": level3, "level3_more_diverse_than": verdict}
