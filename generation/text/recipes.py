"""Recipes: a recipe is a list of steps, and each step's prompts are templates rendered into chat
messages.

The first step reads the source chunk (`{document}`); a later step may read the output of an
earlier one by its name (`{outline}`) and may be repeated (`repeat: 10`, index `{k}`). The output
documents of a recipe are the outputs of its last step; earlier steps are intermediates (the
textbook's outline). Recipes are data: generation/text/recipe_files.py reads them from prompt-set
files (generation/text/prompt_sets/*.yaml).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

# {name} is a placeholder; {{name}} is the literal text {name}; any other brace is literal.
_PLACEHOLDER = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def placeholders(template: str) -> set[str]:
    return {m.group(2) for m in _PLACEHOLDER.finditer(template) if m.group(2)}


@dataclass(frozen=True)
class Step:
    name: str
    user: str
    max_new_tokens: int
    repeat: int | None = None  # None: once; N: N outputs with {k} = 1..N
    target: dict = field(default_factory=dict)  # {tokens: N} or {per_source_token: r, min: m}
    filters: dict = field(default_factory=dict)  # resolved (set, recipe, step merged)
    system: str | None = None
    parse: str | None = None  # "concepts": the output is parsed into a concept list (generation/synthllm/concepts.py)
    # Level 3: the prompt used instead of `user` when one document holds every concept of the
    # combination (the source's value `one_document`), so it does not ask to draw on several references.
    user_one_document: str | None = None

    def target_tokens(self, source_tokens: int) -> int | None:
        if "tokens" in self.target:
            return int(self.target["tokens"])
        if "per_source_token" in self.target:
            value = float(self.target["per_source_token"]) * source_tokens
            return int(max(value, float(self.target.get("min", 0))))
        return None


@dataclass(frozen=True)
class Recipe:
    name: str
    steps: tuple[Step, ...]
    audiences: tuple[str, ...] = ()
    description: str = ""
    sampling: dict = field(default_factory=dict)
    set_name: str = ""
    set_version: str = ""
    set_sha256: str = ""
    set_path: str = ""
    sources: str = "documents"  # one of recipe_files.SOURCES
    output: str | None = None  # the record's text from the steps' outputs, e.g. "Question: {question}..."
    diversity: bool = False  # measure the output's diversity in the manifest (generation/synthllm/diversity.py)

    @property
    def prompt_version(self) -> str:
        return f"{self.set_name}/{self.set_version}"

    @property
    def final(self) -> Step:
        return self.steps[-1]

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def audience_for(self, index: int) -> str | None:
        """The audience of the source at global input position `index`: round robin, so the
        audiences are spread evenly and the same document always gets the same one."""
        if not self.audiences:
            return None
        return self.audiences[index % len(self.audiences)]

    def fingerprint(self) -> dict:
        """What must not change between a run and its resumption."""
        return {
            "recipe": self.name,
            "prompt_version": self.prompt_version,
            "recipe_sha256": sha256_json(self.to_dict()),
        }

    def to_dict(self) -> dict:
        extra = {}  # only when set, so the recipes without them keep their hashes
        if self.sources != "documents":
            extra["sources"] = self.sources
        if self.output is not None:
            extra["output"] = self.output
        if self.diversity:
            extra["diversity"] = True
        return {
            **extra,
            "name": self.name,
            "description": self.description,
            "audiences": list(self.audiences),
            "sampling": self.sampling,
            "steps": [
                {
                    "name": s.name,
                    "user": s.user,
                    "system": s.system,
                    "max_new_tokens": s.max_new_tokens,
                    "repeat": s.repeat,
                    "target": s.target,
                    "filters": s.filters,
                    **({"parse": s.parse} if s.parse else {}),
                    **({"user_one_document": s.user_one_document} if s.user_one_document else {}),
                }
                for s in self.steps
            ],
        }


@dataclass(frozen=True)
class PromptSet:
    name: str
    version: str
    path: str
    sha256: str
    recipes: dict[str, Recipe]
    source: str = ""


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def render(template: str, values: dict[str, Any]) -> str:
    """Substitute {name} placeholders that `values` knows; {{name}} gives the literal {name};
    every other brace stays literal."""

    def repl(match: re.Match) -> str:
        if match.group(1):
            return "{" + match.group(1) + "}"
        key = match.group(2)
        if key in values:
            return str(values[key])
        return match.group(0)

    return _PLACEHOLDER.sub(repl, template)


def build_messages(step: Step, values: dict[str, Any]) -> list[dict[str, str]]:
    messages = []
    if step.system:
        messages.append({"role": "system", "content": step.system})
    user = step.user_one_document if step.user_one_document and values.get("one_document") else step.user
    messages.append({"role": "user", "content": render(user, values)})
    return messages


def merge_system_into_user(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """For chat templates that refuse a system role (Mistral-Instruct v0.1/v0.2): put the system
    prompt at the head of the first user turn instead."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], copy.deepcopy(messages[1:])
    if rest and rest[0]["role"] == "user":
        rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
        return rest
    return [{"role": "user", "content": system}] + rest
