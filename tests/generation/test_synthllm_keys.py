"""Canonical concept keys (generation/synthllm/concept_keys.py): the surface forms a small model writes for
one concept fold into one key; a model concept is kept for a document only when grounded in its
text, with the offset of its mention; YAKE's phrases join the model's, one mention per key."""

from __future__ import annotations

import pytest

from generation.synthllm.concept_keys import DocumentText, concept_key, describe, document_mentions


@pytest.mark.parametrize("forms, key", [
    (["economy", "the Economy", "Economies", "our economy", "ECONOMY."], "economy"),
    (["Machine-Learning", "machine learning", "Machine/Learning", "the machine learnings"], "machine learning"),
    (["the nation's debts", "The Nation's Debt", "nation\u2019s debt"], "nation debt"),
    (["Departments of State", "the department of state"], "department of state"),
    (["Indian tribes", "an Indian tribe", "Indian Tribe"], "indian tribe"),
    (["\uff25conomy"], "economy"),  # NFKC
])
def test_surface_forms_share_one_key(forms, key):
    assert {concept_key(form) for form in forms} == {key}


def test_different_concepts_keep_different_keys():
    assert concept_key("public credit") != concept_key("public debt")
    assert concept_key("state of the union") != concept_key("united states")
    assert concept_key("the") == "" and concept_key("  ") == ""
    assert describe()["version"] == 1 and describe()["lemmatiser"].startswith("lemminflect ")


def test_grounding_and_mention_offsets():
    text = "In 1790 the Treasury paid the interest. Our economies grew with the fisheries of the north."
    doc = DocumentText.of(text)
    assert doc.offset("economy") == text.index("economies")  # lemma match
    assert doc.offset("the Treasury") == text.index("Treasury")
    assert doc.offset("northern fisheries") is None  # "northern" is not in the text
    assert doc.offset("machine learning") is None
    record = {"document": text, "concepts": ["Economy", "machine learning", "fisheries", "economies"],
              "text_concepts": ["fisheries", "Treasury"]}
    counts = {}
    mentions = document_mentions(record, counts=counts)
    assert [(m.key, m.surface, m.source) for m in mentions] == [
        ("economy", "Economy", "llm"), ("fishery", "fisheries", "both"), ("treasury", "Treasury", "text")]
    assert counts == {"llm_parsed": 4, "llm_grounded": 3, "llm_ungrounded": 1, "text": 2, "both": 1}
    assert [m.key for m in document_mentions(record, sources=("text",))] == ["fishery", "treasury"]


def test_text_phrases_must_be_noun_headed_and_not_inside_another():
    """YAKE's phrases as SmolLM2's pool gave them: verbs, adjectives and the halves of "United States" go."""
    text = ("The overtures made to the Cherokee were pursuant to the treaty; the United States and the "
            "Senate kept the peace.")
    record = {"document": text, "concepts": [],
              "text_concepts": ["overtures made", "pursuant", "United States", "United", "States", "Cherokee",
                                "Senate", "peace"]}
    counts = {}
    assert [m.surface for m in document_mentions(record, counts=counts)] == ["United States", "Cherokee", "Senate",
                                                                               "peace"]
    assert counts == {"text": 8, "text_dropped": 4}
