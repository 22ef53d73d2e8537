"""How faithful a synthetic corpus is to its sources, measured as it is written (manifest `fidelity`).

Over the outputs of a recipe's last step (every completed request, kept or dropped; failed requests
have no output and are not counted):

  pass_rate               share of outputs that pass the post-filters (become documents)
  mean_output_tokens      mean generator tokens per output
  source_word_recall      mean, over outputs, of the share of the source chunk's distinct content
                          words that appear in the output (outputs whose source has none are left out)
  source_word_recall_kept the same over the outputs kept as documents (their final text)
  degenerate_share        share of outputs that fail a Gopher repetition rule (generation/text/repetition.py),
                          measured on every output whether or not the run's filter drops them: before the filter
  degenerate_share_kept   the same over the outputs kept as documents: after the filter

Content words: lowercased alphabetic words (letters only, any script) that are not in STOP_WORDS.
A paraphrase keeps most of them; a random model keeps few.

The pipeline adds each output to counters kept in the commit log (`Tally.add`), so a resumed run
and `generation merge` sum exact totals; `summarise(totals)` turns totals into the block above.
"""

from __future__ import annotations

import re

from generation.text.repetition import GOPHER

STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between
both but by can could did do does doing down during each few for from further had has have having he her
here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not
now of off on once only or other our ours ourselves out over own same she should so some such than that the
their theirs them themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves also may might
must shall upon s t d ll m re ve
""".split())

_WORD = re.compile(r"[^\W\d_]+")
COUNTERS = ("outputs", "passed", "output_tokens", "recall_sum", "recall_n", "recall_kept_sum", "recall_kept_n",
            "degenerate", "degenerate_kept")


def content_words(text: str) -> set[str]:
    """Distinct lowercased alphabetic words of `text`, less STOP_WORDS."""
    return {w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS}


def word_recall(source_words: set[str], output: str) -> float | None:
    """Share of `source_words` found among the output's words; None when there are none."""
    if not source_words:
        return None
    found = set(_WORD.findall(output.lower()))
    return len(source_words & found) / len(source_words)


class Tally:
    """Adds one output's fidelity to a counter sink: `count(name, n)` (ShardStore.count)."""

    PREFIX = "fidelity."

    def __init__(self, count):
        self._count = count
        self._cache: tuple[str, set[str]] | None = None  # the last source's words (chapters share one)

    def _words(self, source: str) -> set[str]:
        if self._cache is None or self._cache[0] is not source:
            self._cache = (source, content_words(source))
        return self._cache[1]

    def add(self, source: str, output: str, output_tokens: int, kept_text: str | None) -> None:
        """One output of the last step: its raw text, its tokens, and its text as kept (None: dropped)."""
        words = self._words(source)
        count, p = self._count, self.PREFIX
        count(p + "outputs", 1)
        degenerate = GOPHER.check(output) is not None
        count(p + "degenerate", int(degenerate))
        count(p + "output_tokens", int(output_tokens))
        recall = word_recall(words, output)
        if recall is not None:
            count(p + "recall_sum", recall)
            count(p + "recall_n", 1)
        if kept_text is not None:
            count(p + "passed", 1)
            count(p + "degenerate_kept", int(degenerate if kept_text == output else GOPHER.check(kept_text) is not None))
            kept = recall if kept_text == output else word_recall(words, kept_text)
            if kept is not None:
                count(p + "recall_kept_sum", kept)
                count(p + "recall_kept_n", 1)


def totals_from_counters(counters: dict) -> dict:
    """The fidelity totals among a commit log's counters."""
    p = Tally.PREFIX
    return {name: counters.get(p + name, 0) for name in COUNTERS}


def summarise(totals: dict) -> dict:
    """The manifest's `fidelity` block from totals (which it keeps, so merges can add them up)."""
    t = {name: totals.get(name, 0) for name in COUNTERS}

    def ratio(a: float, b: float, digits: int = 4) -> float | None:
        return round(a / b, digits) if b else None

    return {
        "outputs": int(t["outputs"]),
        "passed": int(t["passed"]),
        "pass_rate": ratio(t["passed"], t["outputs"]),
        "mean_output_tokens": ratio(t["output_tokens"], t["outputs"], 2),
        "source_word_recall": ratio(t["recall_sum"], t["recall_n"]),
        "source_word_recall_kept": ratio(t["recall_kept_sum"], t["recall_kept_n"]),
        "degenerate_share": ratio(t["degenerate"], t["outputs"]),
        "degenerate_share_kept": ratio(t["degenerate_kept"], t["passed"]),
        "degenerate": "fails a Gopher repetition rule, Rae et al. 2021 table A1 (generation/text/repetition.py)",
        "content_words": f"lowercased alphabetic words minus {len(STOP_WORDS)} stop words (generation/text/fidelity.py)",
        "totals": {k: (round(v, 6) if isinstance(v, float) else int(v)) for k, v in t.items()},
    }


def merge_totals(blocks: list[dict]) -> dict:
    """Totals of several manifests' `fidelity` blocks (missing blocks count as nothing)."""
    out = {name: 0 for name in COUNTERS}
    for block in blocks:
        for name, value in (block or {}).get("totals", {}).items():
            if name in out:
                out[name] += value
    return out
