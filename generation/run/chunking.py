"""Split long sources into chunks of at most N generator tokens, at paragraph or sentence
boundaries (words, then characters, only for a sentence that alone is too long).

Chunks are slices of the original text (whitespace at their edges trimmed), in order.
"""

from __future__ import annotations

import math
import re
from typing import Callable

from synthscale.errors import SynthscaleError

_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_SENTENCE = re.compile(r"(?<=[.!?;:\u3002\uff01\uff1f])[\"'\u201d\u2019)\]]*\s+")
_WORD = re.compile(r"\s+")

CountFn = Callable[[str], int]


def _boundaries(text: str, start: int, end: int, pattern: re.Pattern) -> list[tuple[int, int]]:
    """Split text[start:end] after each match of `pattern` into contiguous spans."""
    spans = []
    cursor = start
    for match in pattern.finditer(text, start, end):
        if match.end() >= end:
            break
        if match.end() > cursor:
            spans.append((cursor, match.end()))
            cursor = match.end()
    spans.append((cursor, end))
    return [s for s in spans if s[1] > s[0]]


def _char_split(text: str, start: int, end: int, count: CountFn, max_tokens: int) -> list[tuple[int, int]]:
    """Last resort for a run with no whitespace: bisect on characters."""
    spans = []
    cursor = start
    while cursor < end:
        lo, hi = cursor + 1, end
        while lo < hi:  # largest stop with count(text[cursor:stop]) <= max_tokens
            mid = (lo + hi + 1) // 2
            if count(text[cursor:mid]) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        spans.append((cursor, lo))
        cursor = lo
    return spans


def _pieces(text: str, count: CountFn, max_tokens: int) -> list[tuple[int, int, int]]:
    """Contiguous (start, end, tokens) pieces, each at most max_tokens."""
    out: list[tuple[int, int, int]] = []
    levels = (_PARAGRAPH, _SENTENCE, _WORD)

    def visit(start: int, end: int, level: int) -> None:
        n = count(text[start:end])
        if n <= max_tokens:
            out.append((start, end, n))
            return
        if level >= len(levels):
            for s, e in _char_split(text, start, end, count, max_tokens):
                out.append((s, e, count(text[s:e])))
            return
        spans = _boundaries(text, start, end, levels[level])
        if len(spans) == 1:
            visit(start, end, level + 1)
            return
        for s, e in spans:
            visit(s, e, level + 1)

    visit(0, len(text), 0)
    return out


def split_into_chunks(text: str, count: CountFn, max_tokens: int) -> list[str]:
    """Chunks of `text`, each of at most `max_tokens` tokens by `count`, cut at paragraph, then
    sentence boundaries, sizes balanced (a 2,100-token source gives two chunks of ~1,050, not
    2,000 + 100)."""
    return [chunk for chunk, _ in split_with_counts(text, count, max_tokens)]


def split_with_counts(text: str, count: CountFn, max_tokens: int) -> list[tuple[str, int]]:
    """`split_into_chunks` with each chunk's token count (a short source is tokenized once)."""
    if max_tokens <= 0:
        raise SynthscaleError(f"--chunk-tokens must be positive, got {max_tokens}")
    stripped = text.strip()
    if not stripped:
        return []
    total = count(stripped)
    if total <= max_tokens:
        return [(stripped, total)]
    pieces = _pieces(text, count, max_tokens)
    wanted = math.ceil(total / max_tokens)
    target = math.ceil(total / wanted)
    chunks: list[tuple[str, int]] = []
    i = 0
    while i < len(pieces):
        start = pieces[i][0]
        j = i
        acc = 0
        while j < len(pieces):
            piece_tokens = pieces[j][2]
            if j > i and (acc + piece_tokens > max_tokens or acc >= target):
                break
            acc += piece_tokens
            j += 1
        # The tokens of a concatenation can differ a little from the sum: check and back off.
        while True:
            candidate = text[start : pieces[j - 1][1]].strip()
            tokens = count(candidate)
            if j - 1 == i or tokens <= max_tokens:
                break
            j -= 1
        if candidate:
            chunks.append((candidate, tokens))
        i = j
    return chunks
