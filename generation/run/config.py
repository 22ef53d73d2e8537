"""The settings of a `generation run`: what the user asked for, and what it resolves to.

`RunConfig` holds the command's options as given. `RunSettings.resolve()` loads the recipe and
expands the input globs, fills what the user left out from the prompt set (sampling, max new
tokens and post-filters per step) and refuses unknown step names. Its `fingerprint()` is what a
resumed run must share with the run that started the output directory; `check_run_file()`
compares it with the one recorded there (`state/TAG/run.json`) and refuses a mismatch with the
list of differences.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from synthscale.errors import MissingInputError, SynthscaleError
from synthscale.files import expand_inputs, write_json_atomic

from generation.corpus.documents import SLICING, describe_inputs, scan_slices
from generation.engine.kv_cache import PROMPT_ALLOWANCE
from generation.models.identity import generator_identity
from generation.run.store import ShardStore
from generation.synthllm.concept_sources import SamplingOptions
from generation.synthllm.graph_reader import ConceptGraph
from generation.text.filters import FilterConfig
from generation.text.recipe_files import PENALTIES, get_recipe
from generation.text.recipes import Recipe


class ConfigMismatchError(SynthscaleError):
    """The output directory holds a run started with other settings."""


@dataclass
class RunConfig:
    recipe: str
    inputs: list[str]
    output: str
    model: str
    backend: str = "vllm"  # vllm | openai
    prompt_sets: list[str] = field(default_factory=list)
    tokenizer: str | None = None
    generator_name: str | None = None  # recorded as `generator`; default: the model
    seed: int = 0
    temperature: float | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None  # default: the recipe's (none in the paper's recipes)
    frequency_penalty: float | None = None
    max_new_tokens: dict[str, int] = field(default_factory=dict)  # step name or "*" -> tokens
    chunk_tokens: int = 2000
    shard: tuple[int, int] = (0, 1)
    limit: int | None = None  # at most this many sources of this shard (a trial run)
    filters: dict = field(default_factory=dict)  # overrides of the prompt set's filters, all steps
    text_key: str = "text"
    id_key: str = "id"
    # vLLM engine
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    max_model_len: int | None = None
    engine_kwargs: dict = field(default_factory=dict)
    batch_invariant: bool = False  # VLLM_BATCH_INVARIANT=1 (vLLM on GPU only)
    # OpenAI-compatible server
    base_url: str | None = None
    api_key: str | None = None
    concurrency: int = 64
    timeout: float = 600.0
    retries: int = 5
    backoff: float = 1.0
    # pipeline
    max_inflight: int | None = None
    commit_every: int = 1000
    commit_seconds: float = 30.0
    docs_per_file: int = 100_000
    # SynthLLM levels 2 and 3: a concept graph instead of --input (generation/synthllm/concept_sources.py)
    graph: str | None = None
    combinations: int | None = None  # level 3: combinations of the whole job
    subsets_per_document: int = 1  # level 2
    combination_size: tuple[int, int] = (2, 4)
    reference_chars: int = 1500
    retry_failed: bool = False
    repair: bool = False  # keep the intact lines of damaged output files, generate the lost keys again
    progress: bool | None = None  # None: when stderr is a terminal
    quiet: bool = False


def jsonable_config(config: RunConfig) -> dict:
    """The config as recorded in the manifest (the API key masked)."""
    data = asdict(config)
    if data.get("api_key"):
        data["api_key"] = "***"
    data["shard"] = list(config.shard)
    data["combination_size"] = list(config.combination_size)
    return data


@dataclass
class RunSettings:
    """A `RunConfig` resolved against its recipe: the settings the run actually uses."""

    config: RunConfig
    recipe: Recipe
    paths: list[Path]  # the input files the globs expand to
    shard: tuple[int, int]
    output: Path
    sampling: dict  # temperature, top_p, and repetition_penalty / frequency_penalty when set
    max_new: dict[str, int]  # step name -> max new tokens
    filters: dict[str, FilterConfig]  # step name -> post-filters
    generator: str  # recorded as `generator` in every document: "<name>@<sha256[:12]>" or the name
    generator_info: dict = field(default_factory=dict)  # {id, name, path, sha256, sha256_from}
    graph_sampling: dict | None = None  # levels 2 and 3: SamplingOptions.to_dict()

    @classmethod
    def resolve(cls, config: RunConfig) -> "RunSettings":
        recipe = get_recipe(config.recipe, config.prompt_sets)
        paths, graph_sampling = _source_paths(config, recipe)
        sampling = {
            "temperature": float(config.temperature if config.temperature is not None else recipe.sampling["temperature"]),
            "top_p": float(config.top_p if config.top_p is not None else recipe.sampling["top_p"]),
        }
        for name in PENALTIES:  # recorded (and sent) only when set: runs without them keep their fingerprints
            value = getattr(config, name) if getattr(config, name) is not None else recipe.sampling.get(name)
            if value is not None:
                sampling[name] = float(value)
        max_new = {}
        for step in recipe.steps:
            max_new[step.name] = int(config.max_new_tokens.get(step.name, config.max_new_tokens.get("*", step.max_new_tokens)))
        unknown = set(config.max_new_tokens) - {"*"} - {s.name for s in recipe.steps}
        if unknown:
            raise SynthscaleError(f"--max-new-tokens: recipe {recipe.name!r} has no step {sorted(unknown)} "
                             f"(steps: {', '.join(s.name for s in recipe.steps)})")
        filters = {s.name: FilterConfig.from_dict(s.filters, config.filters) for s in recipe.steps}
        identity = generator_identity(config.model, config.generator_name)  # hashes a local model once
        return cls(config=config, recipe=recipe, paths=paths, shard=tuple(config.shard), output=Path(config.output),
                   sampling=sampling, max_new=max_new, filters=filters, generator=identity["id"],
                   generator_info=identity, graph_sampling=graph_sampling)

    def context_tokens(self) -> int:
        """An upper bound on prompt + new tokens of one request: a whole chunk, the prompts and chat
        template around it, and every step's new tokens (a later step's prompt holds earlier outputs)."""
        return int(self.config.chunk_tokens + PROMPT_ALLOWANCE + sum(self.max_new.values()))

    def fingerprint(self, inputs: list[dict]) -> dict:
        """What a resumed run must share with the run that started the output directory."""
        c = self.config
        return {
            **self.recipe.fingerprint(),
            "model": c.model,
            "generator_sha256": self.generator_info.get("sha256"),
            "seed": c.seed,
            "sampling": self.sampling,
            "max_new_tokens": self.max_new,
            "chunk_tokens": c.chunk_tokens,
            "filters": {name: f.to_dict() for name, f in self.filters.items()},
            "shard": list(self.shard),
            "text_key": c.text_key,
            "id_key": c.id_key,
            "inputs": [{"path": d["path"], "sha256": d["sha256"]} for d in inputs],  # of this shard's slices
            **({"input_slicing": SLICING} if self.recipe.sources == "documents" else {}),
            **({"graph_sampling": self.graph_sampling} if self.graph_sampling is not None else {}),
        }

    def sampling_options(self):
        c = self.config
        return SamplingOptions(combinations=c.combinations, subsets_per_document=c.subsets_per_document,
                               sizes=tuple(c.combination_size), reference_chars=c.reference_chars)


def _source_paths(config: RunConfig, recipe: Recipe) -> tuple[list[Path], dict | None]:
    """The files a run reads: the --input documents, or (levels 2 and 3) the --graph's files."""
    if recipe.sources == "documents":
        if config.graph:
            raise SynthscaleError(f"--graph: recipe {recipe.name!r} reads documents (--input), not a concept graph")
        if not config.inputs:
            raise SynthscaleError(f"recipe {recipe.name!r} needs --input FILES")
        return expand_inputs(config.inputs), None
    if not config.graph:
        raise SynthscaleError(f"recipe {recipe.name!r} samples a concept graph: pass --graph DIR "
                         "(the output of `generation concept-graph`)")
    if config.inputs:
        raise SynthscaleError(f"recipe {recipe.name!r} reads --graph {config.graph}, not --input")
    paths = ConceptGraph.files(config.graph)
    for path in paths:
        if not path.is_file():
            raise MissingInputError(f"--graph {config.graph}: no {path.name} (build it with `generation concept-graph`)")
    if recipe.sources == "concept_walk" and (config.combinations is None or config.combinations < 1):
        raise SynthscaleError(f"recipe {recipe.name!r} (level 3) needs --combinations N, N >= 1: the combinations of the "
                         "whole job, across its shards")
    if config.reference_chars < 100:
        raise SynthscaleError(f"--reference-chars must be at least 100, got {config.reference_chars}")
    sampling = {"sources": recipe.sources, "combinations": config.combinations,
                "subsets_per_document": config.subsets_per_document,
                "combination_size": list(config.combination_size), "reference_chars": config.reference_chars}
    return paths, sampling


def check_run_file(store: ShardStore, settings: RunSettings) -> tuple[dict, list[dict], set[str] | None]:
    """Compare the settings with those this worker's output was started with (refuse a
    mismatch), then record them. Returns the fingerprint, the inputs (with the sha256 of what
    this shard reads of them) and, for documents, the ids to check for duplicates
    (generation/corpus/documents.py: one pass over the shard's slice)."""
    previous = None
    if store.run_path.exists():
        previous = json.loads(store.run_path.read_text(encoding="utf-8"))
    candidates = None
    if settings.recipe.sources == "documents":
        scan = scan_slices(settings.paths, settings.shard, settings.config.id_key)
        inputs, candidates = scan.inputs, scan.candidates
    else:
        cache = {d["path"]: d for d in (previous or {}).get("inputs", [])}
        inputs = describe_inputs(settings.paths, cache)
    fingerprint = settings.fingerprint(inputs)
    if previous is not None:
        old = previous.get("fingerprint", {})
        diffs = [k for k in sorted(set(old) | set(fingerprint)) if old.get(k) != fingerprint.get(k)]
        if diffs:
            lines = [f"  {k}: was {json.dumps(old.get(k))[:200]}, now {json.dumps(fingerprint.get(k))[:200]}" for k in diffs]
            raise ConfigMismatchError(
                f"{settings.output} holds a run ({store.tag}) started with other settings; rerun with the "
                "same ones to resume, or use another --output:\n" + "\n".join(lines)
            )
    write_json_atomic(store.run_path, {"fingerprint": fingerprint, "inputs": inputs,
                                       "started_at": (previous or {}).get("started_at") or time.time()})
    return fingerprint, inputs, candidates
