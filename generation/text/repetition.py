"""Repetition: the Gopher quality rules against repeated text (Rae et al. 2021, *Scaling Language
Models: Methods, Analysis & Insights from Training Gopher*, appendix A.1.1 and table A1).

A small model's outputs loop ("The National Post is a leading publication ..." ten times over,
"- Chapter 1 ... - Chapter 54"); these are the published rules that reject such documents, with
the published thresholds. A document fails a rule when its share is ABOVE the threshold:

  dup_line_frac         0.30  lines that repeat an earlier line / lines
  dup_para_frac         0.30  paragraphs that repeat an earlier paragraph / paragraphs
  dup_line_char_frac    0.20  characters in those repeated lines / characters of the document
  dup_para_char_frac    0.20  characters in those repeated paragraphs / characters of the document
  top_2gram .. top_4gram      characters covered by the most frequent word n-gram (all its occurrences,
                        0.20, 0.18, 0.16   when it occurs twice or more; overlaps counted once) / characters of the words
  dup_5gram .. dup_10gram     characters of the words covered by n-grams that repeat an earlier
                        0.15, 0.14, 0.13, 0.12, 0.11, 0.10   occurrence / characters of the words

Lines are split at newlines, paragraphs at blank lines (both stripped, empty ones ignored); words
are whitespace-separated tokens. The rules are checked in the order above; `check` names the first
that fails (the rule a rejection is counted under). Like Gopher, which applies them to documents of
50 words or more, a text of fewer than `min_words` (50) words is not judged: in a 20-word question
one repeated "the United States" is a quarter of the characters, not a loop.

datatrove's `GopherRepetitionFilter` implements the same table, but for English it needs spaCy for
its word tokenizer (about 35 more packages, pydantic among them, beside vLLM's); these few lines
implement the published definitions instead, behind the same kind of interface: `GopherRepetition`
(thresholds as data), `check(text)` -> the failed rule or None, `shares(text)` -> every measured share.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

# Rae et al. 2021, table A1.
GOPHER_THRESHOLDS: dict[str, float] = {
    "dup_line_frac": 0.30,
    "dup_para_frac": 0.30,
    "dup_line_char_frac": 0.20,
    "dup_para_char_frac": 0.20,
    "top_2gram": 0.20,
    "top_3gram": 0.18,
    "top_4gram": 0.16,
    "dup_5gram": 0.15,
    "dup_6gram": 0.14,
    "dup_7gram": 0.13,
    "dup_8gram": 0.12,
    "dup_9gram": 0.11,
    "dup_10gram": 0.10,
}
RULES = tuple(GOPHER_THRESHOLDS)
SOURCE = "Rae et al. 2021 (Gopher), table A1"

_PARAGRAPH = re.compile(r"\n\s*\n")


def _repeated(items: list[str]) -> tuple[int, int]:
    """(items that repeat an earlier one, their characters)."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def _top_ngram_share(words: list[str], lengths: list[int], total: int, n: int) -> float:
    if len(words) < n or not total:
        return 0.0
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    gram, count = grams.most_common(1)[0]
    if count < 2:
        return 0.0
    covered = [False] * len(words)  # characters covered, so overlapping occurrences count once
    for i in range(len(words) - n + 1):
        if tuple(words[i:i + n]) == gram:
            covered[i:i + n] = [True] * n
    return sum(length for length, c in zip(lengths, covered) if c) / total


def _duplicated_ngram_share(words: list[str], lengths: list[int], total: int, n: int) -> float:
    if len(words) < n or not total:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        if gram in seen:
            covered[i:i + n] = [True] * n
        else:
            seen.add(gram)
    return sum(length for length, c in zip(lengths, covered) if c) / total


@dataclass(frozen=True)
class GopherRepetition:
    """The rules with their thresholds (Gopher's by default); a threshold of None turns a rule off."""

    thresholds: dict = field(default_factory=lambda: dict(GOPHER_THRESHOLDS))
    min_words: int = 50

    def __post_init__(self) -> None:
        unknown = set(self.thresholds) - set(RULES)
        if unknown:
            raise ValueError(f"unknown repetition rule(s) {sorted(unknown)}; known: {', '.join(RULES)}")
        for rule, value in self.thresholds.items():
            if value is not None and not 0 < float(value) <= 1:
                raise ValueError(f"repetition rule {rule}: threshold must be in (0, 1] or null, got {value!r}")

    def shares(self, text: str) -> dict[str, float]:
        """Every rule's measured share for `text` (see the module docstring)."""
        text = text.strip()
        total_chars = max(len(text), 1)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        paragraphs = [p.strip() for p in _PARAGRAPH.split(text) if p.strip()]
        out: dict[str, float] = {}
        line_dups, line_chars = _repeated(lines)
        para_dups, para_chars = _repeated(paragraphs)
        out["dup_line_frac"] = line_dups / len(lines) if lines else 0.0
        out["dup_para_frac"] = para_dups / len(paragraphs) if paragraphs else 0.0
        out["dup_line_char_frac"] = line_chars / total_chars
        out["dup_para_char_frac"] = para_chars / total_chars
        words = text.split()
        lengths = [len(w) for w in words]
        word_chars = sum(lengths)
        for n in (2, 3, 4):
            out[f"top_{n}gram"] = _top_ngram_share(words, lengths, word_chars, n)
        for n in range(5, 11):
            out[f"dup_{n}gram"] = _duplicated_ngram_share(words, lengths, word_chars, n)
        return out

    def check(self, text: str) -> str | None:
        """The first rule `text` fails (its share above the threshold), or None: not repetitive
        (or shorter than `min_words` words: not judged)."""
        if len(text.split()) < self.min_words:
            return None
        shares = self.shares(text)
        for rule in RULES:
            limit = self.thresholds.get(rule)
            if limit is not None and shares[rule] > limit:
                return rule
        return None


GOPHER = GopherRepetition()
