"""Fixtures the data_prep tests make themselves: corpora, a BPE, a tiktoken ranks file."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import pytest

WORDS = (
    "the model learns language from web text and synthetic text written by another model "
    "rephrasing documents into questions answers and textbook chapters for students experts "
    "data scaling laws irreducible loss mixture ratio tokens parameters 12345 2025 café naïve"
).split()


def make_docs(n: int, seed: int = 0, words: int = 60) -> list[dict]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        length = rng.randint(5, words)
        text = " ".join(rng.choice(WORDS) for _ in range(length))
        if i % 7 == 3:
            text += "\n\nA second paragraph, with punctuation! And digits 9876543."
        docs.append({"id": f"doc-{seed}-{i}", "text": text})
    return docs


def write_jsonl(path: Path, records: list, raw_lines: list[bytes] = ()) -> Path:
    with open(path, "wb") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
        for line in raw_lines:
            handle.write(line + b"\n")
    return path


@pytest.fixture(scope="session")
def hf_tokenizer_path(tmp_path_factory) -> Path:
    """A byte-level BPE trained with `tokenizers` on the fixture vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [d["text"] for d in make_docs(300, seed=99)]
    tokenizer.train_from_iterator(corpus, trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="session")
def ranks_path(tmp_path_factory) -> Path:
    """A tiktoken ranks file: the 256 bytes plus merges reachable pairwise.

    b"34" ranks before b"12"/b"123": only Llama 3's digit split (groups of at most three)
    turns "12345" into "123" + "45" rather than "12" + "34" + "5".
    """
    merges = [b"34", b"12", b"123", b"45", b"th", b"the", b" the", b"in", b"ing", b"er", b" m", b" mo", b"od", b" mod", b"el", b" model"]
    ranks = {bytes([i]): i for i in range(256)}
    for merge in merges:
        ranks[merge] = len(ranks)
    path = tmp_path_factory.mktemp("ranks") / "tokenizer.model"
    path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks.items()))
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_jsonl(tmp_path / "docs.jsonl", make_docs(120))
