"""The concept graph (generation/synthllm/graph_build.py) built from extraction outputs the pipeline writes
for a pool whose concepts are known: nodes, document counts, edges and weights by construction;
pruning with counts; shards; the manifest's hashes; and errors that name the problem. Then what
makes level 3 work on real text: canonical keys, grounding, the text's own concepts, a walk start
from one shared concept, the rounding of --max-doc-fraction, and the refusal of a graph without
a walk start (test_synthllm_keys.py has the keys themselves)."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from generation.run.loop import run
from generation.synthllm.graph_build import ConceptGraphError, build_graph, common_limit
from generation.synthllm.graph_reader import ConceptGraph
from synthscale.files import sha256_file

from generation.synthllm.concept_sampling import walk_combination
from generation.synthllm.concepts import text_concepts

from genhelpers import write_jsonl
from synthllm_helpers import POOL, ConceptBackend, pool_documents, synth_config


LLM = ("llm",)  # the pool's concepts only: YAKE's phrases of its random filler text would blur the expected graph


def expected_graph(pool: dict, kept: set | None = None):
    docs = {d: list(dict.fromkeys(c.strip().lower() for c in concepts)) for d, concepts in pool.items()}
    counts = Counter(c for concepts in docs.values() for c in concepts)
    edges = Counter()
    for concepts in docs.values():
        inside = sorted(c for c in concepts if kept is None or c in kept)
        edges.update(itertools.combinations(inside, 2))
    return docs, counts, edges


def extract(tmp_path, tokenizer, shards: int = 1, out: str = "concepts"):
    write_jsonl(tmp_path / "in.jsonl", pool_documents())
    for i in range(shards):
        run(synth_config(tmp_path, "synthllm-concepts", out, shard=(i, shards)), ConceptBackend(tokenizer))
    return tmp_path / out


def read_graph(root):
    nodes = pq.read_table(root / "nodes.parquet").to_pylist()
    edges = pq.read_table(root / "edges.parquet").to_pylist()
    names = {n["concept_id"]: n["concept"] for n in nodes}
    return nodes, {(names[e["source"]], names[e["target"]]): e["weight"] for e in edges}


def test_nodes_edges_and_weights_are_those_of_the_pool(tmp_path, tiny_tokenizer):
    concepts_dir = extract(tmp_path, tiny_tokenizer)
    manifest = build_graph([str(concepts_dir)], tmp_path / "graph", min_docs=2, max_doc_fraction=0.5, progress=False,
                           concept_sources=LLM)
    docs, counts, _ = expected_graph(POOL)
    shared = {c for c, n in counts.items() if n >= 2}
    _, _, edges = expected_graph(POOL, shared)
    nodes, got_edges = read_graph(tmp_path / "graph")
    assert [n["key"] for n in nodes] == sorted(counts)  # ids follow the keys
    assert {n["key"]: n["documents"] for n in nodes} == dict(counts)
    names = {n["key"]: n["concept"] for n in nodes}
    assert names["river"] == "river" and names["city"] == "city" and names["mountain"] == "Mountain"  # most frequent
    assert all(n["kept"] and n["pruned"] is None for n in nodes)  # a concept of one document is not pruned
    assert {n["key"] for n in nodes if n["shared"]} == shared
    assert got_edges == dict(edges)  # edges join shared concepts
    assert got_edges[("city", "trade")] == 2 and got_edges[("climate", "river")] == 2
    c = manifest["counts"]
    assert c == {**c, "documents": 8, "concepts": 12, "kept": 12, "shared": 8, "walk_starts": 8, "pruned_common": 0,
                 "edges": len(edges), "edge_weight_total": sum(edges.values()), "concept_mentions": 24}
    assert c["sources"] == {**c["sources"], "llm_parsed": 24, "llm_grounded": 24, "llm_ungrounded_dropped": 0,
                            "llm_share": 1.0, "text_share": 0.0}
    assert manifest["options"]["canonicalisation"]["version"] == 1
    assert manifest["options"]["canonicalisation"]["lemmatiser"].startswith("lemminflect ")
    # the documents table: every concept of every document (pruned ones too), texts by offset
    graph = ConceptGraph.load(tmp_path / "graph")
    by_source = {graph.doc_source_ids[d]: d for d in range(graph.n_docs)}
    for doc_id, concepts in docs.items():
        d = by_source[doc_id]
        assert [graph.names[c].lower() for c in graph.concepts_of(d)] == concepts
        for c in graph.concepts_of(d):  # each mention's offset points at the concept in the text
            assert graph.text(d)[graph.mention(d, int(c)):].lower().startswith(graph.names[c].lower())
        assert graph.text(d).startswith("Topics: ")
        for c in graph.concepts_of(d):
            assert d in graph.documents_of(int(c))
    graph.close()
    # hashes: the inputs', each file's, and the graph's own
    data = sorted(concepts_dir.glob("part-*.jsonl"))
    assert [i["sha256"] for i in manifest["inputs"]] == [sha256_file(p) for p in data]
    assert manifest["inputs"][0]["documents"] == 8
    for f in manifest["files"]:
        assert sha256_file(tmp_path / "graph" / f["path"]) == f["sha256"]
    assert len(manifest["graph_sha256"]) == 64
    assert json.loads((tmp_path / "graph" / "graph.json").read_text()) == manifest


def test_common_concepts_are_pruned_with_counts(tmp_path, tiny_tokenizer):
    concepts_dir = extract(tmp_path, tiny_tokenizer)
    manifest = build_graph([str(concepts_dir)], tmp_path / "g", min_docs=1, max_docs=2, max_doc_fraction=None,
                           progress=False, concept_sources=LLM)
    _, counts, _ = expected_graph(POOL)
    common = {c for c, n in counts.items() if n > 2}
    assert common == {"river", "city", "trade", "climate"}
    nodes, got_edges = read_graph(tmp_path / "g")
    assert {n["concept"] for n in nodes if n["pruned"] == "common"} == common
    assert manifest["counts"]["pruned_common"] == 4 and manifest["counts"]["kept"] == 8
    _, _, edges = expected_graph(POOL, set(counts) - common)
    assert got_edges == dict(edges) and not any(a in common or b in common for a, b in got_edges)
    # the same limit as a share: 2/8 of the documents
    again = build_graph([str(concepts_dir)], tmp_path / "g2", min_docs=1, max_doc_fraction=0.25, progress=False,
                        concept_sources=LLM)
    assert again["counts"]["pruned_common"] == 4 and again["options"]["max_docs_effective"] == 2


def test_shards_give_the_same_graph_and_incomplete_shards_are_refused(tmp_path, tiny_tokenizer):
    whole = build_graph([str(extract(tmp_path, tiny_tokenizer))], tmp_path / "g1", progress=False)
    sharded = tmp_path / "sharded"
    write_jsonl(tmp_path / "in.jsonl", pool_documents())
    run(synth_config(tmp_path, "synthllm-concepts", "sharded", shard=(0, 3)), ConceptBackend(tiny_tokenizer))
    with pytest.raises(ConceptGraphError, match=r"shards present are \[0\]"):
        build_graph([str(sharded)], tmp_path / "g3", progress=False)
    for i in (1, 2):
        run(synth_config(tmp_path, "synthllm-concepts", "sharded", shard=(i, 3)), ConceptBackend(tiny_tokenizer))
    from_shards = build_graph([str(sharded)], tmp_path / "g3", progress=False)
    assert read_graph(tmp_path / "g1") == read_graph(tmp_path / "g3")
    assert from_shards["counts"] == whole["counts"] and len(from_shards["inputs"]) == 3


def test_bad_inputs_and_options_are_named(tmp_path, tiny_tokenizer):
    write_jsonl(tmp_path / "in.jsonl", pool_documents())
    hq = run(synth_config(tmp_path, "hq", "hq"), ConceptBackend(tiny_tokenizer))
    assert hq["complete"]
    with pytest.raises(ConceptGraphError, match="does not extract concepts"):
        build_graph([str(tmp_path / "hq")], tmp_path / "g", progress=False)
    write_jsonl(tmp_path / "bad.jsonl", [{"id": "x", "text": "y"}])
    with pytest.raises(ConceptGraphError, match=r"bad.jsonl:1: no `concepts` list"):
        build_graph([str(tmp_path / "bad.jsonl")], tmp_path / "g", progress=False)
    assert not (tmp_path / "g" / "graph.json").exists()
    with pytest.raises(ConceptGraphError, match="--min-docs must be at least 1, got 0"):
        build_graph([str(tmp_path / "bad.jsonl")], tmp_path / "g", min_docs=0)
    with pytest.raises(ConceptGraphError, match="--max-doc-fraction must be in"):
        build_graph([str(tmp_path / "bad.jsonl")], tmp_path / "g", max_doc_fraction=1.5)


def records(tmp_path, docs: dict, name: str = "concepts.jsonl"):
    """Extraction records written directly: {id: (document text, the model's concepts)}."""
    path = tmp_path / name
    write_jsonl(path, [{"id": f"{i}:0", "source_id": i, "chunk": 0, "document": text, "concepts": concepts,
                        "text_concepts": text_concepts(text)} for i, (text, concepts) in docs.items()])
    return str(path)


SPEECHES = {
    "a": ("The economy grew, and the tariffs on imports paid the public debt of the nation.",
          ["the Economy", "Tariffs", "public debt"]),
    "b": ("Our economies depend on the fisheries; the militia guards the frontier settlements.",
          ["economies", "Fisheries", "the militia"]),
    "c": ("The treasury reports that the economy's revenues exceed the estimates of the last session.",
          ["economy", "treasury", "Revenues", "Machine learning"]),  # the last one: not in the text
}


def test_surface_forms_fold_into_one_concept_named_by_the_most_frequent(tmp_path):
    manifest = build_graph([records(tmp_path, SPEECHES)], tmp_path / "g", progress=False, concept_sources=LLM,
                           max_doc_fraction=None)
    nodes, _ = read_graph(tmp_path / "g")
    by_key = {n["key"]: n for n in nodes}
    assert by_key["economy"]["documents"] == 3  # "the Economy", "economies", "economy": one concept
    assert by_key["economy"]["shared"] and by_key["economy"]["concept"] in {"the Economy", "economies", "economy"}
    assert "machine learning" not in by_key  # invented: its words are not in the document
    src = manifest["counts"]["sources"]
    assert (src["llm_parsed"], src["llm_grounded"], src["llm_ungrounded_dropped"]) == (10, 9, 1)
    assert manifest["counts"]["shared"] == 1 and manifest["counts"]["walk_starts"] == 1


def test_text_concepts_are_a_second_source_with_measured_shares(tmp_path):
    manifest = build_graph([records(tmp_path, SPEECHES)], tmp_path / "g", progress=False, max_doc_fraction=None)
    nodes, _ = read_graph(tmp_path / "g")
    src = manifest["counts"]["sources"]
    assert src["text_phrases"] > 0 and 0 < src["text_share"] and 0 < src["llm_share"] < 1
    assert src["concepts_llm_only"] + src["concepts_text_only"] + src["concepts_both"] == manifest["counts"]["concepts"]
    assert sum(n["text_documents"] > 0 for n in nodes) == src["concepts_text_only"] + src["concepts_both"]
    assert manifest["options"]["concept_sources"] == ["llm", "text"]
    debt = {"a": ("The public debt grew in the war. The public debt is large.", ["war"]),
            "b": ("Congress paid the public debt. The public debt fell.", ["Congress"])}
    text_only = build_graph([records(tmp_path, debt, "debt.jsonl")], tmp_path / "t", progress=False,
                            max_doc_fraction=None, concept_sources=("text",))
    assert text_only["counts"]["sources"]["llm_share"] == 0.0 and text_only["counts"]["sources"]["text_share"] == 1.0
    nodes, _ = read_graph(tmp_path / "t")
    assert [n["key"] for n in nodes if n["shared"]] == ["public debt"]


def test_one_shared_concept_is_enough_for_a_cross_document_combination(tmp_path):
    """Two documents that share one concept: the default options keep it (it is a walk start),
    and level 3 combines a concept of each document through it."""
    docs = {"a": ("Tariffs and the public debt were debated.", ["Tariffs", "public debt"]),
            "b": ("Tariffs and the militia were debated.", ["tariffs", "militia"]),
            "c": ("The fisheries prospered in the north.", ["fisheries"])}
    manifest = build_graph([records(tmp_path, docs)], tmp_path / "g", progress=False, concept_sources=LLM)
    assert manifest["options"]["max_docs_effective"] == 2  # 0.5 x 3 documents, rounded up
    assert manifest["counts"]["walk_starts"] == 1 and manifest["counts"]["pruned_common"] == 0
    graph = ConceptGraph.load(tmp_path / "g")
    combos = [walk_combination(graph, 0, i, (3, 3)) for i in range(10)]
    for combo in combos:
        names = {graph.names[c].lower() for c in combo.concepts}
        assert names == {"tariffs", "public debt", "militia"} and combo.spans_documents
        assert sorted(graph.doc_source_ids[d] for d in combo.documents) == ["a", "b"]
    graph.close()


def test_max_doc_fraction_is_rounded_up_and_never_below_min_docs():
    assert common_limit(3, 2, None, 0.5) == 2  # was int(1.5) = 1: every shared concept pruned
    assert common_limit(100, 2, None, 0.05) == 5
    assert common_limit(10, 2, None, 0.05) == 2  # ceil(0.5) = 1, raised to --min-docs
    assert common_limit(10, 2, 3, 0.9) == 3 and common_limit(10, 2, None, None) is None
    assert common_limit(20, 3, 1, None) == 3


def test_a_graph_without_a_walk_start_is_refused_with_the_counts(tmp_path):
    docs = {"a": ("Tariffs were debated.", ["Tariffs"]), "b": ("The militia was debated.", ["militia"])}
    with pytest.raises(ConceptGraphError, match=r"no walk start: of 2 concepts in 2 documents, 0 are in 2\+ documents"):
        build_graph([records(tmp_path, docs)], tmp_path / "g", progress=False, concept_sources=LLM)
    assert not (tmp_path / "g" / "graph.json").exists()
    # shared, but pruned as common: said so
    docs = {"a": ("Tariffs were debated.", ["Tariffs"]), "b": ("Tariffs again.", ["tariffs"]),
            "c": ("Tariffs, once more.", ["tariffs"])}
    with pytest.raises(ConceptGraphError, match="1 are in 2\\+ documents .* and 1 of those were pruned as common"):
        build_graph([records(tmp_path, docs)], tmp_path / "g", progress=False, concept_sources=LLM, max_docs=2)
