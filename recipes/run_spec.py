"""One training run, fully specified: shape, recipe, token budget, blend, evaluation, backend.

A run lives in `RUNS_DIR/<run_id>/` with `run.json` (this spec), the launcher, checkpoints
and finally `results.json`. The run id is deterministic: a readable prefix plus a hash of
what determines the trained model (shape, D, the blend's meaning -- `BlendSpec.identity_sha256`:
data_path, manifests' sha256, weights, tokens, seq_length; not the file's bytes, which hold a
timestamp -- the training recipe without its execution-only fields, the backend). Where and how
it runs (executor, GPU count, micro batch, checkpoint interval) and what it is evaluated on are
not part of the id, so a rerun on another cluster, or after the blends were regenerated from the
same inputs, finds and skips completed runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from data_prep.blend import megatron_read_epochs
from data_prep.blend_spec import BlendSpec
from data_prep.indexed import dataset_exists
from recipes.recipe import TrainingRecipe, TrainPlan, plan_training
from recipes.shapes import ModelShape
from synthscale.cli import parse_named_values
from synthscale.errors import MissingInputError, SynthscaleError
from synthscale.files import write_json_atomic
from synthscale.units import format_count

# Every backend trains on a TP x PP x DP layout, so every run carries one (megatron trains the tiny
# CPU shapes too, on one rank or several).
BACKENDS = ("bridge", "megatron")
RETIRED_BACKENDS = {"cpu": "the transformers CPU trainer, retired for megatron-core on CPU (--backend megatron)"}
RUN_SPEC_FILE = "run.json"
RESULTS_FILE = "results.json"


class RunRefused(SynthscaleError):
    """A run that must not start (too few steps, a source repeated too often, a mismatch)."""


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


# Recipe fields that change how a run executes, not the model it trains: not part of the id.
EXECUTION_ONLY_FIELDS = ("checkpoint_interval", "micro_batch_size")


def recipe_hash(recipe: TrainingRecipe) -> str:
    """A short hash of how a recipe trains (optimizer, schedule, peak LR, batch, sequence length,
    precision, vocabulary), without its name, seed or execution-only fields: runs that differ only
    by seed share it, and `analysis` fits runs together only when it is the same."""
    trained = {k: v for k, v in recipe.to_dict().items() if k not in (*EXECUTION_ONLY_FIELDS, "name", "seed")}
    return hashlib.sha256(json.dumps(trained, sort_keys=True).encode()).hexdigest()[:10]


def make_run_id(shape: ModelShape, tokens: int, blend_identity: str, recipe: TrainingRecipe, backend: str) -> str:
    trained = {k: v for k, v in recipe.to_dict().items() if k not in EXECUTION_ONLY_FIELDS}
    identity = {
        "shape": shape.to_dict(),
        "tokens": tokens,
        "blend_identity": blend_identity,
        "recipe": trained,
        "backend": backend,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    return f"{_safe(shape.name)}-{format_count(tokens)}-{digest}"


def _existing_prefix(name: str, prefix: str) -> str:
    path = Path(prefix).expanduser().resolve()
    if not dataset_exists(path):
        raise MissingInputError(f"--eval {name}={prefix}: no tokenized dataset {path}.bin + {path}.idx")
    return str(path)


def parse_eval_domains(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`NAME=PREFIX` pairs (PREFIX of a .bin/.idx pair) -> {name: absolute prefix}."""
    domains = parse_named_values(items, "--eval", "PREFIX", convert=_existing_prefix)
    if not domains:
        raise SynthscaleError("at least one --eval NAME=PREFIX is needed: each run is scored per evaluation domain")
    return domains


def check_blend_for_run(blend: BlendSpec, recipe: TrainingRecipe, plan: TrainPlan) -> None:
    """Refuse a run the blend cannot feed: wrong sequence length or vocabulary, or a source
    read more than max_epochs times, counted as megatron-core reads it (data_prep.blend.megatron_read_epochs:
    per shard, with its sample surplus and the extra token per sample)."""
    where = blend.path or blend.name
    if blend.seq_length != recipe.seq_length:
        raise RunRefused(
            f"blend {where}: seq_length={blend.seq_length} but recipe {recipe.name!r} trains at "
            f"seq_length={recipe.seq_length}; remake the blend with --seq-length {recipe.seq_length} "
            f"or pass --seq-length {blend.seq_length}"
        )
    vocab = int(blend.tokenizer.get("vocab_size", 0))
    if recipe.vocab_size is not None and vocab != recipe.vocab_size:
        raise RunRefused(
            f"blend {where}: tokenizer {blend.tokenizer.get('spec')!r} has vocab_size={vocab} but recipe "
            f"{recipe.name!r} expects {recipe.vocab_size} (the Llama 3 tokenizer); tokenize with it or use "
            f"another recipe"
        )
    one_dataset = sum(len(s.shards) if s.shards else 1 for s in blend.active_sources) == 1
    for source in blend.active_sources:
        shard_tokens = [s.tokens for s in source.shards] if source.shards else [source.tokens_available]
        epochs = megatron_read_epochs(shard_tokens, source.weight, plan.num_samples, blend.seq_length, one_dataset)
        if epochs > blend.max_epochs * (1 + 1e-9):
            needed = source.weight * plan.tokens
            raise RunRefused(
                f"blend {where}: D={plan.tokens} ({format_count(plan.tokens)}) x weight {source.weight:g} needs "
                f"{needed:.0f} tokens of source {source.name!r}, which has {source.tokens_available}: megatron-core "
                f"would read it {epochs:.6g} times ({plan.num_samples} samples of {blend.seq_length} + 1 tokens, "
                f"with its surplus), more than max_epochs={blend.max_epochs:g}; largest D this blend allows: about "
                f"{int(min(s.tokens_available * blend.max_epochs / s.weight for s in blend.active_sources))}"
            )


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    backend: str
    shape: ModelShape
    recipe: TrainingRecipe
    plan: TrainPlan
    blend_path: str
    blend_identity: str  # BlendSpec.identity_sha256
    eval_domains: dict[str, str]
    eval_max_tokens: int | None = None
    layout: dict | None = None  # parallel layout (recipes.parallelism.ParallelLayout.to_dict); required
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backend in RETIRED_BACKENDS:
            raise SynthscaleError(f"run {self.run_id}: backend {self.backend!r} is {RETIRED_BACKENDS[self.backend]}; "
                                  f"train it again with `recipes sweep` (a new run id)")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not self.eval_domains:
            raise SynthscaleError("eval_domains: at least one evaluation domain is needed")
        if self.eval_max_tokens is not None and self.eval_max_tokens <= 0:
            raise SynthscaleError(f"eval_max_tokens must be positive, got {self.eval_max_tokens}")
        if not self.layout:
            raise SynthscaleError(f"run {self.run_id}: the {self.backend} backend needs a parallel layout")

    @classmethod
    def create(
        cls,
        *,
        shape: ModelShape,
        recipe: TrainingRecipe,
        tokens: int,
        blend: BlendSpec,
        backend: str,
        eval_domains: dict[str, str],
        eval_max_tokens: int | None = None,
        layout: dict | None = None,
    ) -> "RunSpec":
        if blend.path is None:
            raise ValueError("blend: load it from a file (BlendSpec.load) so the run can name and hash it")
        try:
            plan = plan_training(tokens, recipe)
        except ValueError as exc:
            raise RunRefused(f"shape {shape.name}: {exc}") from None
        check_blend_for_run(blend, recipe, plan)
        identity = blend.identity_sha256
        return cls(
            run_id=make_run_id(shape, tokens, identity, recipe, backend) + f"-{_safe(blend.name)}",
            backend=backend,
            shape=shape,
            recipe=recipe,
            plan=plan,
            blend_path=str(Path(blend.path).resolve()),
            blend_identity=identity,
            eval_domains=dict(eval_domains),
            eval_max_tokens=eval_max_tokens,
            layout=layout,
        )

    def load_blend(self) -> BlendSpec:
        blend = BlendSpec.load(self.blend_path)
        if blend.identity_sha256 != self.blend_identity:
            raise RunRefused(
                f"blend {self.blend_path} changed meaning since run {self.run_id} was planned (its data, "
                f"weights, tokens or seq_length: identity {blend.identity_sha256[:12]} != "
                f"{self.blend_identity[:12]}); plan the sweep again"
            )
        return blend

    def with_eval_domains(self, domains: dict[str, str]) -> "RunSpec":
        return replace(self, eval_domains=dict(domains))

    def to_dict(self) -> dict:
        return {
            "kind": "synthscale.run",
            "version": 1,
            "run_id": self.run_id,
            "backend": self.backend,
            "shape": self.shape.to_dict(),
            "recipe": self.recipe.to_dict(),
            "plan": self.plan.to_dict(),
            "blend": {"path": self.blend_path, "identity_sha256": self.blend_identity},
            "eval_domains": self.eval_domains,
            "eval_max_tokens": self.eval_max_tokens,
            "layout": self.layout,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "RunSpec":
        if data.get("kind") != "synthscale.run":
            raise SynthscaleError("not a synthscale run spec (kind must be 'synthscale.run')")
        shape_fields = dict(data["shape"])
        shape_fields.pop("non_embedding_params", None)
        recipe_fields = dict(data["recipe"])
        recipe_fields.pop("min_lr", None)
        shape = ModelShape(**shape_fields)
        recipe = TrainingRecipe(**recipe_fields)
        plan = plan_training(int(data["plan"]["tokens_requested"]), recipe)
        return cls(
            run_id=data["run_id"],
            backend=data["backend"],
            shape=shape,
            recipe=recipe,
            plan=plan,
            blend_path=data["blend"]["path"],
            blend_identity=data["blend"]["identity_sha256"],
            eval_domains=dict(data["eval_domains"]),
            eval_max_tokens=data.get("eval_max_tokens"),
            layout=data.get("layout"),
            extra=data.get("extra") or {},
        )

    def save(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / RUN_SPEC_FILE
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> "RunSpec":
        path = Path(run_dir) / RUN_SPEC_FILE
        if not path.is_file():
            raise MissingInputError(f"no {RUN_SPEC_FILE} in {str(run_dir)!r}: not a run directory")
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (KeyError, TypeError, ValueError) as exc:
            raise SynthscaleError(f"{path}: {f'missing key {exc}' if isinstance(exc, KeyError) else exc}") from None
