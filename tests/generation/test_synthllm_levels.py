"""SynthLLM levels 1-3 through `generation run` with a stand-in engine (fast): level-3 combinations
span documents and are walks on the graph; sampling is deterministic across shards and after a
crash; level-2 subsets come from one document; records carry their provenance; the manifest and
`generation diversity` measure diversity."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from generation.cli import main
from generation.run.loop import run
from generation.run.merge import merge
from generation.synthllm.concept_sampling import combination_id, walk_combination
from generation.synthllm.diversity import measure
from generation.synthllm.graph_build import build_graph
from generation.synthllm.graph_reader import ConceptGraph

from genhelpers import EchoBackend, read_outputs, write_jsonl
from synthllm_helpers import ConceptBackend, pool_documents, synth_config


@pytest.fixture
def graph_dir(tmp_path, tiny_tokenizer):
    write_jsonl(tmp_path / "in.jsonl", pool_documents())
    run(synth_config(tmp_path, "synthllm-concepts", "concepts"), ConceptBackend(tiny_tokenizer))
    build_graph([str(tmp_path / "concepts")], tmp_path / "graph", min_docs=2, progress=False, concept_sources=("llm",))
    return tmp_path / "graph"


def l3(tmp_path, graph_dir, out, **kw):
    return synth_config(tmp_path, "synthllm-l3", out, graph=str(graph_dir), combinations=24, **kw)


def key(record):
    return record["id"], tuple(record["concept_ids"]), tuple(record["source_documents"]), record["text"]


def test_level3_records_span_documents_and_follow_the_graph(tmp_path, graph_dir, tiny_tokenizer):
    manifest = run(l3(tmp_path, graph_dir, "l3"), EchoBackend(tiny_tokenizer))
    out = read_outputs(tmp_path / "l3")
    assert len(out) == 24 and manifest["counts"]["documents"] == 24 and manifest["counts"]["failed"] == 0
    graph = ConceptGraph.load(graph_dir)
    doc_index = {doc_id: d for d, doc_id in enumerate(graph.doc_ids)}
    for r in out:
        ids, docs = r["concept_ids"], [doc_index[d] for d in r["source_documents"]]
        assert len(set(docs)) >= 2 == r["synthllm_level"] - 1
        assert 2 <= len(ids) <= 4 and len(set(ids)) == len(ids)
        assert r["concepts"] == [graph.names[c] for c in ids] and all(graph.kept[c] for c in ids)
        for c in ids:  # every concept is held by one of the cited documents
            assert any(c in graph.concepts_of(d) for d in docs)
        for i, c in enumerate(ids[1:], start=1):  # a walk concept -> document -> concept: c shares a cited
            assert any(c in graph.concepts_of(d) and set(ids[:i]) & set(graph.concepts_of(d).tolist())
                       for d in docs)  # document with an earlier concept
        together = set.intersection(*(set(graph.documents_of(c).tolist()) for c in ids))
        assert r["combination"]["spans_documents"] == (not together)
        assert r["source_ids"] == list(dict.fromkeys(graph.doc_source_ids[d] for d in docs))
        assert r["text"].startswith("Question: ") and "\n\nAnswer: " in r["text"]
        assert r["recipe"] == "synthllm-l3" and r["generator"] == "echo" and r["prompt_version"] == "synthllm/3"
        assert r["source_id"] == combination_id(graph.sha256, 0, r["combination"]["index"])
    div = manifest["diversity"]
    assert div["records"] == 24 and div["multi_document_share"] == 1.0
    assert div["distinct_concepts"] == len({c for r in out for c in r["concept_ids"]})
    pairs = {tuple(sorted((a, b))) for r in out for i, a in enumerate(r["concept_ids"]) for b in r["concept_ids"][i + 1:]}
    assert div["distinct_concept_pairs"] == len(pairs)
    spanning = sum(r["combination"]["spans_documents"] for r in out) / 24
    assert div["combinations_spanning_documents"] == round(spanning, 4) and 0 < spanning < 1
    assert div["distinct_n"]["tokens"] == div["corpus_tokens"] > 0
    assert manifest["graph_sampling"]["combinations"] == 24
    assert {i["path"].rsplit("/", 1)[1] for i in manifest["inputs"]} == {
        "graph.json", "nodes.parquet", "edges.parquet", "documents.parquet", "texts.bin"}
    graph.close()


def test_level3_sampling_is_the_same_in_any_shard_and_after_a_crash(tmp_path, graph_dir, tiny_tokenizer):
    run(l3(tmp_path, graph_dir, "whole"), EchoBackend(tiny_tokenizer))
    whole = {key(r) for r in read_outputs(tmp_path / "whole")}
    for i in range(3):
        run(l3(tmp_path, graph_dir, "sharded", shard=(i, 3)), EchoBackend(tiny_tokenizer))
    merged = merge([str(tmp_path / "sharded")])
    assert {key(r) for r in read_outputs(tmp_path / "sharded")} == whole
    assert merged["diversity"] == measure(sorted((tmp_path / "whole").glob("part-*.jsonl")))
    backend = EchoBackend(tiny_tokenizer)
    for crash_after in (3, 3):
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(l3(tmp_path, graph_dir, "killed"), EchoBackend(tiny_tokenizer, crash_after_polls=crash_after))
    manifest = run(l3(tmp_path, graph_dir, "killed"), backend)
    got = [key(r) for r in read_outputs(tmp_path / "killed")]
    assert len(got) == len(set(got)) and set(got) == whole and manifest["complete"]
    assert len(backend.submitted) < 2 * 24  # the finished ones were not asked again
    # another seed samples other combinations
    run(l3(tmp_path, graph_dir, "seed1", seed=1), EchoBackend(tiny_tokenizer))
    other = {(r["concept_ids"], r["source_documents"]) for r in map(lambda r: {
        "concept_ids": tuple(r["concept_ids"]), "source_documents": tuple(r["source_documents"])},
        read_outputs(tmp_path / "seed1"))}
    assert other != {(k[1], k[2]) for k in whole}


def test_walks_are_pure_functions_of_graph_seed_and_index(graph_dir):
    graph = ConceptGraph.load(graph_dir)
    forward = [walk_combination(graph, 7, i) for i in range(30)]
    backward = [walk_combination(graph, 7, i) for i in reversed(range(30))][::-1]
    assert forward == backward
    assert all(c is not None and len(set(c.documents)) >= 2 for c in forward)
    assert len({tuple(c.concepts) for c in forward}) > 10
    assert [c.id for c in forward[:2]] == [f"walk-{graph.sha256[:12]}-s7-0", f"walk-{graph.sha256[:12]}-s7-1"]
    graph.close()


def test_level2_subsets_come_from_one_document(tmp_path, graph_dir, tiny_tokenizer):
    config = synth_config(tmp_path, "synthllm-l2", "l2", graph=str(graph_dir), subsets_per_document=2,
                          combination_size=(2, 2))
    manifest = run(config, EchoBackend(tiny_tokenizer))
    out = read_outputs(tmp_path / "l2")
    graph = ConceptGraph.load(graph_dir)
    doc_index = {doc_id: d for d, doc_id in enumerate(graph.doc_ids)}
    assert len(out) == 16 and manifest["counts"]["failed"] == 0
    by_doc = {}
    for r in out:
        (doc,) = [doc_index[d] for d in r["source_documents"]]
        assert set(r["concept_ids"]) <= set(graph.concepts_of(doc).tolist()) and len(r["concept_ids"]) == 2
        assert r["combination"] == {"document": doc, "subset": r["combination"]["subset"], "spans_documents": False}
        by_doc.setdefault(doc, []).append(tuple(sorted(r["concept_ids"])))
    assert all(len(set(subsets)) == 2 for subsets in by_doc.values())
    assert manifest["diversity"]["multi_document_share"] == 0.0
    assert manifest["diversity"]["combinations_spanning_documents"] == 0.0
    graph.close()


def test_levels_compared_by_generation_diversity(tmp_path, graph_dir, tiny_tokenizer):
    run(synth_config(tmp_path, "synthllm-l1", "l1"), EchoBackend(tiny_tokenizer))
    l1 = read_outputs(tmp_path / "l1")
    assert len(l1) == 8 and all(r["text"].startswith("Question: ") for r in l1)
    run(synth_config(tmp_path, "synthllm-l2", "l2", graph=str(graph_dir)), EchoBackend(tiny_tokenizer))
    run(l3(tmp_path, graph_dir, "l3"), EchoBackend(tiny_tokenizer))
    result = CliRunner().invoke(main, ["diversity", str(tmp_path / "l1"), str(tmp_path / "l2"), str(tmp_path / "l3"),
                                       "--output", str(tmp_path / "div.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "div.json").read_text())
    assert report["level3"] == "synthllm-l3" and set(report["level3_more_diverse_than"]) == {"synthllm-l1", "synthllm-l2"}
    budgets = {b["distinct_n"]["tokens"] for b in report["corpora"].values()}
    assert budgets == {report["tokens"]} and report["tokens"] == min(b["corpus_tokens"] for b in report["corpora"].values())
    row = report["level3_more_diverse_than"]["synthllm-l2"]
    assert row["multi_document_share"] is True and row["combinations_spanning_documents"] is True
    assert report["level3_more_diverse_than"]["synthllm-l1"]["distinct_concepts"] is None  # level 1 has none
    assert "synthllm-l3 more diverse than synthllm-l2" in result.output
    as_json = CliRunner().invoke(main, ["diversity", str(tmp_path / "l1"), str(tmp_path / "l3"), "--json"])
    printed = json.loads(as_json.stdout)  # the comparison alone, no table
    assert printed["corpora"]["synthllm-l3"] == report["corpora"]["synthllm-l3"]
    assert set(printed["level3_more_diverse_than"]) == {"synthllm-l1"}
    missing = CliRunner().invoke(main, ["diversity", str(tmp_path / "l1"), str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and missing.output.startswith("Error: ") and "no manifest.json" in missing.output


def test_cli_errors_name_the_missing_piece(tmp_path, graph_dir):
    runner = CliRunner()
    base = ["run", "--model", "m", "--output", str(tmp_path / "o")]
    result = runner.invoke(main, base + ["--recipe", "synthllm-l3"])
    assert result.exit_code == 1 and "pass --graph DIR" in result.output
    result = runner.invoke(main, base + ["--recipe", "synthllm-l3", "--graph", str(graph_dir)])
    assert result.exit_code == 1 and "needs --combinations N" in result.output
    result = runner.invoke(main, base + ["--recipe", "synthllm-l3", "--graph", str(graph_dir), "--combinations", "4",
                                         "--combination-size", "5-2"])
    assert result.exit_code == 2 and "'5-2'" in result.output  # a malformed flag: a usage error
    result = runner.invoke(main, base + ["--recipe", "hq", "--graph", str(graph_dir)])
    assert result.exit_code == 1 and "reads documents (--input)" in result.output
    result = runner.invoke(main, ["concept-graph", str(tmp_path / "nothing"), "--output", str(tmp_path / "g")])
    assert result.exit_code == 1 and "nothing: no such directory" in result.output
    result = runner.invoke(main, ["concept-graph", str(tmp_path / "concepts"), "--output", str(tmp_path / "g"),
                                  "--no-progress"])
    assert result.exit_code == 0 and "8 documents, " in result.output and "walk starts" in result.output
    result = runner.invoke(main, ["concept-graph", str(tmp_path / "concepts"), "--output", str(tmp_path / "g2"),
                                  "--no-progress", "--min-docs", "2", "--json", "--json-file", str(tmp_path / "g2.json")])
    printed = json.loads(result.stdout)
    assert printed == json.loads((tmp_path / "g2" / "graph.json").read_text()) == json.loads((tmp_path / "g2.json").read_text())
    assert printed["counts"]["walk_starts"] >= 8
    result = runner.invoke(main, ["concept-graph", str(tmp_path / "concepts"), "--output", str(tmp_path / "g3"),
                                  "--max-docs", "lots"])
    assert result.exit_code == 2 and "--max-docs" in result.output
    result = runner.invoke(main, ["concepts", "--help"])
    assert result.exit_code == 0 and "synthllm-concepts" in result.output and "--shard" in result.output


def test_level3_prompts_ask_for_several_references_only_across_documents(tmp_path, graph_dir, tiny_tokenizer):
    backend = EchoBackend(tiny_tokenizer)
    run(l3(tmp_path, graph_dir, "l3"), backend)
    out = {r["source_id"]: r for r in read_outputs(tmp_path / "l3")}
    questions = [r for r in backend.submitted if json.loads(r.key)[3] == "question"]
    assert len(questions) == 24
    seen = set()
    for request in questions:
        prompt = request.messages[-1]["content"]
        spans = out[json.loads(request.key)[0]]["combination"]["spans_documents"]
        assert ("drawing on more than one of the reference documents" in prompt) == spans
        seen.add(spans)
    assert seen == {True, False}  # both kinds were drawn


def test_reference_excerpts_are_centred_on_the_concepts_mention(tmp_path, tiny_tokenizer):
    """A concept mentioned late in a long document: its reference excerpt shows the mention (the
    first --reference-chars characters would not)."""
    from generation.synthllm.concept_sources import SamplingOptions, iter_walk_sources
    from study.tiny_llama import sample_text

    filler = sample_text(600, seed=5).replace("\n", " ")
    docs = [{"id": "a:0", "source_id": "a", "chunk": 0, "concepts": ["harbour tariffs", "navigation"],
             "document": filler + " The harbour tariffs fund the lighthouses and navigation. " + filler},
            {"id": "b:0", "source_id": "b", "chunk": 0, "concepts": ["harbour tariffs", "fisheries"],
             "document": "The fisheries pay harbour tariffs. " + filler}]
    write_jsonl(tmp_path / "c.jsonl", docs)
    build_graph([str(tmp_path / "c.jsonl")], tmp_path / "g", progress=False, concept_sources=("llm",))
    graph = ConceptGraph.load(tmp_path / "g")
    assert len(graph.text(0)) > 4 * 300
    sources = list(iter_walk_sources(graph, 0, (0, 1), SamplingOptions(combinations=4, sizes=(3, 3),
                                                                       reference_chars=300)))
    for source in sources:
        references = source.values["document"].split("\n\n[")
        assert len(references) == 2  # both documents, each centred on its mention of the shared concept
        assert all("harbour tariffs" in ref.lower() and len(ref) < 400 for ref in references)
        assert source.values["one_document"] is False
    graph.close()
