"""Helpers for the recipes tests: generated corpora, the workspace of tokenized data and blends,
the paper-setting blend file, and the CLI invocations."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from data_prep.blend_spec import BlendSource, BlendSpec

TEXT_WORDS = (
    "the a model data token web page text writer reader question answer chapter student "
    "teacher learns reads writes explains asks shows small large good clear new old many few "
    "scaling law loss mixture ratio synthetic natural corpus sentence paragraph study result "
    "and or but so then because while of to in on with for from by about"
).split()


def markov_text(rng: random.Random, successors: dict[str, list[str]], words: int) -> str:
    word = rng.choice(TEXT_WORDS)
    out = [word]
    for _ in range(words - 1):
        word = rng.choice(successors[word])
        out.append(word)
    return " ".join(out) + "."


def make_corpus(path: Path, docs: int, seed: int, branching: int = 3) -> Path:
    """JSONL of documents from a word-level Markov chain: structure a tiny model can learn."""
    rng = random.Random(seed)
    successors = {w: rng.sample(TEXT_WORDS, branching) for w in TEXT_WORDS}
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(docs):
            handle.write(json.dumps({"id": f"{seed}-{i}", "text": markov_text(rng, successors, rng.randint(20, 60))}) + "\n")
    return path


@dataclass
class Workspace:
    root: Path
    tokenizer: Path
    prefixes: dict[str, str]
    blend: Path  # natural 67% + synthetic 33%

    def make_blend(self, name: str, weights: str, tokens: int, seq_length: int, max_epochs: float = 1.0) -> Path:
        from data_prep.cli import main as data_prep

        output = self.root / f"{name}.yaml"
        args = ["blend", "--data", f"natural={self.prefixes['natural']}", "--data", f"synth={self.prefixes['synth']}",
                "--synthetic", "synth", "--weights", weights, "--tokens", str(tokens), "--seq-length", str(seq_length),
                "--output", str(output), "--name", name, "--max-epochs", str(max_epochs)]
        result = CliRunner().invoke(data_prep, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return output

    @property
    def evals(self) -> dict[str, str]:
        return {"wiki": self.prefixes["eval_wiki"], "news": self.prefixes["eval_news"]}


def paper_blend(path: Path, data_dir: Path, tokens: int = 10**11) -> Path:
    """A blend file for the paper's setting (Llama 3 vocabulary, seq 4096): the Bridge YAML tests
    need its metadata only, not the data, so it is written with data_prep's BlendSpec directly."""
    sources = []
    for name, weight, synthetic in (("natural", 0.67, False), ("hq", 0.33, True)):
        sources.append(
            BlendSource(
                name=name,
                prefix=str(data_dir / name),
                manifest=str(data_dir / f"{name}.manifest.json"),
                manifest_sha256="0" * 64,
                data_sha256=("1" if synthetic else "2") * 64,  # blend version 4: no data to hash
                role="synthetic" if synthetic else "natural",
                family="hq" if synthetic else "natural",
                generator="Mistral-7B-Instruct-v0.2" if synthetic else None,
                weight=weight,
                tokens_requested=int(weight * tokens),
                tokens_available=tokens,
                epochs=weight,
            )
        )
    spec = BlendSpec(
        name="hq_33",
        tokens=tokens,
        seq_length=4096,
        max_epochs=1.0,
        tokenizer={"spec": "llama3:/models/llama3/tokenizer.model", "vocab_size": 128256, "eod_id": 128001,
                   "sha256": "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55"},
        sources=tuple(sources),
    )
    spec.save(path)
    return path


TINY_ARGS = ["--seq-length", "64", "--global-batch-size", "4", "--micro-batch-size", "4", "--eval-max-tokens", "4096"]


def sweep_args(workspace: Workspace, output: Path, sizes: str, tokens: str, *extra: str, blend: Path | None = None,
               evals: tuple[str, ...] = ("wiki", "news")) -> list[str]:
    args = ["sweep", "--sizes", sizes, "--tokens", tokens, "--blends", str(blend or workspace.blend), "--output", str(output)]
    for name in evals:
        args += ["--eval", f"{name}={workspace.evals[name]}"]
    return args + TINY_ARGS + list(extra)


def invoke(args: list[str]):
    from recipes.cli import main

    return CliRunner().invoke(main, args, catch_exceptions=False)
