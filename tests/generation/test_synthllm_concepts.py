"""Concept parsing (generation/synthllm/concepts.py) on answers shaped like real models' and on malformed
ones: surface text kept, explanations cut, abbreviations as aliases, truncated answers parsed
without their last line; and the extraction step of the pipeline: the lists in the records (the
model's, the raw items, YAKE's phrases), unparseable answers counted and kept in failures/."""

from __future__ import annotations

import json

import pytest

from generation.synthllm.concepts import (ConceptLimits, ConceptParseError, extraction_fields, normalise_concept,
                                 parse_concepts, parse_list, split_item, text_concepts)
from generation.run.loop import run

from genhelpers import read_jsonl, read_outputs, write_jsonl
from synthllm_helpers import POOL, ConceptBackend, pool_documents, synth_config

# Answers in the shapes instruct models give (SmolLM2, Llama 3, Mistral were seen to use all of these).
REAL = [
    ('["Photosynthesis", "chlorophyll", "Light reactions"]', ["Photosynthesis", "chlorophyll", "Light reactions"]),
    ('Sure! Here are the key concepts:\n```json\n["Roman Empire", "Julius  Caesar", "roman empire"]\n```',
     ["Roman Empire", "Julius Caesar"]),
    ('{"topics": ["Trade"], "key_concepts": ["supply and demand", "Tariffs."]}',
     ["supply and demand", "Tariffs", "Trade"]),
    ("Key concepts:\n1. **Plate tectonics**\n2. Subduction zones\n3) Earthquakes\n", ["Plate tectonics",
                                                                                    "Subduction zones", "Earthquakes"]),
    ("- Neural networks\n- backpropagation\n* Gradient descent\n• neural NETWORKS", ["Neural networks",
                                                                                   "backpropagation", "Gradient descent"]),
    ("Topics: climate change; sea level rise; \u201cglaciers\u201d", ["climate change", "sea level rise", "glaciers"]),
    ("ocean currents, thermohaline circulation, salinity", ["ocean currents", "thermohaline circulation", "salinity"]),
    ("Topics:\nDemocracy\nAthens\nCitizenship", ["Democracy", "Athens", "Citizenship"]),
    ("\uff21\uff29 safety, AI  safety", ["AI safety"]),  # NFKC: full-width letters
    # explanations after a short name (the "- Economy: the study of money" parsed to one long key)
    ("- Economy: the study of money\n- Foreign relations - dealings with other nations\n- Tariffs \u2014 taxes on imports",
     ["Economy", "Foreign relations", "Tariffs"]),
    ("- Machine Learning (ML)\n- the Bank of the United States (BUS)\n- the state of the union (3",
     ["Machine Learning", "the Bank of the United States", "the state of the union"]),
    ("- self-government\n- Anglo-French war", ["self-government", "Anglo-French war"]),  # hyphens are not dashes
]


@pytest.mark.parametrize("text,expected", REAL)
def test_real_answers_parse_to_surface_names(text, expected):
    assert parse_concepts(text) == expected


def test_explanations_aliases_and_the_raw_list():
    assert split_item("Economy: the study of money") == ("Economy", [])
    assert split_item("Machine Learning (ML)") == ("Machine Learning", ["ML"])
    assert split_item("U.S. Treasury (U.S.T.)") == ("U.S. Treasury", ["U.S.T."])
    assert split_item("public credit (see above)") == ("public credit", [])  # not an abbreviation: dropped
    # a long part before the colon is not a name: nothing is cut (and the item is too long)
    long = "The document describes the many duties of the government: taxes"
    assert split_item(long)[0] == long
    parsed = parse_list("- Machine Learning (ML): learning from data\n- **Economy**: money")
    assert parsed.concepts == ["Machine Learning", "Economy"]
    assert parsed.aliases == {"Machine Learning": ["ML"]}
    assert parsed.raw == ["Machine Learning (ML): learning from data", "**Economy**: money"]


def test_a_truncated_answer_loses_only_its_last_line():
    cut = "- Economy\n- Public credit\n- Foreign relations\n- Indian tri"
    assert parse_concepts(cut, truncated=True) == ["Economy", "Public credit", "Foreign relations"]
    assert parse_list(cut, truncated=True).dropped_line == "- Indian tri"
    assert parse_concepts(cut) == ["Economy", "Public credit", "Foreign relations", "Indian tri"]
    assert parse_concepts('["Economy", "Public credit", "Foreign rel', truncated=True) == ["Economy", "Public credit"]
    assert parse_concepts("Economy, Public credit, Foreign rel", truncated=True) == ["Economy", "Public credit"]
    with pytest.raises(ConceptParseError, match="truncated"):
        parse_concepts("The document is about the economy and the", truncated=True)


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


def test_text_concepts_are_yakes_phrases():
    speech = ("The progress of public credit is witnessed by a considerable rise of American stock abroad. "
              "Public credit rests on the revenues, and the revenues on commerce with foreign nations.")
    phrases = text_concepts(speech)
    assert phrases == text_concepts(speech) and 1 <= len(phrases) <= 8  # deterministic, at most 8
    assert any("credit" in p.lower() for p in phrases)
    assert all(p.lower() in speech.lower() for p in phrases)  # from the text, never invented
    fields = extraction_fields("- Public credit\n- Commerce", speech)
    assert fields["concepts"] == ["Public credit", "Commerce"] and fields["text_concepts"] == phrases
    assert fields["text_concepts_method"].startswith("yake ")


def test_extraction_step_parses_and_records_failures(tmp_path, tiny_tokenizer):
    write_jsonl(tmp_path / "in.jsonl", pool_documents())
    raw = {"d3": "I think this document is about the sea and the weather in general terms.",
           "d5": '["' + "word " * 12 + '"]'}
    manifest = run(synth_config(tmp_path, "synthllm-concepts", "concepts"), ConceptBackend(tiny_tokenizer, raw=raw))
    out = {r["source_id"]: r for r in read_outputs(tmp_path / "concepts")}
    assert set(out) == set(POOL)  # a document whose answer holds no list keeps its text's phrases
    assert out["d3"]["concepts"] == [] and out["d3"]["concepts_error"]["reason"] == "concepts_unparseable"
    assert out["d5"]["concepts_error"]["reason"] == "concepts_too_long" and out["d5"]["text_concepts"]
    assert out["d0"]["concepts"] == ["River", "city", "Trade"]  # as the model wrote them
    assert out["d1"]["concepts"] == ["river", "Mountain", "climate"]
    assert out["d2"]["concepts"] == ["trade", "market", "City"]  # case-insensitive duplicates dropped
    assert out["d2"]["concepts_raw"] == ["trade", "market", "City", "city"]
    assert out["d0"]["text"] == "River\ncity\nTrade"
    assert out["d0"]["text_concepts"] and out["d0"]["text_concepts_method"].startswith("yake ")
    assert out["d0"]["document"].startswith("Topics: River|city|Trade")
    assert out["d0"]["recipe"] == "synthllm-concepts" and out["d0"]["prompt_version"] == "synthllm/3"
    assert manifest["filters"]["modified"] == {"concepts_too_long": 1, "concepts_unparseable": 1}
    failures = {f["source_id"]: f for f in read_jsonl(tmp_path / "concepts" / manifest["failures_file"])}
    assert failures["d3"]["reason"] == "concepts_unparseable" and failures["d3"]["output"] == raw["d3"]
    assert failures["d5"]["reason"] == "concepts_too_long" and failures["d5"]["output"] == raw["d5"]
    assert failures["d3"]["document_kept"] is True
    assert manifest["complete"] and manifest["counts"]["documents"] == 8
    # a rerun asks nothing again
    backend = ConceptBackend(tiny_tokenizer)
    run(synth_config(tmp_path, "synthllm-concepts", "concepts"), backend)
    assert backend.submitted == []


def test_a_truncated_extraction_is_parsed_not_dropped(tmp_path, tiny_tokenizer):
    """Cut at the token limit (finish_reason "length"): the list without its last line is kept,
    even under the default --drop-truncated; one with nothing complete goes to failures/."""
    write_jsonl(tmp_path / "in.jsonl", pool_documents())
    raw = {"d0": "- River\n- city\n- Tra", "d3": "The document is about the sea and the weath"}
    backend = ConceptBackend(tiny_tokenizer, raw=raw, finish_reason="length")
    config = synth_config(tmp_path, "synthllm-concepts", "cut", filters={"min_tokens": 1, "drop_truncated": True})
    manifest = run(config, backend)
    out = {r["source_id"]: r for r in read_outputs(tmp_path / "cut")}
    assert out["d0"]["concepts"] == ["River", "city"] and out["d0"]["truncated_line_dropped"] == "- Tra"
    assert out["d1"]["concepts"] == ["river", "Mountain", "climate"]  # a JSON answer cut after its last item
    assert manifest["filters"]["dropped"] == {}
    failures = {f["source_id"]: f for f in read_jsonl(tmp_path / "cut" / manifest["failures_file"])}
    assert failures["d3"]["reason"] == "concepts_unparseable" and failures["d3"]["output"] == raw["d3"]
    assert out["d3"]["concepts"] == [] and out["d3"]["text_concepts"]  # the document stays, with its phrases
