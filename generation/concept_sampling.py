"""Sampling concept combinations: SynthLLM level 3 (a weighted random walk on the global graph) and
level 2 (subsets of one document's concepts).

Every sample is a pure function of (graph sha256, run seed, index): its random generator is seeded
from a hash of them and nothing else, so the same combination comes out in any shard, any order
and after any kill. Its id is derived from the same three things.

Level 3, combination `index`:
  1. size k uniform in [k_min, k_max];
  2. a start concept among the kept concepts that have an edge, weighted by their documents;
  3. each next concept is a not-yet-chosen neighbour of the last one, weighted by the edge weight
     (the documents the two share); when the last one has none, a neighbour of any chosen one;
     the walk stops early when no concept is left to reach;
  4. reference documents: for each concept in walk order, a chosen document already holding it
     covers it, else a random document holding it (not chosen yet when possible); if that leaves
     one document, a second one holding one of the concepts is added. A combination that still
     has fewer than two documents, or fewer than two concepts, is redrawn from the same generator
     (up to `attempts` times; then it is skipped, and the run counts it).
  `spans_documents`: no single document of the pool holds all of its concepts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from synthscale.errors import SynthscaleError

from generation.concept_graph_reader import ConceptGraph


def sample_seed(graph_sha256: str, run_seed: int, *parts) -> int:
    material = json.dumps([graph_sha256, int(run_seed), *parts])
    return int.from_bytes(hashlib.sha256(material.encode("utf-8")).digest()[:8], "big")


def combination_id(graph_sha256: str, run_seed: int, index: int) -> str:
    return f"walk-{graph_sha256[:12]}-s{int(run_seed)}-{int(index)}"


def parse_sizes(spec: str) -> tuple[int, int]:
    """'3' or '2-4' -> (k_min, k_max)."""
    left, _, right = str(spec).partition("-")
    try:
        lo, hi = int(left), int(right or left)
    except ValueError:
        raise SynthscaleError(f"--combination-size: expected K or KMIN-KMAX such as 2-4, got {spec!r}") from None
    if not 1 <= lo <= hi <= 32:
        raise SynthscaleError(f"--combination-size: need 1 <= KMIN <= KMAX <= 32, got {spec!r}")
    return lo, hi


@dataclass
class Combination:
    index: int
    id: str
    concepts: list[int]  # concept ids, in walk (or sample) order
    documents: list[int]  # reference documents (graph doc ids)
    spans_documents: bool  # no single document holds all the concepts
    attempts: int = 1


def _weighted(rng: np.random.Generator, weights: np.ndarray) -> int:
    cum = np.cumsum(weights, dtype=np.float64)
    return int(np.searchsorted(cum, rng.random() * cum[-1], side="right").clip(0, len(cum) - 1))


def _walk(graph: ConceptGraph, rng: np.random.Generator, k: int) -> list[int]:
    i = int(np.searchsorted(graph.start_cum, rng.random() * graph.start_cum[-1], side="right"))
    chosen = [int(graph.starts[min(i, len(graph.starts) - 1)])]
    seen = set(chosen)
    while len(chosen) < k:
        nbr, w = graph.neighbours(chosen[-1])
        free = np.fromiter((c not in seen for c in nbr.tolist()), bool, len(nbr))
        if not free.any():  # the last concept is a dead end: any chosen one's neighbours
            pools = [graph.neighbours(c) for c in chosen]
            nbr = np.concatenate([p[0] for p in pools])
            w = np.concatenate([p[1] for p in pools])
            free = np.fromiter((c not in seen for c in nbr.tolist()), bool, len(nbr))
            if not free.any():
                break
        nbr, w = nbr[free], w[free]
        nxt = int(nbr[_weighted(rng, w)])
        chosen.append(nxt)
        seen.add(nxt)
    return chosen


def _references(graph: ConceptGraph, rng: np.random.Generator, concepts: list[int]) -> list[int]:
    docs: list[int] = []
    for c in concepts:
        if any(c in set(graph.concepts_of(d).tolist()) for d in docs):
            continue
        holders = graph.documents_of(c)
        fresh = holders[~np.isin(holders, docs)] if docs else holders
        pool = fresh if len(fresh) else holders
        docs.append(int(pool[int(rng.integers(len(pool)))]))
    if len(docs) < 2:
        for c in concepts:  # a second document holding one of the concepts
            holders = graph.documents_of(c)
            others = holders[holders != docs[0]]
            if len(others):
                docs.append(int(others[int(rng.integers(len(others)))]))
                break
    return docs


def spans_documents(graph: ConceptGraph, concepts: list[int]) -> bool:
    """True when no single document holds every concept of the combination."""
    common = graph.documents_of(concepts[0])
    for c in concepts[1:]:
        common = np.intersect1d(common, graph.documents_of(c), assume_unique=True)
        if not len(common):
            return True
    return False


def walk_combination(graph: ConceptGraph, run_seed: int, index: int, sizes: tuple[int, int] = (2, 4),
                     attempts: int = 8) -> Combination | None:
    """Level-3 combination number `index` (see the module docstring); None when `attempts` draws
    all failed (a graph with no edges, or concepts held by one document only)."""
    if not len(graph.starts):
        return None
    rng = np.random.default_rng(sample_seed(graph.sha256, run_seed, "walk", index))
    for attempt in range(1, attempts + 1):
        k = int(rng.integers(sizes[0], sizes[1] + 1))
        concepts = _walk(graph, rng, max(k, 2))
        if len(concepts) < 2:
            continue
        docs = _references(graph, rng, concepts)
        if len(set(docs)) < 2:
            continue
        return Combination(index, combination_id(graph.sha256, run_seed, index), concepts, docs,
                           spans_documents(graph, concepts), attempt)
    return None


def document_subset(graph: ConceptGraph, run_seed: int, doc: int, j: int, sizes: tuple[int, int] = (2, 4),
                    earlier: list[list[int]] | None = None, attempts: int = 8) -> list[int] | None:
    """Level 2: subset number `j` of document `doc`'s concepts (size in `sizes`, at most all of
    them), different from the `earlier` subsets of the same document; None when it has no
    concept, or no new subset was found in `attempts` draws."""
    own = list(dict.fromkeys(graph.concepts_of(doc).tolist()))
    if not own:
        return None
    rng = np.random.default_rng(sample_seed(graph.sha256, run_seed, "subset", doc, j))
    seen = {tuple(sorted(s)) for s in (earlier or [])}
    for _ in range(attempts):
        k = min(int(rng.integers(sizes[0], sizes[1] + 1)), len(own))
        pick = sorted(rng.choice(len(own), size=k, replace=False).tolist())
        subset = [own[i] for i in pick]
        if tuple(sorted(subset)) not in seen:
            return subset
    return None
