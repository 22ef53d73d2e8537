"""Unigram diagnostics straight from Megatron .bin/.idx datasets.

Token counts are streamed with data_prep's reader (`data_prep.indexed`, megatron-core's
`IndexedDataset` underneath: the `synthscale[data_prep]` extra), a block of whole documents at a
time (about `chunk_tokens` tokens), never the whole file. Only this module needs that extra, and
only when it counts: fitting and the report do not. From the counts:

- Zipf fit: least squares of log10 relative frequency on log10 rank over the ranks with a
  non-zero count (up to `max_rank`); reported as the exponent s in f(r) ~ r^-s, and R^2.
- Coverage of the test set by a training set: the share of test token occurrences whose token
  occurs in the training set (token coverage), and the share of distinct test tokens that do
  (type coverage).
- KL(test || train) in nats, with the test distribution p = c_test / T_test (unsmoothed) and the
  training distribution smoothed additively, q = (c_train + alpha) / (T_train + alpha V), where
  V is the vocabulary size, so that every test token has q > 0.
- Tokens frequent in test but rare in train: among tokens seen at least `min_test_count` times in
  test, the largest ratios p / q (same smoothing).

The end-of-document id from PREFIX.manifest.json (docs/formats.md section 2) is left out of the
counts unless asked otherwise; what was left out is stated in the result. Listed tokens carry
their text, decoded with the tokenizer the manifests name (data_prep's loader, the same one that
made the ids; its file's sha256 must match the manifest's), so a person can read them; where the
tokenizer cannot be loaded, the result says why and lists ids only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from analysis.core.defaults import DEFAULT_SMOOTHING
from synthscale.errors import SynthscaleError

DEFAULT_CHUNK_TOKENS = 1 << 24
DATA_EXTRA = "pip install 'synthscale[data_prep]'"


class UnigramError(SynthscaleError):
    """Token files that cannot be compared as asked; the message names the prefix or value."""


@dataclass
class TokenCounts:
    name: str
    prefix: str
    counts: np.ndarray  # int64, indexed by token id
    documents: int
    excluded: dict[int, int] = field(default_factory=dict)  # token id -> occurrences left out

    @property
    def tokens(self) -> int:
        return int(self.counts.sum())

    def padded(self, size: int) -> np.ndarray:
        return np.pad(self.counts, (0, max(0, size - self.counts.size)))


def read_manifest(prefix: str | Path) -> dict | None:
    path = Path(f"{prefix}.manifest.json")
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UnigramError(f"manifest {str(path)!r} is not valid JSON: {exc}") from exc


def token_id_counts(
    prefix: str | Path,
    name: str | None = None,
    exclude_ids: tuple[int, ...] = (),
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> TokenCounts:
    """Occurrences of every token id in PREFIX.bin/.idx, read a block of whole documents at a time."""
    if chunk_tokens < 1:
        raise UnigramError(f"chunk_tokens: must be positive, got {chunk_tokens}")
    prefix = str(prefix)
    counts = np.zeros(0, dtype=np.int64)
    with _open_tokens(prefix, name) as data:
        documents = data.documents
        for first, stop, block in data.blocks(chunk_tokens):
            if block.size and block.min() < 0:
                raise UnigramError(f"{prefix!r}: negative token id {int(block.min())} in documents {first}..{stop - 1}")
            block_counts = np.bincount(block.astype(np.int64, copy=False))
            if block_counts.size > counts.size:
                counts = np.pad(counts, (0, block_counts.size - counts.size))
            counts[: block_counts.size] += block_counts
    excluded = {}
    for token in exclude_ids:
        if 0 <= token < counts.size:
            excluded[int(token)] = int(counts[token])
            counts[token] = 0
    return TokenCounts(name or Path(prefix).name, prefix, counts, documents, excluded)


def _open_tokens(prefix: str, name: str | None):
    """data_prep's reader, imported here: without the data_prep extra, one line saying what to install.
    (A missing file is named before megatron-core is imported, extra or not.)"""
    label = f"unigram set {name!r}" if name else "unigram set"
    try:
        from data_prep.indexed import open_indexed

        return open_indexed(prefix, label)
    except ImportError as exc:
        raise UnigramError(f"{label}: reading .bin/.idx token files needs the data_prep extra ({DATA_EXTRA}); "
                           f"{exc}") from None


def zipf_fit(counts: np.ndarray, max_rank: int | None = None) -> dict:
    """Fit log10 f = c - s log10 r over the non-zero ranks (the top `max_rank` if given)."""
    freq = np.sort(counts[counts > 0])[::-1].astype(float)
    if max_rank is not None:
        freq = freq[:max_rank]
    if freq.size < 3:
        return {"exponent": None, "note": f"only {freq.size} distinct token(s): no Zipf fit"}
    freq = freq / counts.sum()
    log_rank = np.log10(np.arange(1, freq.size + 1))
    fit = stats.linregress(log_rank, np.log10(freq))
    return {
        "exponent": float(-fit.slope),
        "log10_intercept": float(fit.intercept),
        "r_squared": float(fit.rvalue**2),
        "ranks_used": int(freq.size),
    }


def coverage(test: np.ndarray, train: np.ndarray) -> dict:
    seen = train > 0
    in_test = test > 0
    return {
        "token_coverage": float(test[seen].sum() / test.sum()) if test.sum() else None,
        "type_coverage": float((in_test & seen).sum() / in_test.sum()) if in_test.any() else None,
        "test_types": int(in_test.sum()),
        "test_types_unseen_in_train": int((in_test & ~seen).sum()),
    }


def smoothed(counts: np.ndarray, smoothing: float) -> np.ndarray:
    return (counts + smoothing) / (counts.sum() + smoothing * counts.size)


def kl_divergence(test: np.ndarray, train: np.ndarray, smoothing: float = DEFAULT_SMOOTHING) -> float:
    """KL(p_test || q_train) in nats, q additively smoothed over the len(train) token ids."""
    if smoothing <= 0:
        raise UnigramError(f"smoothing: must be positive (q must not be 0 where p is not), got {smoothing}")
    p = test / test.sum()
    q = smoothed(train, smoothing)
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def frequent_in_test_rare_in_train(test: np.ndarray, train: np.ndarray, smoothing: float = DEFAULT_SMOOTHING,
                                   top: int = 20, min_test_count: int = 5) -> list[dict]:
    p = test / test.sum()
    q = smoothed(train, smoothing)
    candidates = np.flatnonzero(test >= min_test_count)
    ratio = p[candidates] / q[candidates]
    order = candidates[np.argsort(-ratio, kind="stable")][:top]
    return [
        {"token_id": int(t), "test_count": int(test[t]), "test_freq": float(p[t]),
         "train_count": int(train[t]), "train_freq": float(train[t] / train.sum()) if train.sum() else 0.0,
         "ratio": float(p[t] / q[t])}
        for t in order
    ]


@dataclass
class UnigramResult:
    test: TokenCounts
    trains: list[TokenCounts]
    vocab_size: int
    smoothing: float
    per_train: dict[str, dict]
    zipf: dict[str, dict]
    decoded_with: dict = field(default_factory=dict)  # the tokenizer that gave the listed tokens their text

    def to_dict(self) -> dict:
        def describe(c: TokenCounts) -> dict:
            return {"name": c.name, "prefix": c.prefix, "documents": c.documents, "tokens": c.tokens,
                    "types": int((c.counts > 0).sum()), "excluded_ids": c.excluded}

        return {
            "test": describe(self.test),
            "train": [describe(c) for c in self.trains],
            "vocab_size": self.vocab_size,
            "smoothing": {"kind": "additive", "alpha": self.smoothing, "over_types": self.vocab_size,
                          "applied_to": "training distribution q (test distribution p unsmoothed)"},
            "zipf": self.zipf,
            "per_train": self.per_train,
            "token_text": self.decoded_with,
        }


def unigram_diagnostics(
    train: dict[str, str], test: str, smoothing: float = DEFAULT_SMOOTHING, top: int = 20,
    min_test_count: int = 5, keep_eod: bool = False, vocab_size: int | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS, zipf_max_rank: int | None = None,
) -> UnigramResult:
    """All diagnostics for test PREFIX against each named training PREFIX."""
    if not train:
        raise UnigramError("name at least one training set (NAME=PREFIX)")
    prefixes = {"test": test, **train}
    manifests = {name: read_manifest(p) for name, p in prefixes.items()}
    eod = set()
    for manifest in manifests.values():
        tokenizer = (manifest or {}).get("tokenizer") or {}
        if not keep_eod and tokenizer.get("eod_id") is not None:
            eod.add(int(tokenizer["eod_id"]))
        if vocab_size is None and tokenizer.get("vocab_size"):
            vocab_size = int(tokenizer["vocab_size"])
    exclude = tuple(sorted(eod))
    test_counts = token_id_counts(test, "test", exclude, chunk_tokens)
    train_counts = [token_id_counts(p, name, exclude, chunk_tokens) for name, p in train.items()]
    largest = max(c.counts.size for c in [test_counts, *train_counts])
    if vocab_size is None or vocab_size < largest:
        vocab_size = largest
    t = test_counts.padded(vocab_size)
    if t.sum() == 0:
        raise UnigramError(f"test set {test!r} has no tokens to compare (after leaving out ids {list(exclude)})")
    per_train, zipf = {}, {"test": zipf_fit(t, zipf_max_rank)}
    for counts in train_counts:
        q = counts.padded(vocab_size)
        if q.sum() == 0:
            raise UnigramError(f"training set {counts.name!r} ({counts.prefix!r}) has no tokens")
        zipf[counts.name] = zipf_fit(q, zipf_max_rank)
        per_train[counts.name] = {
            **coverage(t, q),
            "kl_test_train_nats": kl_divergence(t, q, smoothing),
            "frequent_in_test_rare_in_train": frequent_in_test_rare_in_train(t, q, smoothing, top, min_test_count),
        }
    listed = sorted({t["token_id"] for v in per_train.values() for t in v["frequent_in_test_rare_in_train"]})
    texts, decoded_with = token_texts(manifests, listed)
    for v in per_train.values():
        for t in v["frequent_in_test_rare_in_train"]:
            t["token"] = texts.get(t["token_id"])
    return UnigramResult(test_counts, train_counts, vocab_size, smoothing, per_train, zipf, decoded_with)


def tokenizer_of(manifests: dict[str, dict | None]) -> dict | None:
    """The tokenizer every manifest names ({spec, sha256, ...}); an error when two name different ones."""
    named = {name: (m or {}).get("tokenizer") for name, m in manifests.items()}
    named = {name: t for name, t in named.items() if t and t.get("spec")}
    hashes = {t.get("sha256") for t in named.values()} - {None}
    if len(hashes) > 1:
        raise UnigramError("the token files were made by different tokenizers: "
                           + ", ".join(f"{n}: {t['spec']} (sha256 {str(t.get('sha256'))[:12]})" for n, t in named.items()))
    return next(iter(named.values()), None)


def token_texts(manifests: dict[str, dict | None], ids: list[int]) -> tuple[dict[int, str], dict]:
    """({id: text}, how they were decoded): each token's bytes from the manifests' tokenizer, as text
    (bytes that are not UTF-8 as backslash escapes); {} and the reason when it cannot be loaded."""
    tokenizer = tokenizer_of(manifests)
    if tokenizer is None:
        return {}, {"tokenizer": None, "why_not": "the manifests name no tokenizer"}
    try:
        from data_prep.tokenizer_spec import load_tokenizer

        loaded = load_tokenizer(tokenizer["spec"])
    except (ImportError, SynthscaleError) as exc:
        return {}, {"tokenizer": tokenizer["spec"], "why_not": f"it cannot be loaded here: {exc}"}
    if tokenizer.get("sha256") and loaded.sha256 != tokenizer["sha256"]:
        return {}, {"tokenizer": tokenizer["spec"],
                    "why_not": f"its file has changed since the tokens were made (sha256 {loaded.sha256[:12]}, "
                               f"the manifests say {tokenizer['sha256'][:12]})"}
    texts = {i: loaded.decode_token(i).decode("utf-8", errors="backslashreplace") for i in ids}
    return texts, {"tokenizer": tokenizer["spec"], "sha256": loaded.sha256}
