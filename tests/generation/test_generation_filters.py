"""Post-filters on crafted strings."""

from __future__ import annotations

import pytest

from generation.filters import FilterConfig, apply_filters
from generation.prompts import get_recipe


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture
def config():
    # the paper set's filters, with token counts taken as word counts for readability
    return FilterConfig.from_dict(get_recipe("hq").final.filters)


BODY = " ".join(["word"] * 60)


def run(text, config, tokens=None, finish="stop", target=100):
    return apply_filters(text, words(text) if tokens is None else tokens, finish, target, config, words)


def test_a_good_document_is_kept_unchanged(config):
    result = run(BODY, config)
    assert (result.dropped, result.modified, result.text, result.tokens) == (None, [], BODY, 60)


@pytest.mark.parametrize(
    "preamble",
    [
        "Sure, here is the rephrased article:\n",
        "Sure! Here's a rewritten version of the document in Wikipedia style.\n\n",
        "Certainly! Below is the article.\n",
        "Here are the question-answer pairs:\n",
        "Rephrased article:\n",
        "Okay.\nHere is the article:\n",
    ],
)
def test_preambles_are_stripped_and_tokens_recounted(config, preamble):
    result = run(preamble + BODY, config)
    assert result.dropped is None
    assert result.text == BODY
    assert result.tokens == 60
    assert result.modified == ["preamble_stripped"]


@pytest.mark.parametrize("text", ["Sure, here is the rephrased article:", "Here is the article:\n\n", "Certainly!"])
def test_a_bare_preamble_is_dropped(config, text):
    assert run(text, config).dropped == "bare_preamble"


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that request. " + BODY,
        "I cannot rewrite this document because it contains personal data. " + BODY,
        "As an AI language model, I do not have opinions. " + BODY,
        "Sure, here is the article:\nI am sorry, I can not do this. " + BODY,
    ],
)
def test_refusals_are_dropped(config, text):
    assert run(text, config).dropped == "refusal"


def test_a_document_mentioning_sorry_later_is_kept(config):
    assert run("The king said he was sorry. " + BODY, config).dropped is None


def test_too_short_truncated_too_long_and_empty(config):
    assert run(" ".join(["w"] * 49), config).dropped == "too_short"
    assert run(" ".join(["w"] * 50), config).dropped is None
    assert run(BODY, config, finish="length").dropped == "truncated"
    assert run(" ".join(["w"] * 301), config, target=100).dropped == "too_long"
    assert run(" ".join(["w"] * 300), config, target=100).dropped is None
    assert run("   \n ", config).dropped == "empty"


def test_filters_are_configurable(config):
    lenient = FilterConfig.from_dict(get_recipe("hq").final.filters,
                                     {"min_tokens": 0, "drop_truncated": False, "max_target_factor": 0,
                                      "drop_refusals": False, "strip_preamble": False})
    assert run("short", lenient).dropped is None
    assert run(BODY, lenient, finish="length").dropped is None
    assert run(" ".join(["w"] * 10_000), lenient, target=10).dropped is None
    assert run("I'm sorry, no.", lenient).dropped is None
    kept = run("Sure, here is the article:\n" + BODY, lenient)
    assert kept.dropped is None and kept.text.startswith("Sure")
