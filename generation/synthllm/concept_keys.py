"""Canonical concept keys: how `generation concept-graph` decides that two surface forms are one
concept ("the Economy", "economy", "economies"), and which of a document's concepts it keeps.

The extraction records keep what the model (and YAKE) wrote; the key is made here, at graph time,
so improving it means rebuilding the graph, never running the model again. `graph.json` records
`CANON_VERSION` and the lemmatiser's version: change either and the graph says so.

Key of a surface form (version 1):
  1. Unicode NFKC, case-folded; hyphens, dashes and slashes become spaces; an apostrophe-s
     possessive is removed ("nation's" -> "nation"); other punctuation goes; whitespace collapsed;
  2. leading articles, demonstratives and possessive determiners are dropped ("the", "a", "our",
     "their", ...);
  3. the head noun is lemmatised as a noun with lemminflect: the last word, or the word before the
     first preposition ("departments of state" -> head "departments" -> "department of state").
     A noun-only lemmatiser, because a concept's head is a noun: simplemma, which has no part of
     speech, gives "learning" -> "learn" but "learnings" -> "learning".
The concept's name is its most frequent surface form (ties: the first in sort order).

Grounding: a concept from the model is kept for a document only when the lemma of each of its
content words (stop words aside) occurs in the document's text: a 135M model invents concepts,
and an invented one cannot link documents. The mention's offset (the first occurrence of the
head's lemma) is kept, so a reference excerpt can be centred on it.

The text's phrases (YAKE: statistics, no grammar) are kept when their head can be a noun (a noun
reading in lemminflect, or a word it does not know, such as most names): "overtures made" and
"pursuant" are not concepts. A one-word phrase that is a word of another phrase of the same
document ("States" beside "United States") is left out.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

from generation.text.fidelity import STOP_WORDS

CANON_VERSION = 1
LEADING = frozenset("the a an this that these those our their his her its my your".split())
PREPOSITIONS = frozenset("of for in on to at by with from about against between under over into through "
                         "within without among during".split())
_SEPARATORS = re.compile(r"[-\u2010-\u2015/\\]+")
_POSSESSIVE = re.compile(r"(?<=\w)['\u2019]s\b|(?<=s)['\u2019](?=\s|$)")
_NON_WORD = re.compile(r"[^\w\s]+")
_TOKEN = re.compile(r"[^\W_]+")


@lru_cache(maxsize=1 << 18)
def lemma(word: str) -> str:
    """lemminflect's noun lemma of one case-folded word (the word itself when it knows none)."""
    from lemminflect import getLemma

    lemmas = getLemma(word, upos="NOUN")
    return (lemmas[0] if lemmas else word).casefold()


def key_words(surface: str) -> list[str]:
    """Steps 1 and 2 of the key: the normalised words, leading determiners dropped."""
    text = unicodedata.normalize("NFKC", str(surface)).casefold()
    text = _POSSESSIVE.sub("", text)
    text = _SEPARATORS.sub(" ", text)
    words = _NON_WORD.sub(" ", text).split()
    while len(words) > 1 and words[0] in LEADING:
        words = words[1:]
    if words and words[0] in LEADING:
        return []
    return words


def head_index(words: list[str]) -> int:
    """The head noun's position: the word before the first preposition, else the last word."""
    for i, word in enumerate(words):
        if i > 0 and word in PREPOSITIONS:
            return i - 1
    return len(words) - 1


def concept_key(surface: str) -> str:
    """The canonical key of a surface form ("" when nothing is left)."""
    words = key_words(surface)
    if not words:
        return ""
    h = head_index(words)
    if words[h].isalpha():
        words[h] = lemma(words[h])
    return " ".join(words)


def noun_headed(words: list[str]) -> bool:
    """The head word has a noun reading in lemminflect, or is a word it does not know."""
    from lemminflect import getAllLemmas

    head = words[head_index(words)]
    readings = getAllLemmas(head)
    return not readings or "NOUN" in readings or "PROPN" in readings


def describe() -> dict:
    """What made the keys: recorded in graph.json."""
    from importlib.metadata import version

    return {"version": CANON_VERSION, "lemmatiser": f"lemminflect {version('lemminflect')} (noun lemmas, English)",
            "key": "NFKC + casefold; hyphens, dashes, slashes -> spaces; possessive 's and punctuation removed; "
                   "leading articles/possessive determiners dropped; head noun lemmatised",
            "grounding": "a model concept is kept only when each content word's lemma occurs in the document",
            "text_phrases": "kept when noun-headed (lemminflect); one-word phrases inside another phrase left out",
            "name": "the most frequent surface form"}


@dataclass
class DocumentText:
    """A document's words as lemmas, with the character offset of each lemma's first occurrence."""

    first: dict[str, int] = field(default_factory=dict)
    words: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, text: str) -> "DocumentText":
        out = cls()
        for match in _TOKEN.finditer(text):  # offsets in the text as stored (case-folding may change lengths)
            word = match.group(0).casefold()
            out.words.add(word)
            out.first.setdefault(lemma(word) if word.isalpha() else word, match.start())
        return out

    def offset(self, surface: str) -> int | None:
        """Where `surface` is mentioned (its head's first occurrence), or None when any of its
        content words is absent from the text (not grounded)."""
        words = key_words(surface)
        if not words:
            return None
        for word in words:
            if word in STOP_WORDS or word in self.words:
                continue
            if (lemma(word) if word.isalpha() else word) not in self.first:
                return None
        head = words[head_index(words)]
        return self.first.get(lemma(head) if head.isalpha() else head, self.first.get(head, -1))


@dataclass(frozen=True)
class Mention:
    key: str
    surface: str
    source: str  # "llm", "text" or "both"
    offset: int  # character offset in the document's text, -1 when unknown


SOURCES = ("llm", "text")


def document_mentions(record: dict, sources: tuple[str, ...] = SOURCES, counts: dict | None = None) -> list[Mention]:
    """The concepts of one extraction record, one per key, in extraction order (the model's first,
    then YAKE's): model concepts only when grounded in the record's `document`. `counts` (if
    given) adds up llm_parsed, llm_grounded, llm_ungrounded, text, both."""
    doc = DocumentText.of(record["document"])
    mentions: dict[str, Mention] = {}
    tally = counts if counts is not None else {}

    def add(n, name):
        tally[name] = tally.get(name, 0) + n

    if "llm" in sources:
        for surface in record.get("concepts") or []:
            key = concept_key(surface)
            if not key:
                continue
            add(1, "llm_parsed")
            offset = doc.offset(surface)
            if offset is None:
                add(1, "llm_ungrounded")
                continue
            add(1, "llm_grounded")
            mentions.setdefault(key, Mention(key, str(surface), "llm", offset))
    if "text" in sources:
        phrases = [(surface, key_words(surface)) for surface in record.get("text_concepts") or []]
        inside = {word for _, words in phrases if len(words) > 1 for word in words}
        for surface, words in phrases:
            key = concept_key(surface)
            if not key:
                continue
            add(1, "text")
            if not noun_headed(words) or (len(words) == 1 and words[0] in inside):
                add(1, "text_dropped")
                continue
            offset = doc.offset(surface)
            if key in mentions:
                if mentions[key].source == "llm":
                    add(1, "both")
                    mentions[key] = Mention(key, mentions[key].surface, "both", mentions[key].offset)
                continue
            mentions[key] = Mention(key, str(surface), "text", -1 if offset is None else offset)
    return list(mentions.values())


def source_shares(mentions: dict, llm_documents, text_documents) -> dict:
    """Each source's part in a graph (graph.json `counts.sources`): the model's concepts parsed,
    grounded and dropped; the text's phrases; and the concepts each source found (by key)."""
    import numpy as np

    llm = np.asarray(llm_documents) > 0
    text = np.asarray(text_documents) > 0
    n = max(len(llm), 1)
    parsed = int(mentions.get("llm_parsed", 0))
    return {
        "llm_parsed": parsed,
        "llm_grounded": int(mentions.get("llm_grounded", 0)),
        "llm_ungrounded_dropped": int(mentions.get("llm_ungrounded", 0)),
        "llm_grounded_share": round(mentions.get("llm_grounded", 0) / parsed, 4) if parsed else None,
        "text_phrases": int(mentions.get("text", 0)),
        "text_phrases_dropped": int(mentions.get("text_dropped", 0)),
        "concepts_llm_only": int((llm & ~text).sum()),
        "concepts_text_only": int((text & ~llm).sum()),
        "concepts_both": int((llm & text).sum()),
        "llm_share": round(float(llm.sum()) / n, 4),
        "text_share": round(float(text.sum()) / n, 4),
    }
