"""The sources of SynthLLM levels 2 and 3 for `generation run`: samples from a concept graph, in the
shape the run loop plans work from (`SourceDoc` with prompt `values` and record `extra`).

  concept_subsets (level 2)  for each graph document d and j < --subsets-per-document: a subset of
                             d's concepts; the reference is d's text. Source id `SOURCE:CHUNK:subset-J`.
  concept_walk (level 3)     for each i < --combinations: a weighted random walk's combination; the
                             references are its documents (two or more). Source id `walk-GRAPH-sSEED-I`.

`--shard i/n` takes the samples whose position (document d, or combination i) is i mod n, so shards
partition the work; a sample depends only on (graph, seed, position), so a resumed run plans
exactly the same sources and skips those its commit log finished.

Each output record then carries `concept_ids`, `concepts`, `source_documents` (the graph's
document ids: the concept-extraction records' ids), `source_ids` (the original documents' ids) and
`combination` (level 3: index, spans_documents, attempts; level 2: document, subset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from synthscale.errors import SynthscaleError

from generation.corpus.documents import SourceDoc
from generation.synthllm.concept_sampling import combination_id, document_subset, walk_combination
from generation.synthllm.graph_reader import ConceptGraph


@dataclass(frozen=True)
class SamplingOptions:
    combinations: int | None = None  # level 3: combinations of the whole job (all shards)
    subsets_per_document: int = 1  # level 2
    sizes: tuple[int, int] = (2, 4)  # concepts per combination / subset
    reference_chars: int = 1500  # each reference is cut to this many characters, centred on a concept's mention

    def to_dict(self) -> dict:
        return {"combinations": self.combinations, "subsets_per_document": self.subsets_per_document,
                "combination_size": list(self.sizes), "reference_chars": self.reference_chars}


def _values(graph: ConceptGraph, concepts: list[int], docs: list[int], chars: int, one_document: bool) -> dict:
    """The prompt's values: each reference an excerpt centred on its first mention of a combination
    concept; `one_document` when one document holds every concept (the prompt then asks for no
    connection across references)."""
    if len(docs) == 1:
        document = graph.excerpt(docs[0], chars, concepts)
    else:
        document = "\n\n".join(f"[{n}] {graph.excerpt(d, chars, concepts)}" for n, d in enumerate(docs, start=1))
    return {"document": document, "concepts": "\n".join(f"- {graph.names[c]}" for c in concepts),
            "one_document": one_document}


def _extra(graph: ConceptGraph, level: int, concepts: list[int], docs: list[int], combination: dict) -> dict:
    return {
        "synthllm_level": level,
        "concept_ids": [int(c) for c in concepts],
        "concepts": [graph.names[c] for c in concepts],
        "source_documents": [graph.doc_ids[d] for d in docs],
        "source_ids": list(dict.fromkeys(graph.doc_source_ids[d] for d in docs)),
        "combination": combination,
        "graph_sha256": graph.sha256,
    }


def iter_walk_sources(graph: ConceptGraph, run_seed: int, shard: tuple[int, int],
                      options: SamplingOptions) -> Iterator[SourceDoc]:
    """Level 3: this shard's combinations, in index order."""
    if not options.combinations or options.combinations < 1:
        raise SynthscaleError("recipe with `sources: concept_walk` (level 3) needs --combinations N (N >= 1)")
    index, count = shard
    where = str(graph.root)
    for i in range(index, options.combinations, count):
        combo = walk_combination(graph, run_seed, i, options.sizes)
        if combo is None:
            yield SourceDoc(i, where, i, combination_id(graph.sha256, run_seed, i), None, "no_combination",
                            "no walk reached two concepts and two documents (graph: "
                            f"{len(graph.starts)} walk starts)")
            continue
        values = _values(graph, combo.concepts, combo.documents, options.reference_chars, not combo.spans_documents)
        extra = _extra(graph, 3, combo.concepts, combo.documents,
                       {"index": i, "spans_documents": combo.spans_documents, "attempts": combo.attempts})
        yield SourceDoc(i, where, i, combo.id, values["document"], values=values, extra=extra)


def iter_subset_sources(graph: ConceptGraph, run_seed: int, shard: tuple[int, int],
                        options: SamplingOptions) -> Iterator[SourceDoc]:
    """Level 2: this shard's documents' concept subsets, in document order."""
    if options.subsets_per_document < 1:
        raise SynthscaleError(f"--subsets-per-document must be at least 1, got {options.subsets_per_document}")
    index, count = shard
    where = str(graph.root)
    for doc in range(index, graph.n_docs, count):
        base = f"{graph.doc_source_ids[doc]}:{int(graph.doc_chunks[doc])}"
        earlier: list[list[int]] = []
        for j in range(options.subsets_per_document):
            source_id = f"{base}:subset-{j}"
            subset = document_subset(graph, run_seed, doc, j, options.sizes, earlier)
            if subset is None:
                reason = "no_concepts" if not len(graph.concepts_of(doc)) else "no_new_subset"
                yield SourceDoc(doc, where, doc, source_id, None, reason,
                                f"document {graph.doc_ids[doc]!r} has {len(graph.concepts_of(doc))} concepts")
                continue
            earlier.append(subset)
            values = _values(graph, subset, [doc], options.reference_chars, True)
            extra = _extra(graph, 2, subset, [doc], {"document": doc, "subset": j, "spans_documents": False})
            yield SourceDoc(doc, where, doc, source_id, values["document"], values=values, extra=extra)


def iter_graph_sources(kind: str, graph: ConceptGraph, run_seed: int, shard: tuple[int, int],
                       options: SamplingOptions) -> Iterator[SourceDoc]:
    if kind == "concept_walk":
        return iter_walk_sources(graph, run_seed, shard, options)
    if kind == "concept_subsets":
        return iter_subset_sources(graph, run_seed, shard, options)
    raise ValueError(f"unknown recipe sources {kind!r}")
