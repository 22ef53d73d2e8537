"""Prompt-set files: the recipes as data (a versioned YAML or JSON file), read and checked.

A prompt set (kind `synthscale.prompt_set`) names recipes (generation/text/recipes.py); the
built-in sets are generation/text/prompt_sets/paper.yaml and synthllm.yaml, and `--prompts FILE`
adds the user's (shadowing a built-in recipe of the same name). Every error names the file and
the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Collection, Iterable

from synthscale.errors import SynthscaleError

from generation.text.recipes import PromptSet, Recipe, Step, placeholders

PROMPT_SET_KIND = "synthscale.prompt_set"
BUILTIN_SETS = ("paper", "synthllm")
# Where a recipe's sources come from: the input documents, or a concept graph (SynthLLM levels 2, 3).
SOURCES = ("documents", "concept_subsets", "concept_walk")
PARSERS = ("concepts",)

FILTER_KEYS = {
    "min_tokens": (int, float),
    "max_target_factor": (int, float, type(None)),
    "drop_truncated": (bool,),
    "strip_preamble": (bool,),
    "drop_refusals": (bool,),
    "drop_repetitive": (bool,),
    "preamble_patterns": (list,),
    "refusal_patterns": (list,),
}
SAMPLING_KEYS = {"temperature": (int, float), "top_p": (int, float), "repetition_penalty": (int, float),
                 "frequency_penalty": (int, float)}
# Penalties against loops (vLLM's SamplingParams; the OpenAI API has frequency_penalty): a recipe
# sets them where it wants them, and every record's `sampling` says what was used.
PENALTIES = {"repetition_penalty": (0.0, 2.0, True), "frequency_penalty": (-2.0, 2.0, False)}  # (lo, hi, lo open)


class PromptSetError(SynthscaleError):
    """A prompt set file that cannot be used; the message names the file and the field."""


def _check_keys(where: str, keys: Iterable, known: Collection) -> None:
    """Refuse the first of `keys` that is not one of `known`, naming where it is and what is known."""
    for key in keys:
        if key not in known:
            raise PromptSetError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")


def _check_types(where: str, mapping: dict, allowed: dict) -> None:
    for key, value in mapping.items():
        _check_keys(where, (key,), allowed)
        if not isinstance(value, allowed[key]) or (isinstance(value, bool) and bool not in allowed[key]):
            raise PromptSetError(f"{where}.{key}: wrong type {type(value).__name__}")


def _compile_patterns(where: str, patterns: list) -> None:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            raise PromptSetError(f"{where}: bad regular expression {pattern!r}: {exc}") from None


def parse_prompt_set(data: Any, path: str, sha256: str) -> PromptSet:
    """Validate a loaded YAML/JSON document and build the PromptSet. Errors name the field."""
    where = str(path)
    if not isinstance(data, dict):
        raise PromptSetError(f"{where}: a prompt set is a mapping, got {type(data).__name__}")
    if data.get("kind", PROMPT_SET_KIND) != PROMPT_SET_KIND:
        raise PromptSetError(f"{where}: kind must be {PROMPT_SET_KIND!r}, got {data.get('kind')!r}")
    for key in ("name", "version", "recipes"):
        if key not in data:
            raise PromptSetError(f"{where}: missing required key {key!r}")
    known = {"kind", "format", "name", "version", "source", "system", "sampling", "filters", "recipes", "description"}
    _check_keys(where, data, known)
    name, version = str(data["name"]), str(data["version"])
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise PromptSetError(f"{where}: name {name!r} may use letters, digits, '.', '_' and '-' only")
    set_system = data.get("system")
    set_sampling = dict(data.get("sampling") or {})
    _check_types(f"{where}: sampling", set_sampling, SAMPLING_KEYS)
    set_filters = dict(data.get("filters") or {})
    _check_types(f"{where}: filters", set_filters, FILTER_KEYS)
    recipes_data = data["recipes"]
    if not isinstance(recipes_data, dict) or not recipes_data:
        raise PromptSetError(f"{where}: recipes must be a non-empty mapping of name -> recipe")

    recipes: dict[str, Recipe] = {}
    for rname, rdata in recipes_data.items():
        rwhere = f"{where}: recipes.{rname}"
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", str(rname)):
            raise PromptSetError(f"{rwhere}: a recipe name uses letters, digits, '_' and '-' only")
        if not isinstance(rdata, dict):
            raise PromptSetError(f"{rwhere}: a recipe is a mapping with 'steps'")
        rknown = {"description", "audiences", "steps", "sampling", "filters", "system", "sources", "output",
                  "diversity"}
        _check_keys(rwhere, rdata, rknown)
        sources = rdata.get("sources", "documents")
        if sources not in SOURCES:
            raise PromptSetError(f"{rwhere}.sources: one of {', '.join(SOURCES)}, got {sources!r}")
        diversity = rdata.get("diversity", False)
        if not isinstance(diversity, bool):
            raise PromptSetError(f"{rwhere}.diversity: true or false, got {diversity!r}")
        audiences = rdata.get("audiences") or []
        if not isinstance(audiences, list) or not all(isinstance(a, str) and a for a in audiences):
            raise PromptSetError(f"{rwhere}.audiences: a list of non-empty strings")
        sampling = dict(set_sampling)
        rsampling = dict(rdata.get("sampling") or {})
        _check_types(f"{rwhere}.sampling", rsampling, SAMPLING_KEYS)
        sampling.update(rsampling)
        for penalty, (lo, hi, open_lo) in PENALTIES.items():
            value = sampling.get(penalty)
            if value is not None and not ((lo < value if open_lo else lo <= value) and value <= hi):
                raise PromptSetError(f"{rwhere}.sampling.{penalty}: must be in {'(' if open_lo else '['}{lo:g}, "
                                     f"{hi:g}], got {value!r}")
        sampling.setdefault("temperature", 0.7)
        sampling.setdefault("top_p", 0.95)
        rfilters = dict(rdata.get("filters") or {})
        _check_types(f"{rwhere}.filters", rfilters, FILTER_KEYS)
        steps_data = rdata.get("steps")
        if not isinstance(steps_data, list) or not steps_data:
            raise PromptSetError(f"{rwhere}.steps: a non-empty list of steps")
        steps: list[Step] = []
        for index, sdata in enumerate(steps_data):
            swhere = f"{rwhere}.steps[{index}]"
            if not isinstance(sdata, dict):
                raise PromptSetError(f"{swhere}: a step is a mapping with 'name' and 'user'")
            sknown = {"name", "user", "system", "max_new_tokens", "repeat", "target", "filters", "parse",
                      "user_one_document"}
            _check_keys(swhere, sdata, sknown)
            sname = sdata.get("name")
            if not isinstance(sname, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", sname):
                raise PromptSetError(f"{swhere}.name: an identifier (it becomes the placeholder {{NAME}})")
            reserved = {"document", "audience", "k"} | ({"concepts"} if sources != "documents" else set())
            if any(s.name == sname for s in steps) or sname in reserved:
                raise PromptSetError(f"{swhere}.name: {sname!r} is already used")
            user = sdata.get("user")
            if not isinstance(user, str) or not user.strip():
                raise PromptSetError(f"{swhere}.user: the prompt text is required")
            max_new = sdata.get("max_new_tokens", 2048)
            if not isinstance(max_new, int) or isinstance(max_new, bool) or max_new <= 0:
                raise PromptSetError(f"{swhere}.max_new_tokens: a positive integer, got {max_new!r}")
            parse = sdata.get("parse")
            if parse is not None and parse not in PARSERS:
                raise PromptSetError(f"{swhere}.parse: one of {', '.join(PARSERS)}, got {parse!r}")
            repeat = sdata.get("repeat")
            if repeat is not None:
                if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat <= 0:
                    raise PromptSetError(f"{swhere}.repeat: a positive integer, got {repeat!r}")
                if index != len(steps_data) - 1:
                    raise PromptSetError(f"{swhere}.repeat: only the last step may repeat")
            target = dict(sdata.get("target") or {})
            for key, value in target.items():
                if key not in ("tokens", "per_source_token", "min"):
                    raise PromptSetError(f"{swhere}.target: unknown key {key!r} (tokens, per_source_token, min)")
                if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                    raise PromptSetError(f"{swhere}.target.{key}: a non-negative number")
            sfilters = dict(sdata.get("filters") or {})
            _check_types(f"{swhere}.filters", sfilters, FILTER_KEYS)
            filters = {**set_filters, **rfilters, **sfilters}
            for key in ("preamble_patterns", "refusal_patterns"):
                _compile_patterns(f"{swhere}.filters.{key}", filters.get(key, []))
            allowed = {"document"} | {s.name for s in steps}
            if audiences:
                allowed.add("audience")
            if repeat is not None:
                allowed.add("k")
            if sources != "documents":
                allowed.add("concepts")
            one_document = sdata.get("user_one_document")
            if one_document is not None and (not isinstance(one_document, str) or not one_document.strip()
                                             or sources != "concept_walk"):
                raise PromptSetError(f"{swhere}.user_one_document: a prompt text, in a recipe with sources: concept_walk")
            used = placeholders(user) | placeholders(one_document or "")
            unknown = used - allowed
            if unknown:
                raise PromptSetError(
                    f"{swhere}.user: unknown placeholder(s) {', '.join('{' + u + '}' for u in sorted(unknown))}"
                    f" (this step may use {', '.join('{' + a + '}' for a in sorted(allowed))})"
                )
            system = sdata.get("system", rdata.get("system", set_system))
            if system is not None and not isinstance(system, str):
                raise PromptSetError(f"{swhere}.system: a string or null")
            steps.append(
                Step(
                    name=sname,
                    user=user,
                    max_new_tokens=max_new,
                    repeat=repeat,
                    target=target,
                    filters=filters,
                    system=system,
                    parse=parse,
                    user_one_document=one_document,
                )
            )
        if not any("document" in placeholders(s.user) for s in steps):
            raise PromptSetError(f"{rwhere}: no step uses {{document}}: the source would be ignored")
        output = rdata.get("output")
        if output is not None:
            names = {s.name for s in steps} | {"document"} | ({"concepts"} if sources != "documents" else set())
            bad = placeholders(output) - names if isinstance(output, str) else None
            if not isinstance(output, str) or bad:
                raise PromptSetError(f"{rwhere}.output: a template of {', '.join('{' + n + '}' for n in sorted(names))}"
                                     + (f"; unknown {', '.join(sorted(bad))}" if bad else f", got {output!r}"))
        recipes[str(rname)] = Recipe(
            name=str(rname),
            steps=tuple(steps),
            audiences=tuple(audiences),
            description=str(rdata.get("description") or "").strip(),
            sampling=sampling,
            set_name=name,
            set_version=version,
            set_sha256=sha256,
            set_path=str(path),
            sources=sources,
            output=output,
            diversity=diversity,
        )
    return PromptSet(name=name, version=version, path=str(path), sha256=sha256, recipes=recipes,
                     source=str(data.get("source") or ""))


def load_prompt_set(path_or_name: str | Path) -> PromptSet:
    """Load a prompt set by file path (.yaml, .yml or .json) or by built-in name ('paper')."""
    candidate = Path(path_or_name)
    if str(path_or_name) in BUILTIN_SETS and not candidate.exists():
        ref = resources.files("generation.text").joinpath("prompt_sets", f"{path_or_name}.yaml")
        text = ref.read_text(encoding="utf-8")
        where = f"builtin:{path_or_name}"
    else:
        if not candidate.is_file():
            raise PromptSetError(f"prompt set {str(path_or_name)!r}: no such file (built-in sets: {', '.join(BUILTIN_SETS)})")
        text = candidate.read_text(encoding="utf-8")
        where = str(candidate)
    sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if where.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PromptSetError(f"{where}: not valid JSON: {exc}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PromptSetError(f"{where}: not valid YAML: {exc}") from None
    return parse_prompt_set(data, where, sha256)


def load_recipes(extra_sets: list[str] | tuple[str, ...] = ()) -> dict[str, Recipe]:
    """All recipes: the user's sets first (in order), then the built-in ones they do not shadow."""
    recipes: dict[str, Recipe] = {}
    for spec in list(extra_sets) + list(BUILTIN_SETS):
        for name, recipe in load_prompt_set(spec).recipes.items():
            recipes.setdefault(name, recipe)
    return recipes


def get_recipe(name: str, extra_sets: list[str] | tuple[str, ...] = ()) -> Recipe:
    recipes = load_recipes(extra_sets)
    if name not in recipes:
        raise PromptSetError(f"unknown recipe {name!r}; available: {', '.join(sorted(recipes))}")
    return recipes[name]


