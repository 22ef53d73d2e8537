"""Concept parsing (generation/concepts.py) on answers shaped like real models' and on malformed
ones, and the extraction step of the pipeline: parsed lists in the records, unparseable answers
counted and kept in failures/."""

from __future__ import annotations

import json

import pytest

from generation.concepts import ConceptLimits, ConceptParseError, normalise_concept, parse_concepts
from generation.pipeline import run

from genhelpers import read_jsonl, read_outputs, write_jsonl
from synthllm_helpers import ConceptBackend, pool_documents, synth_config

# Answers in the shapes instruct models give (SmolLM2, Llama 3, Mistral were seen to use all of these).
REAL = [
    ('["Photosynthesis", "chlorophyll", "Light reactions"]', ["photosynthesis", "chlorophyll", "light reactions"]),
    ('Sure! Here are the key concepts:\n```json\n["Roman Empire", "Julius  Caesar", "roman empire"]\n```',
     ["roman empire", "julius caesar"]),
    ('{"topics": ["Trade"], "key_concepts": ["supply and demand", "Tariffs."]}',
     ["supply and demand", "tariffs", "trade"]),
    ("Key concepts:\n1. **Plate tectonics**\n2. Subduction zones\n3) Earthquakes\n", ["plate tectonics",
                                                                                    "subduction zones", "earthquakes"]),
    ("- Neural networks\n- backpropagation\n* Gradient descent\n• neural NETWORKS", ["neural networks",
                                                                                   "backpropagation", "gradient descent"]),
    ("Topics: climate change; sea level rise; \u201cglaciers\u201d", ["climate change", "sea level rise", "glaciers"]),
    ("ocean currents, thermohaline circulation, salinity", ["ocean currents", "thermohaline circulation", "salinity"]),
    ("Topics:\nDemocracy\nAthens\nCitizenship", ["democracy", "athens", "citizenship"]),
    ("\uff21\uff29 safety, ai  safety", ["ai safety"]),  # NFKC: full-width letters
]


@pytest.mark.parametrize("text,expected", REAL)
def test_real_answers_parse_to_normalised_lists(text, expected):
    assert parse_concepts(text) == expected


MALFORMED = [
    ("", "concepts_empty"),
    ("   \n  ", "concepts_empty"),
    ("The document describes how rivers shape the cities along their banks over many centuries.",
     "concepts_unparseable"),
    ("river mountain city history science water energy light planet animal plant", "concepts_unparseable"),
    ('["a concept that is really a whole sentence about many different things at once"]', "concepts_too_long"),
    ("[]", "concepts_empty"),
    ('["", "  ", "**"]', "concepts_empty"),
]


@pytest.mark.parametrize("text,reason", MALFORMED)
def test_malformed_answers_are_refused_with_a_reason(text, reason):
    with pytest.raises(ConceptParseError) as info:
        parse_concepts(text)
    assert info.value.reason == reason


def test_limits_cap_count_and_length():
    text = json.dumps([f"concept {i}" for i in range(40)] + ["x " * 10])
    assert parse_concepts(text, ConceptLimits(max_concepts=5)) == [f"concept {i}" for i in range(5)]
    assert parse_concepts('["short", "one two three four"]', ConceptLimits(max_words=3)) == ["short"]
    assert parse_concepts('["abc", "abcdefghij"]', ConceptLimits(max_chars=5)) == ["abc"]
    assert normalise_concept("  **Light\tReactions**. ") == "light reactions"


def test_extraction_step_parses_and_records_failures(tmp_path, tiny_tokenizer):
    write_jsonl(tmp_path / "in.jsonl", pool_documents())
    raw = {"d3": "I think this document is about the sea and the weather in general terms.",
           "d5": '["' + "word " * 12 + '"]'}
    manifest = run(synth_config(tmp_path, "synthllm-concepts", "concepts"), ConceptBackend(tiny_tokenizer, raw=raw))
    out = {r["source_id"]: r for r in read_outputs(tmp_path / "concepts")}
    assert set(out) == {"d0", "d1", "d2", "d4", "d6", "d7"}
    assert out["d0"]["concepts"] == ["river", "city", "trade"]
    assert out["d1"]["concepts"] == ["river", "mountain", "climate"]
    assert out["d2"]["concepts"] == ["trade", "market", "city"]  # case and duplicates
    assert out["d0"]["text"] == "river\ncity\ntrade"
    assert out["d0"]["document"].startswith("Topics: River|city|Trade")
    assert out["d0"]["recipe"] == "synthllm-concepts" and out["d0"]["prompt_version"] == "synthllm/2"
    assert manifest["failures"]["by_reason"] == {"concepts_too_long": 1, "concepts_unparseable": 1}
    failures = {f["source_id"]: f for f in read_jsonl(tmp_path / "concepts" / manifest["failures_file"])}
    assert failures["d3"]["reason"] == "concepts_unparseable" and failures["d3"]["output"] == raw["d3"]
    assert failures["d5"]["reason"] == "concepts_too_long" and failures["d5"]["output"] == raw["d5"]
    assert manifest["complete"] and manifest["counts"]["documents"] == 6
    # a rerun does not ask again for the unparseable ones (they are failures, not pending work)
    backend = ConceptBackend(tiny_tokenizer)
    run(synth_config(tmp_path, "synthllm-concepts", "concepts"), backend)
    assert backend.submitted == []
