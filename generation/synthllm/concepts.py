"""Parsing an LLM's concept-extraction output into a list of concepts as the model wrote them
(SynthLLM levels 2 and 3), and the document's own key phrases beside them.

The extraction prompt (prompt_sets/synthllm.yaml, step `concepts`) asks for a bulleted list of short
names, but models answer in many shapes. Accepted, in this order:

  1. JSON: an array of strings, or an object with a list under `concepts`, `topics`, `key_concepts`
     or `keywords` (several such lists are joined), possibly inside a ```json fence or after a
     preamble line;
  2. a list with one item per line: `- x`, `* x`, `• x`, `1. x`, `1) x`, or bare lines (headings
     such as "Topics:" and "Key concepts:" are skipped);
  3. one line of items separated by commas or semicolons (an optional "Concepts:" label first).

Each item keeps its surface text (case included): markdown emphasis, quotes and edge punctuation
are removed and whitespace collapsed (Unicode NFKC). An explanation after the name is cut off:
`Economy: the study of money` and `Economy - the study of money` give `Economy` when the part
before the colon or dash is short (at most `max_words` words). A trailing `(ABBR)` becomes an
alias (`Machine Learning (ML)` -> `Machine Learning`, alias `ML`); any other trailing parenthesis,
closed or cut off, is removed. Items still longer than `max_words` words or `max_chars` characters
are dropped (a sentence is not a concept), case-insensitive duplicates are dropped (first kept),
and at most `max_concepts` are kept. An output cut at the token limit (`truncated`) is parsed
without its last line, the one the limit cut.

Matching concepts across documents (case, plurals, articles) is NOT done here: `generation
concept-graph` canonicalises (generation/synthllm/concept_keys.py), so improving it never means running the
model again. `extraction_fields` gives what an extraction record stores: `concepts` (surface text),
`concept_aliases`, `concepts_raw` (the items as the model wrote them) and `text_concepts` (the
document's top key phrases by YAKE, a deterministic extractor: the graph's second source).

Anything else (prose, an empty answer, a list whose items are all too long) is a
`ConceptParseError` with a reason code, never guessed at: the run keeps the raw output in
`failures/` and counts it (manifest `filters.modified`), and the document stays in the pool with
its text's phrases and no model concepts (`concepts_error` says why); a document with neither
is a failure.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass

MAX_CONCEPTS = 20
MAX_WORDS = 6
MAX_CHARS = 60
SHORT_LABEL_WORDS = 5  # "Economy: the study of money": the part before ':' or ' - ' is the name when this short
TEXT_CONCEPTS = {"n": 2, "top": 8, "dedup_lim": 0.7}  # YAKE: phrases of 1-2 words, the top 8 of a chunk

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)
_BULLET = re.compile(r"^\s*(?:[-*\u2022\u2023\u25e6\u2043+]|\(?\d{1,3}[.)\]:]|\(?[a-zA-Z][.)])\s+(.*)$")
_HEADING = re.compile(r"^\s*(?:#+\s*)?[\w\s-]{0,40}:\s*$")
_LABEL = re.compile(r"^\s*(?:key\s+)?(?:concepts?|topics?|keywords?)(?:\s+and\s+(?:key\s+)?(?:concepts?|topics?))?\s*:\s*",
                    re.I)
_STRIP = " \t\"'`*_#.,;:!?()[]{}<>\u201c\u201d\u2018\u2019\u00ab\u00bb"
_EXPLANATION = re.compile(r"\s*(?::|\s[-\u2013\u2014]+\s)\s*")  # "Name: ..." or "Name - ..." (not a hyphen in a word)
_PAREN = re.compile(r"\s*\(([^()]*)\)?\s*$")  # a trailing parenthesis, closed or cut off
_ABBREVIATION = re.compile(r"[A-Za-z][A-Za-z0-9&.\-]{0,11}")
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


def surface_text(item: str) -> str:
    """One item as the model wrote it, cleaned: NFKC, markdown emphasis, quotes and edge punctuation
    removed, whitespace collapsed; case kept. May return "" (nothing left)."""
    text = unicodedata.normalize("NFKC", str(item))
    text = text.replace("**", "").replace("__", "")
    text = re.sub(r"\s+", " ", text).strip(_STRIP + " ")
    return re.sub(r"\s+", " ", text)


def normalise_concept(item: str) -> str:
    """The cleaned surface text, case-folded (a within-record duplicate check, not the graph's key)."""
    return surface_text(item).casefold()


def split_item(item: str) -> tuple[str, list[str]]:
    """(the concept's name, its aliases) from one list item: the explanation after a short name and
    ':' or a dash is cut off; a trailing `(ABBR)` becomes an alias, any other trailing parenthesis goes."""
    text = _LABEL.sub("", unicodedata.normalize("NFKC", str(item)).replace("**", "").replace("__", "")).strip()
    match = _EXPLANATION.search(text)
    if match and match.start() > 0 and len(text[:match.start()].split()) <= SHORT_LABEL_WORDS:
        text = text[:match.start()]
    aliases: list[str] = []
    paren = _PAREN.search(text)
    if paren and paren.start() > 0:
        inside = paren.group(1).strip()
        if paren.group(0).rstrip().endswith(")") and _ABBREVIATION.fullmatch(inside) and any(ch.isupper() for ch in inside):
            aliases.append(inside)
        text = text[:paren.start()]
    return surface_text(text), aliases


def _from_json(text: str, truncated: bool = False) -> list[str] | None:
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    if truncated and "[" in text:  # an array cut off: its complete items
        cut = text.rfind('",')
        if cut > text.find("["):
            candidates.append(text[:cut + 1] + "]")
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
    if len(body) >= 2 and all(len(split_item(line)[0].split()) <= MAX_WORDS + 2 for line in body):
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


@dataclass
class ParsedConcepts:
    """An extraction output, parsed: names (surface text), their aliases, and the raw items."""

    concepts: list[str]
    aliases: dict[str, list[str]]
    raw: list[str]
    dropped_line: str | None = None  # the last line of a truncated output, left out


def _drop_last_line(text: str) -> tuple[str, str]:
    """(the text without its incomplete end, the end): the last line; on one line, the last
    comma- or semicolon-separated item (all of it when there is none)."""
    body = text.rstrip("\n")
    cut = body.rfind("\n")
    if cut < 0:
        cut = max(body.rfind(","), body.rfind(";"))
        return (body[:cut], body[cut + 1:]) if cut >= 0 else ("", body)
    return body[:cut], body[cut + 1:]


def parse_list(text: str, limits: ConceptLimits = ConceptLimits(), truncated: bool = False) -> ParsedConcepts:
    """The concepts of an extraction output (see the module docstring); raises ConceptParseError."""
    if not text or not text.strip():
        raise ConceptParseError("concepts_empty", "the output is empty")
    dropped = None
    raw = _from_json(text, truncated)
    if raw is None and truncated:
        text, dropped = _drop_last_line(text)
    if raw is None and text.strip():
        raw = _from_lines(text)
    if raw is None and text.strip():
        raw = _from_separated(text)
    if raw is None:
        raise ConceptParseError("concepts_unparseable",
                                "no JSON array, no list of lines and no comma/semicolon-separated line"
                                + (" (truncated: its last line left out)" if dropped is not None else ""))
    out: list[str] = []
    aliases: dict[str, list[str]] = {}
    seen: set[str] = set()
    too_long = 0
    for item in raw:
        name, alias = split_item(item)
        if not name:
            continue
        if len(name) > limits.max_chars or len(name.split()) > limits.max_words:
            too_long += 1
            continue
        folded = name.casefold()
        if folded in seen:
            continue
        seen.add(folded)
        out.append(name)
        if alias:
            aliases[name] = alias
        if len(out) >= limits.max_concepts:
            break
    if not out:
        if too_long:
            raise ConceptParseError("concepts_too_long",
                                    f"all {too_long} items exceed {limits.max_words} words or {limits.max_chars} characters")
        raise ConceptParseError("concepts_empty", f"{len(raw)} items, none left after cleaning")
    return ParsedConcepts(out, aliases, [str(item) for item in raw], dropped)


def parse_concepts(text: str, limits: ConceptLimits = ConceptLimits(), truncated: bool = False) -> list[str]:
    """The concept names of an extraction output (surface text); raises ConceptParseError."""
    return parse_list(text, limits, truncated).concepts


def text_concepts(document: str) -> list[str]:
    """The document's top key phrases (YAKE with TEXT_CONCEPTS: deterministic, no model)."""
    import yake

    extractor = yake.KeywordExtractor(lan="en", **TEXT_CONCEPTS)
    return [surface_text(phrase) for phrase, _score in extractor.extract_keywords(document) if surface_text(phrase)]


def text_concepts_method() -> str:
    from importlib.metadata import version

    return f"yake {version('yake')} " + " ".join(f"{k}={v}" for k, v in TEXT_CONCEPTS.items())


def extraction_fields(output: str, document: str, truncated: bool = False) -> dict:
    """What a concept-extraction record stores beside `document`: the model's concepts (surface
    text), their aliases, the raw items, the document's YAKE phrases (and, for a truncated output,
    the line left out). An output with no list gives no model concepts and `concepts_error`
    (reason and detail); raises ConceptParseError only when the text has no phrase either."""
    phrases = text_concepts(document)
    try:
        parsed = parse_list(output, truncated=truncated)
    except ConceptParseError as exc:
        if not phrases:
            raise
        return {"concepts": [], "concept_aliases": {}, "concepts_raw": [], "text_concepts": phrases,
                "text_concepts_method": text_concepts_method(),
                "concepts_error": {"reason": exc.reason, "detail": exc.detail}}
    fields = {"concepts": parsed.concepts, "concept_aliases": parsed.aliases, "concepts_raw": parsed.raw,
              "text_concepts": phrases, "text_concepts_method": text_concepts_method()}
    if truncated:
        fields["truncated_line_dropped"] = parsed.dropped_line
    return fields
