"""Parsing an LLM's concept-extraction output into a normalised list of concepts (SynthLLM level 2/3).

The extraction prompt (prompt_sets/synthllm.yaml, step `concepts`) asks for a bulleted list of short
strings, but models answer in many shapes. Accepted, in this order:

  1. JSON: an array of strings, or an object with a list under `concepts`, `topics`, `key_concepts`
     or `keywords` (several such lists are joined), possibly inside a ```json fence or after a
     preamble line;
  2. a list with one item per line: `- x`, `* x`, `• x`, `1. x`, `1) x`, or bare lines (headings
     such as "Topics:" and "Key concepts:" are skipped);
  3. one line of items separated by commas or semicolons (an optional "Concepts:" label first).

Each item is normalised: Unicode NFKC, case-folded, markdown emphasis, quotes and surrounding
punctuation removed, inner whitespace collapsed to one space. Items longer than `max_words` words
or `max_chars` characters are dropped (a sentence is not a concept), duplicates are dropped
(first occurrence kept), and at most `max_concepts` are kept.

Anything else (prose, an empty answer, a list whose items are all too long) raises
`ConceptParseError` with a reason code: the run records it in `failures/` with the raw output and
never guesses.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass

MAX_CONCEPTS = 20
MAX_WORDS = 6
MAX_CHARS = 60

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)
_BULLET = re.compile(r"^\s*(?:[-*\u2022\u2023\u25e6\u2043+]|\(?\d{1,3}[.)\]:]|\(?[a-zA-Z][.)])\s+(.*)$")
_HEADING = re.compile(r"^\s*(?:#+\s*)?[\w\s-]{0,40}:\s*$")
_LABEL = re.compile(r"^\s*(?:key\s+)?(?:concepts?|topics?|keywords?)(?:\s+and\s+(?:key\s+)?(?:concepts?|topics?))?\s*:\s*",
                    re.I)
_STRIP = " \t\"'`*_#.,;:!?()[]{}<>\u201c\u201d\u2018\u2019\u00ab\u00bb"
_JSON_KEYS = ("concepts", "key_concepts", "topics", "keywords")


class ConceptParseError(ValueError):
    """The output holds no list of concepts; `reason` is a short code recorded in failures/."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ConceptLimits:
    max_concepts: int = MAX_CONCEPTS
    max_words: int = MAX_WORDS
    max_chars: int = MAX_CHARS


def normalise_concept(item: str) -> str:
    """One concept as the graph keys it: NFKC, case-folded, markup and edge punctuation removed,
    whitespace collapsed. May return "" (nothing left)."""
    text = unicodedata.normalize("NFKC", str(item)).casefold()
    text = text.replace("**", "").replace("__", "")
    text = re.sub(r"\s+", " ", text).strip(_STRIP + " ")
    return re.sub(r"\s+", " ", text)


def _from_json(text: str) -> list[str] | None:
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        for opener, closer in (("[", "]"), ("{", "}")):
            start, end = candidate.find(opener), candidate.rfind(closer)
            if start < 0 or end <= start:
                continue
            try:
                data = json.loads(candidate[start:end + 1])
            except ValueError:
                continue
            if isinstance(data, list) and all(isinstance(x, str) for x in data):
                return data
            if isinstance(data, dict):
                items: list[str] = []
                for key in _JSON_KEYS:
                    value = data.get(key)
                    if isinstance(value, list):
                        items.extend(x for x in value if isinstance(x, str))
                if items:
                    return items
    return None


def _from_lines(text: str) -> list[str] | None:
    lines = [line for line in text.splitlines() if line.strip()]
    bullets = [m.group(1) for m in (_BULLET.match(line) for line in lines) if m]
    if len(bullets) >= 2 or (bullets and len(lines) <= 2):
        return bullets
    body = [line for line in lines if not _HEADING.match(line)]
    if len(body) >= 2 and all(len(line.split()) <= MAX_WORDS + 2 for line in body):
        return body  # one bare item per line
    return None


def _from_separated(text: str) -> list[str] | None:
    lines = [line for line in text.splitlines() if line.strip() and not _HEADING.match(line)]
    if len(lines) != 1:
        return None
    line = _LABEL.sub("", lines[0])
    for sep in (";", ","):
        if sep in line:
            return line.split(sep)
    return None


def parse_concepts(text: str, limits: ConceptLimits = ConceptLimits()) -> list[str]:
    """The normalised concepts in an extraction output; raises ConceptParseError."""
    if not text or not text.strip():
        raise ConceptParseError("concepts_empty", "the output is empty")
    raw = _from_json(text)
    if raw is None:
        raw = _from_lines(text)
    if raw is None:
        raw = _from_separated(text)
    if raw is None:
        raise ConceptParseError("concepts_unparseable",
                                "no JSON array, no list of lines and no comma/semicolon-separated line")
    out: list[str] = []
    seen: set[str] = set()
    too_long = 0
    for item in raw:
        concept = normalise_concept(_LABEL.sub("", item))
        if not concept:
            continue
        if len(concept) > limits.max_chars or len(concept.split()) > limits.max_words:
            too_long += 1
            continue
        if concept in seen:
            continue
        seen.add(concept)
        out.append(concept)
        if len(out) >= limits.max_concepts:
            break
    if not out:
        if too_long:
            raise ConceptParseError("concepts_too_long",
                                    f"all {too_long} items exceed {limits.max_words} words or {limits.max_chars} characters")
        raise ConceptParseError("concepts_empty", f"{len(raw)} items, none left after normalisation")
    return out
