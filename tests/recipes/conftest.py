"""Fixtures the recipes tests make themselves: text corpora, a BPE tokenizer, tokenized
datasets and blends written by the real `data_prep tokenize` / `data_prep blend` commands."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tests.recipes.helpers import TEXT_WORDS, Workspace, make_corpus


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Workspace:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from data_prep.cli import main as data_prep

    root = tmp_path_factory.mktemp("recipes_data")
    corpora = {
        "natural": make_corpus(root / "natural.jsonl", 1500, seed=1),
        "synth": make_corpus(root / "synth.jsonl", 800, seed=2),
        "eval_wiki": make_corpus(root / "eval_wiki.jsonl", 300, seed=1),  # same chain as natural
        "eval_news": make_corpus(root / "eval_news.jsonl", 120, seed=2),  # same chain as synth
    }
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator([" ".join(TEXT_WORDS)] * 50, trainer)
    tokenizer_path = root / "tokenizer.json"
    tokenizer.save(str(tokenizer_path))

    prefixes = {}
    runner = CliRunner()
    for name, path in corpora.items():
        prefix = root / "data" / name
        result = runner.invoke(
            data_prep,
            ["tokenize", str(path), "--output", str(prefix), "--tokenizer", f"hf:{tokenizer_path}", "--no-progress"],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        prefixes[name] = str(prefix)
    ws = Workspace(root=root, tokenizer=tokenizer_path, prefixes=prefixes, blend=root / "unused.yaml")
    ws.blend = ws.make_blend("hq_33", "natural=0.67,synth=0.33", tokens=40_000, seq_length=64)
    return ws


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch thread in this process and in the trainer subprocesses: fast on a shared
    2-core machine, and the same arithmetic for a resumed run and an uninterrupted one."""
    import os

    import torch

    previous = torch.get_num_threads()
    os.environ["SYNTHSCALE_TORCH_THREADS"] = "1"
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
