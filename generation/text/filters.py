"""Post-filters on generated text: strip a bare preamble, drop refusals, too short, far too
long for the step's target, outputs cut off at the token limit, and repetitive outputs (the
Gopher repetition rules, generation/text/repetition.py). Each drop has a reason, and the manifest
counts them; a repetitive output's reason names the rule it failed (`repetitive.top_3gram`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from generation.text.repetition import GOPHER

DEFAULT_FILTERS = {
    "min_tokens": 50,
    "max_target_factor": 3.0,
    "drop_truncated": True,
    "strip_preamble": True,
    "drop_refusals": True,
    "drop_repetitive": True,
    "preamble_patterns": [],
    "refusal_patterns": [],
}

# Reasons a document is dropped (manifest `filters.dropped`) and ways it is changed (`modified`).
REASONS = ("empty", "refusal", "bare_preamble", "truncated", "too_short", "too_long", "repetitive")
REPETITIVE = "repetitive"  # dropped as `repetitive.RULE`, RULE one of generation.text.repetition.RULES


@dataclass
class FilterConfig:
    min_tokens: int = 50
    max_target_factor: float | None = 3.0
    drop_truncated: bool = True
    strip_preamble: bool = True
    drop_refusals: bool = True
    drop_repetitive: bool = True
    preamble_patterns: list[str] = field(default_factory=list)
    refusal_patterns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        flags = re.IGNORECASE
        self._preambles = [re.compile(p, flags) for p in self.preamble_patterns]
        self._refusals = [re.compile(p, flags) for p in self.refusal_patterns]

    @classmethod
    def from_dict(cls, data: dict, overrides: dict | None = None) -> "FilterConfig":
        merged = {**DEFAULT_FILTERS, **data, **{k: v for k, v in (overrides or {}).items() if v is not None}}
        return cls(
            min_tokens=int(merged["min_tokens"]),
            max_target_factor=None if merged["max_target_factor"] is None else float(merged["max_target_factor"]),
            drop_truncated=bool(merged["drop_truncated"]),
            strip_preamble=bool(merged["strip_preamble"]),
            drop_refusals=bool(merged["drop_refusals"]),
            drop_repetitive=bool(merged["drop_repetitive"]),
            preamble_patterns=list(merged["preamble_patterns"]),
            refusal_patterns=list(merged["refusal_patterns"]),
        )

    def to_dict(self) -> dict:
        return {
            "min_tokens": self.min_tokens,
            "max_target_factor": self.max_target_factor,
            "drop_truncated": self.drop_truncated,
            "strip_preamble": self.strip_preamble,
            "drop_refusals": self.drop_refusals,
            "drop_repetitive": self.drop_repetitive,
            "preamble_patterns": list(self.preamble_patterns),
            "refusal_patterns": list(self.refusal_patterns),
        }


@dataclass
class FilterResult:
    text: str
    tokens: int
    dropped: str | None = None  # one of REASONS (`repetitive.RULE` for repetitive), or None when kept
    modified: list[str] = field(default_factory=list)  # e.g. ["preamble_stripped"]


def strip_preamble(text: str, config: FilterConfig) -> tuple[str, bool]:
    """Remove leading "Sure, here is ...:" style lines (repeatedly). Returns (text, changed)."""
    changed = False
    while True:
        for pattern in config._preambles:
            match = pattern.match(text)
            if match and match.end() > 0:
                text = text[match.end():].lstrip()
                changed = True
                break
        else:
            return text, changed


def is_bare_preamble(text: str, config: FilterConfig) -> bool:
    """The whole answer is a preamble line without content ("Sure, here is the article:")."""
    probe = text.strip() + "\n"
    for pattern in config._preambles:
        match = pattern.match(probe)
        if match and not probe[match.end():].strip():
            return True
    return False


def apply_filters(
    text: str,
    output_tokens: int,
    finish_reason: str | None,
    target_tokens: int | None,
    config: FilterConfig,
    count_tokens: Callable[[str], int],
) -> FilterResult:
    """Run the filters in order: preamble, refusal, empty, truncated, too short, too long, repetitive."""
    result = FilterResult(text=text.strip(), tokens=output_tokens)
    if config.strip_preamble and result.text:
        if is_bare_preamble(result.text, config):
            result.dropped = "bare_preamble"
            return result
        stripped, changed = strip_preamble(result.text, config)
        if changed:
            result.text = stripped
            result.tokens = count_tokens(stripped) if stripped else 0
            result.modified.append("preamble_stripped")
            if not stripped:
                result.dropped = "bare_preamble"
                return result
    if config.drop_refusals and any(p.match(result.text) for p in config._refusals):
        result.dropped = "refusal"
        return result
    if not result.text:
        result.dropped = "empty"
        return result
    if config.drop_truncated and finish_reason == "length":
        result.dropped = "truncated"
        return result
    if result.tokens < config.min_tokens:
        result.dropped = "too_short"
        return result
    if (
        config.max_target_factor  # None or 0: off
        and target_tokens
        and result.tokens > config.max_target_factor * target_tokens
    ):
        result.dropped = "too_long"
        return result
    if config.drop_repetitive:
        rule = GOPHER.check(result.text)
        if rule is not None:
            result.dropped = f"{REPETITIVE}.{rule}"
    return result
