"""The benchmarks' tokenized corpora: natural, synthetic and held-out text, a 4,096-id BPE trained
on them, each tokenized by the real `data_prep tokenize` and blended by `data_prep blend`.

Text: /work/shared/data (real English) when present, else generated text (a fixed seed).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from click.testing import CliRunner

SHARED = Path("/work/shared/data")


def corpora(root: Path) -> dict[str, Path]:
    """natural + synth + eval JSONL files (real text when available, else written to root)."""
    if (SHARED / "wikitext2_valid.jsonl").is_file():
        return {
            "natural": SHARED / "wikitext2_valid.jsonl",
            "synth": SHARED / "commoncrawl_head_sample.jsonl",
            "eval": SHARED / "c4_sample.jsonl",
        }
    rng = random.Random(0)
    words = [f"w{i}" for i in range(500)]
    out = {}
    for name, docs in (("natural", 3000), ("synth", 1500), ("eval", 300)):
        path = root / f"{name}.jsonl"
        with open(path, "w") as handle:
            for _ in range(docs):
                handle.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(80))}) + "\n")
        out[name] = path
    return out


def text_source() -> str:
    return "real text (/work/shared/data)" if (SHARED / "wikitext2_valid.jsonl").is_file() else "generated text"


def tokenize_corpora(root: Path) -> None:
    """A 4,096-id BPE trained on the corpora, and each tokenized to root/<name> by `data_prep tokenize`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from data_prep.cli import main as data_prep

    files = corpora(root)
    texts = [json.loads(line)["text"] for path in files.values() for line in open(path)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=4096, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.save(str(root / "tokenizer.json"))
    for name, path in files.items():
        result = CliRunner().invoke(data_prep, ["tokenize", str(path), "--output", str(root / name),
                                                "--tokenizer", f"hf:{root / 'tokenizer.json'}", "--no-progress"])
        assert result.exit_code == 0, result.output


def demo_blend(root: Path) -> tuple[Path, Path]:
    """The corpora tokenized, and one blend of them as the demo's runs read it (a third synthetic,
    100K tokens of 128, up to 16 epochs): (root/blend.yaml, the eval prefix)."""
    from data_prep.cli import main as data_prep

    tokenize_corpora(root)
    result = CliRunner().invoke(data_prep, ["blend", "--data", f"natural={root / 'natural'}", "--data",
                                            f"synth={root / 'synth'}", "--synthetic", "synth", "--weights",
                                            "natural=0.67,synth=0.33", "--tokens", "100K", "--seq-length", "128",
                                            "--max-epochs", "16", "--output", str(root / "blend.yaml")])
    assert result.exit_code == 0, result.output
    return root / "blend.yaml", root / "eval"
