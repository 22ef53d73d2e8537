"""Sampling concept combinations: SynthLLM level 3 (a weighted random walk on the global graph) and
level 2 (subsets of one document's concepts).

Every sample is a pure function of (graph sha256, run seed, index): its random generator is seeded
from a hash of them and nothing else, so the same combination comes out in any shard, any order
and after any kill. Its id is derived from the same three things.

Level 3, combination `index`, a walk concept -> document -> concept on the graph's incidence:
  1. size k uniform in [k_min, k_max] (at least 2);
  2. a start concept among the walk starts (kept concepts shared by --min-docs documents or
     more), weighted by their documents;
  3. then, until k concepts: a document holding the last concept that the walk has not visited
     (else one holding any chosen concept: the walk steps back), uniformly; and in it a kept
     concept not chosen yet, uniformly. A document that has none left is still visited (cited);
     the walk stops early when no unvisited document holds a chosen concept;
  4. reference documents: the visited ones, in walk order; if only one was visited, a second one
     holding a chosen concept is added (the start is shared, so there is one). Each concept is
     held by a cited document by construction.
  A combination with fewer than two concepts or two documents is redrawn from the same generator
  (up to `attempts` times; then it is skipped, and the run counts it). So one concept shared by
  two documents is enough: start there, pick a concept of one document, step to the other.
  `spans_documents`: no single document of the pool holds all of its concepts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from synthscale.errors import SynthscaleError

from generation.synthllm.graph_reader import ConceptGraph


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


def _pick(rng: np.random.Generator, pool: np.ndarray) -> int:
    return int(pool[int(rng.integers(len(pool)))])


def _walk(graph: ConceptGraph, rng: np.random.Generator, k: int) -> tuple[list[int], list[int]]:
    """(concepts, visited documents) of one walk concept -> document -> concept."""
    i = int(np.searchsorted(graph.start_cum, rng.random() * graph.start_cum[-1], side="right"))
    chosen = [int(graph.starts[min(i, len(graph.starts) - 1)])]
    docs: list[int] = []
    while len(chosen) < k:
        holders = np.zeros(0, np.int32)
        for c in reversed(chosen):  # the last concept first; else step back
            holders = graph.documents_of(c)
            holders = holders[~np.isin(holders, docs)]
            if len(holders):
                break
        if not len(holders):
            break
        doc = _pick(rng, holders)
        docs.append(doc)
        own = np.unique(graph.concepts_of(doc))
        free = own[graph.kept[own] & ~np.isin(own, chosen)]
        if len(free):
            chosen.append(_pick(rng, free))
    if len(docs) < 2:  # a second document holding a chosen concept
        for c in chosen:
            others = graph.documents_of(c)
            others = others[~np.isin(others, docs)]
            if len(others):
                docs.append(_pick(rng, others))
                break
    return chosen, docs


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
    all failed (a graph with no walk start)."""
    if not len(graph.starts):
        return None
    rng = np.random.default_rng(sample_seed(graph.sha256, run_seed, "walk", index))
    for attempt in range(1, attempts + 1):
        k = int(rng.integers(sizes[0], sizes[1] + 1))
        concepts, docs = _walk(graph, rng, max(k, 2))
        if len(concepts) < 2 or len(set(docs)) < 2:
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
