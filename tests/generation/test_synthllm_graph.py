"""The concept graph (generation/concept_graph.py) built from extraction outputs the pipeline writes
for a pool whose concepts are known: nodes, document counts, edges and weights by construction;
pruning with counts; shards; the manifest's hashes; and errors that name the problem."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from generation.concept_graph import ConceptGraphError, build_graph
from generation.concept_graph_reader import ConceptGraph
from generation.pipeline import run
from synthscale.files import sha256_file

from genhelpers import write_jsonl
from synthllm_helpers import POOL, ConceptBackend, pool_documents, synth_config


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
    manifest = build_graph([str(concepts_dir)], tmp_path / "graph", min_docs=2, max_doc_fraction=0.5, progress=False)
    docs, counts, _ = expected_graph(POOL)
    kept = {c for c, n in counts.items() if n >= 2}
    _, _, edges = expected_graph(POOL, kept)
    nodes, got_edges = read_graph(tmp_path / "graph")
    assert [n["concept"] for n in nodes] == sorted(counts)  # ids follow the concept strings
    assert {n["concept"]: n["documents"] for n in nodes} == dict(counts)
    assert {n["concept"] for n in nodes if n["kept"]} == kept
    assert {n["concept"]: n["pruned"] for n in nodes if not n["kept"]} == {
        "mountain": "rare", "island": "rare", "empire": "rare", "war": "rare"}
    assert got_edges == dict(edges)
    assert got_edges[("city", "trade")] == 2 and got_edges[("climate", "river")] == 2
    c = manifest["counts"]
    assert c == {**c, "documents": 8, "concepts": 12, "kept": 8, "pruned_rare": 4, "pruned_common": 0,
                 "edges": len(edges), "edge_weight_total": sum(edges.values()), "concept_mentions": 24}
    # the documents table: every concept of every document (pruned ones too), texts by offset
    graph = ConceptGraph.load(tmp_path / "graph")
    by_source = {graph.doc_source_ids[d]: d for d in range(graph.n_docs)}
    for doc_id, concepts in docs.items():
        d = by_source[doc_id]
        assert [graph.names[c] for c in graph.concepts_of(d)] == concepts
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
                           progress=False)
    _, counts, _ = expected_graph(POOL)
    common = {c for c, n in counts.items() if n > 2}
    assert common == {"river", "city", "trade", "climate"}
    nodes, got_edges = read_graph(tmp_path / "g")
    assert {n["concept"] for n in nodes if n["pruned"] == "common"} == common
    assert manifest["counts"]["pruned_common"] == 4 and manifest["counts"]["pruned_rare"] == 0
    _, _, edges = expected_graph(POOL, set(counts) - common)
    assert got_edges == dict(edges) and not any(a in common or b in common for a, b in got_edges)
    # the same limit as a share: 2/8 of the documents
    again = build_graph([str(concepts_dir)], tmp_path / "g2", min_docs=1, max_doc_fraction=0.25, progress=False)
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
