"""Tokenizers named by a SPEC string: `llama3:PATH`, `tiktoken:NAME_OR_PATH`, `hf:PATH`.

Every tokenizer exposes the same small surface: `encode(text) -> list[int]` (no special
tokens), `decode_token(id) -> bytes`, `eod_id` (appended after every document), `vocab_size`, `spec` and `sha256`
(of the file it was loaded from, so manifests say exactly which vocabulary made the ids).
"""

from __future__ import annotations

import binascii
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from synthscale.errors import MissingInputError, SynthscaleError
from synthscale.files import open_binary, sha256_file

# Meta's Llama 3 pre-tokenizer split pattern (as in Meta's own tokenizer.py).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_NUM_RANKS = 128_000
LLAMA3_NUM_SPECIAL = 256
_LLAMA3_NAMED_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
]
# End-of-document tokens looked for in a tokenizer.json, in this order.
HF_EOD_CANDIDATES = ("<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>", "<|eos|>", "[SEP]")


def llama3_special_tokens(num_base_tokens: int) -> dict[str, int]:
    """The 256 Llama 3 special tokens, numbered from `num_base_tokens` (128,000 for Meta's file)."""
    names = _LLAMA3_NAMED_SPECIALS + [
        f"<|reserved_special_token_{i}|>"
        for i in range(2, 2 + LLAMA3_NUM_SPECIAL - len(_LLAMA3_NAMED_SPECIALS))
    ]
    return {name: num_base_tokens + i for i, name in enumerate(names)}


@dataclass
class Tokenizer:
    """A loaded tokenizer: what the pipeline needs and what the manifest records."""

    spec: str
    vocab_size: int
    eod_id: int
    eod_token: str
    sha256: str
    encode: Callable[[str], list[int]] = field(repr=False)
    decode_token: Callable[[int], bytes] = field(repr=False)

    def describe(self) -> dict:
        return {
            "spec": self.spec,
            "vocab_size": self.vocab_size,
            "eod_id": self.eod_id,
            "eod_token": self.eod_token,
            "sha256": self.sha256,
        }


def load_tokenizer(spec: str) -> Tokenizer:
    """Load a tokenizer from its SPEC; errors name the spec and what is wrong with it."""
    kind, sep, target = spec.partition(":")
    if not sep or not target:
        raise SynthscaleError(
            f"tokenizer spec {spec!r}: expected llama3:PATH, tiktoken:NAME_OR_PATH or hf:PATH"
        )
    loaders = {"llama3": _load_llama3, "tiktoken": _load_tiktoken, "hf": _load_hf}
    if kind not in loaders:
        raise SynthscaleError(
            f"tokenizer spec {spec!r}: unknown kind {kind!r} (use llama3:, tiktoken: or hf:)"
        )
    return loaders[kind](spec, target)


def _require_file(spec: str, target: str) -> Path:
    path = Path(target).expanduser()
    if not path.is_file():
        raise MissingInputError(f"tokenizer spec {spec!r}: no file at {str(path)!r}")
    return path


def _load_ranks(spec: str, path: Path) -> dict[bytes, int]:
    """A tiktoken ranks file ('base64-token rank' per line), plain or compressed."""
    try:
        with open_binary(path) as handle:
            pairs = (line.split() for line in handle.read().splitlines() if line.strip())
            return {binascii.a2b_base64(token): int(rank) for token, rank in pairs}
    except (ValueError, binascii.Error, OSError) as exc:
        raise SynthscaleError(
            f"tokenizer spec {spec!r}: {str(path)!r} is not a tiktoken ranks file "
            f"(lines of 'base64-token rank'): {exc}"
        ) from None


def _tiktoken_tokenizer(spec, encoding, eod_token: str, sha256: str) -> Tokenizer:
    return Tokenizer(
        spec=spec,
        vocab_size=encoding.n_vocab,
        eod_id=encoding.encode_single_token(eod_token),
        eod_token=eod_token,
        sha256=sha256,
        encode=encoding.encode_ordinary,
        decode_token=encoding.decode_single_token_bytes,
    )


def _load_llama3(spec: str, target: str) -> Tokenizer:
    """Meta's `tokenizer.model` with tiktoken: Llama 3's ids exactly (specials from 128,000)."""
    import tiktoken

    path = _require_file(spec, target)
    ranks = _load_ranks(spec, path)
    if len(ranks) != LLAMA3_NUM_RANKS:
        warnings.warn(
            f"{str(path)!r} has {len(ranks):,} ranks, Meta's Llama 3 tokenizer.model has "
            f"{LLAMA3_NUM_RANKS:,}: special tokens are numbered from {len(ranks):,}",
            stacklevel=3,
        )
    encoding = tiktoken.Encoding(
        name=f"llama3:{path.name}",
        pat_str=LLAMA3_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=llama3_special_tokens(len(ranks)),
    )
    return _tiktoken_tokenizer(spec, encoding, "<|end_of_text|>", sha256_file(path))


def _load_tiktoken(spec: str, target: str) -> Tokenizer:
    """A named tiktoken encoding (needs its cached file offline) or a ranks file."""
    import tiktoken

    path = Path(target).expanduser()
    if path.is_file():
        ranks = _load_ranks(spec, path)
        encoding = tiktoken.Encoding(
            name=path.name,
            pat_str=LLAMA3_PATTERN,  # the cl100k-style split, as Llama 3 uses
            mergeable_ranks=ranks,
            special_tokens={"<|endoftext|>": len(ranks)},
        )
        return _tiktoken_tokenizer(spec, encoding, "<|endoftext|>", sha256_file(path))
    try:
        encoding = tiktoken.get_encoding(target)
    except Exception as exc:
        raise SynthscaleError(
            f"tokenizer spec {spec!r}: {target!r} is neither a file nor a tiktoken encoding "
            f"that can be loaded here ({type(exc).__name__}: {exc}); pass the path of its ranks file"
        ) from None
    eod = "<|endoftext|>" if "<|endoftext|>" in encoding.special_tokens_set else None
    if eod is None:
        raise SynthscaleError(f"tokenizer spec {spec!r}: encoding has no <|endoftext|> token")
    return _tiktoken_tokenizer(spec, encoding, eod, f"tiktoken-encoding:{target}")


def _load_hf(spec: str, target: str) -> Tokenizer:
    """A Hugging Face `tokenizer.json` (its folder may hold tokenizer_config.json naming eos)."""
    from tokenizers import Tokenizer as HFTokenizer

    path = Path(target).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    path = _require_file(spec, str(path))
    try:
        hf = HFTokenizer.from_file(str(path))
    except Exception as exc:
        raise SynthscaleError(f"tokenizer spec {spec!r}: cannot load {str(path)!r}: {exc}") from None
    eod_token = _hf_eod_token(path, hf)
    if eod_token is None:
        raise SynthscaleError(
            f"tokenizer spec {spec!r}: no end-of-document token found; add one of "
            f"{', '.join(HF_EOD_CANDIDATES)} or name eos_token in tokenizer_config.json beside it"
        )

    def encode(text: str) -> list[int]:
        return hf.encode(text, add_special_tokens=False).ids

    return Tokenizer(
        spec=spec,
        vocab_size=hf.get_vocab_size(with_added_tokens=True),
        eod_id=hf.token_to_id(eod_token),
        eod_token=eod_token,
        sha256=sha256_file(path),
        encode=encode,
        decode_token=lambda token_id: hf.decode([token_id], skip_special_tokens=False).encode("utf-8"),
    )


def _hf_eod_token(path: Path, hf) -> str | None:
    config = path.with_name("tokenizer_config.json")
    if config.is_file():
        eos = json.loads(config.read_text(encoding="utf-8")).get("eos_token")
        if isinstance(eos, dict):
            eos = eos.get("content")
        if isinstance(eos, str) and hf.token_to_id(eos) is not None:
            return eos
    for candidate in HF_EOD_CANDIDATES:
        if hf.token_to_id(candidate) is not None:
            return candidate
    return None
