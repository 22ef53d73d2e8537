"""Chunking at paragraph and sentence boundaries, with the generator's tokenizer."""

from __future__ import annotations

import re

from generation.run.chunking import split_into_chunks
from study.tiny_llama import sample_text


def count_with(tokenizer):
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def test_short_sources_are_one_chunk(tiny_tokenizer):
    assert split_into_chunks("  A short text.  ", count_with(tiny_tokenizer), 2000) == ["A short text."]
    assert split_into_chunks("   ", count_with(tiny_tokenizer), 2000) == []


def test_long_sources_split_at_paragraphs_within_the_limit(tiny_tokenizer):
    count = count_with(tiny_tokenizer)
    paragraphs = [sample_text(120, seed=i).replace("\n\n", " ") for i in range(12)]
    text = "\n\n".join(paragraphs)
    total = count(text)
    chunks = split_into_chunks(text, count, 400)
    assert len(chunks) >= total // 400
    assert all(count(c) <= 400 for c in chunks)
    assert normalise(" ".join(chunks)) == normalise(text)
    # every chunk boundary is a paragraph boundary: each chunk is whole paragraphs
    for chunk in chunks:
        assert all(p in paragraphs for p in chunk.split("\n\n"))
    # balanced: no runt chunk
    sizes = [count(c) for c in chunks]
    assert min(sizes) > 0.5 * max(sizes)


def test_a_long_paragraph_is_cut_at_sentences(tiny_tokenizer):
    count = count_with(tiny_tokenizer)
    text = sample_text(900, seed=5).replace("\n\n", " ")  # one paragraph
    chunks = split_into_chunks(text, count, 300)
    assert len(chunks) > 1
    assert all(count(c) <= 300 for c in chunks)
    assert all(c.endswith(".") for c in chunks)
    assert normalise(" ".join(chunks)) == normalise(text)


def test_a_sentence_without_punctuation_falls_back_to_words_and_characters(tiny_tokenizer):
    count = count_with(tiny_tokenizer)
    words = " ".join(["riverbank"] * 800)
    chunks = split_into_chunks(words, count, 100)
    assert all(count(c) <= 100 for c in chunks)
    assert normalise(" ".join(chunks)) == normalise(words)
    blob = "x" * 5000
    chunks = split_into_chunks(blob, count, 100)
    assert all(count(c) <= 100 for c in chunks) and "".join(chunks) == blob


def test_a_2100_token_source_gives_two_similar_chunks():
    count = lambda text: len(text.split())  # noqa: E731 - one token per word
    text = "\n\n".join(" ".join(["w"] * 10) + "." for _ in range(210))  # 2100 words
    chunks = split_into_chunks(text, count, 2000)
    assert [count(c) for c in chunks] == [1050, 1050]
