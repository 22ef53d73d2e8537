"""The blend file (BLEND.yaml): typed, self-validating, and the one reader of it.

A blend says which tokenized datasets a training run reads and in what token
proportions, with the accounting that shows no source is repeated beyond its limit.
Training reads `data_path` (Megatron's `[w1, prefix1, w2, prefix2, ...]`) with no conversion.

Each source says what it is: its role (natural or synthetic), its family (the synthetic
recipe, `hq`, `qa`, `textbook` or a user's own; `natural` for natural text) and the generator
that wrote it. Downstream stages group runs by these fields, never by parsing names.
A blend's `identity_sha256` hashes what it means for training, not where the data lies nor
how the file was written: each active source's weight and `data_sha256` (the sha256 of its
datasets' `.bin` and `.idx` sha256s, shards in order), the tokenizer (sha256, vocabulary, EOD)
and the blend's tokens and seq_length. Moving the data, re-tokenizing byte-identical data or
regenerating the blend keeps it, and so keeps every run id made from it. (Version 4; blends of
versions 1-3 load, their `data_sha256` read from the datasets' manifests. Their identity is the
new one: run ids planned from them before version 4 differ.)

A source may be sharded (version 3): many tokenized prefixes counted as one source. It lists
its shards (prefix, tokens, manifest sha256, data sha256); its weight is split across them in
proportion to their tokens in `data_path`, and its `manifest_sha256` and `data_sha256` are the
sha256 of the shards' ones, in order (`shards_sha256`).

megatron-core's BlendedDataset asserts fewer than 32,767 datasets (prefixes) per blend; a
blend with more is refused here, with the count.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from synthscale.errors import MissingInputError, SynthscaleError
from synthscale.files import sha256_file, write_text_atomic

BLEND_KIND = "synthscale.blend"
BLEND_VERSION = 4  # 4: identity from data sha256s; 3: sharded sources; 2: role/family/generator; 1: `synthetic`
READ_VERSIONS = (1, 2, 3, 4)
MAX_DATASETS = 32_766  # megatron-core's BlendedDataset: assert len(datasets) < 32767 (an int16 index)
WEIGHT_TOLERANCE = 1e-6
ROLES = ("natural", "synthetic")
NATURAL_FAMILY = "natural"
# libyaml when PyYAML has it (the same documents, ~20x faster: a source of 1,000 shards is 1,000 entries)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def shards_sha256(manifest_sha256s) -> str:
    """A sharded source's `manifest_sha256` (or `data_sha256`): the sha256 of its shards' ones, in order."""
    return hashlib.sha256(json.dumps(list(manifest_sha256s)).encode()).hexdigest()


def dataset_data_sha256(manifest: dict, prefix: str | None = None) -> str:
    """What a tokenized dataset holds: the sha256 of its `.bin` and `.idx` sha256s (from its
    manifest; hashed from the files when an older manifest lacks them)."""
    pair = [manifest.get("bin_sha256"), manifest.get("idx_sha256")]
    if None in pair:
        where = prefix or manifest.get("prefix")
        pair = [sha256_file(f"{where}.bin"), sha256_file(f"{where}.idx")]
    return hashlib.sha256(json.dumps(pair).encode()).hexdigest()


def _manifest_data_sha256(manifest_path: str | Path) -> str:
    path = Path(manifest_path)
    if not path.is_file():
        raise MissingInputError(f"{path}: missing; a blend written before version 4 needs its datasets' manifests "
                                "for its identity (or write the blend again)")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    return dataset_data_sha256(manifest, str(path)[: -len(".manifest.json")])


@dataclass(frozen=True)
class Shard:
    """One tokenized prefix of a sharded source."""

    prefix: str
    tokens: int
    manifest_sha256: str
    data_sha256: str | None = None  # None in blends before version 4 (read from the manifest when needed)


@dataclass(frozen=True)
class BlendSource:
    name: str
    prefix: str  # a sharded source: the glob or list file it was given as (for the record)
    manifest: str | None  # None for a sharded source: each shard's is PREFIX.manifest.json
    manifest_sha256: str
    role: str  # natural | synthetic
    family: str  # hq, qa, textbook, a user's own; "natural" for natural text
    generator: str | None  # what wrote a synthetic source ("<name>@<sha256[:12]>"); None if unknown
    weight: float
    tokens_requested: int
    tokens_available: int
    epochs: float  # how many times megatron-core reads the source (its most-read shard), see data_prep.blend
    shards: tuple[Shard, ...] | None = None  # None: one dataset at `prefix`
    data_sha256: str | None = None  # None in blends before version 4 (read from the manifests when needed)

    def __post_init__(self):
        if not self.name:
            raise SynthscaleError("sources[].name: must not be empty")
        if self.role not in ROLES:
            raise SynthscaleError(f"sources[{self.name}].role: must be one of {ROLES}, got {self.role!r}")
        if not self.family or "+" in self.family:
            raise SynthscaleError(f"sources[{self.name}].family: must be a non-empty name without '+', got {self.family!r}")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise SynthscaleError(f"sources[{self.name}].weight: must be >= 0, got {self.weight}")
        if self.tokens_available <= 0:
            raise SynthscaleError(
                f"sources[{self.name}].tokens_available: must be positive, got {self.tokens_available}"
            )
        if self.shards is not None:
            self._check_shards()

    def _check_shards(self) -> None:
        where = f"sources[{self.name}].shards"
        shards = tuple(s if isinstance(s, Shard) else Shard(**s) for s in self.shards)
        object.__setattr__(self, "shards", shards)
        if not shards:
            raise SynthscaleError(f"{where}: a sharded source needs at least one shard")
        prefixes = [s.prefix for s in shards]
        if len(set(prefixes)) != len(prefixes):
            twice = sorted({p for p in prefixes if prefixes.count(p) > 1})
            raise SynthscaleError(f"{where}: {twice[0]!r} is listed twice")
        bad = [s.prefix for s in shards if not s.tokens > 0]
        if bad:
            raise SynthscaleError(f"{where}: shard {bad[0]!r} has no tokens")
        total = sum(s.tokens for s in shards)
        if total != self.tokens_available:
            raise SynthscaleError(f"{where}: shards hold {total:,} tokens, tokens_available says {self.tokens_available:,}")
        if self.manifest_sha256 != shards_sha256(s.manifest_sha256 for s in shards):
            raise SynthscaleError(f"sources[{self.name}].manifest_sha256: is not the hash of its shards' manifest sha256s")
        if self.data_sha256 is not None and all(s.data_sha256 for s in shards) and \
                self.data_sha256 != shards_sha256(s.data_sha256 for s in shards):
            raise SynthscaleError(f"sources[{self.name}].data_sha256: is not the hash of its shards' data sha256s")

    def resolved_data_sha256(self) -> str:
        """`data_sha256`, read from the datasets' manifests for a blend written before version 4."""
        if self.data_sha256 is None:
            if self.shards is None:
                value = _manifest_data_sha256(self.manifest or f"{self.prefix}.manifest.json")
            else:
                value = shards_sha256(s.data_sha256 or _manifest_data_sha256(f"{s.prefix}.manifest.json")
                                      for s in self.shards)
            object.__setattr__(self, "data_sha256", value)
        return self.data_sha256

    @property
    def prefixes(self) -> tuple[str, ...]:
        """Every prefix training reads for this source."""
        return tuple(s.prefix for s in self.shards) if self.shards is not None else (self.prefix,)

    @property
    def megatron_weights(self) -> list[tuple[float, str]]:
        """(weight, prefix) per prefix: a sharded source's weight split in proportion to its shards' tokens."""
        if self.shards is None:
            return [(self.weight, self.prefix)]
        return [(self.weight * s.tokens / self.tokens_available, s.prefix) for s in self.shards]

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.shards is None:
            data.pop("shards")  # an unsharded source is written as in version 2
        else:
            for shard in data["shards"]:
                if shard["data_sha256"] is None:
                    shard.pop("data_sha256")
        if data["data_sha256"] is None:
            data.pop("data_sha256")
        return data

    @property
    def synthetic(self) -> bool:
        return self.role == "synthetic"


@dataclass(frozen=True)
class BlendSpec:
    name: str
    tokens: int
    seq_length: int
    max_epochs: float
    tokenizer: dict
    sources: tuple[BlendSource, ...]
    provenance: dict = field(default_factory=dict)
    path: str | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.tokens <= 0:
            raise SynthscaleError(f"tokens: must be positive, got {self.tokens}")
        if self.seq_length <= 0:
            raise SynthscaleError(f"seq_length: must be positive, got {self.seq_length}")
        if not self.max_epochs > 0:
            raise SynthscaleError(f"max_epochs: must be positive, got {self.max_epochs}")
        if not self.sources:
            raise SynthscaleError("sources: a blend needs at least one source")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise SynthscaleError(f"sources: names must be unique, got {names}")
        total = sum(s.weight for s in self.sources)
        if abs(total - 1.0) > WEIGHT_TOLERANCE:
            raise SynthscaleError(f"sources[].weight: must sum to 1, they sum to {total:.9g}")
        datasets = sum(len(s.prefixes) for s in self.active_sources)
        if datasets > MAX_DATASETS:
            raise SynthscaleError(f"the blend reads {datasets:,} datasets (shards); megatron-core's BlendedDataset "
                                  f"takes at most {MAX_DATASETS:,}: merge shards (`data_prep merge`) first")
        for source in self.sources:
            if source.epochs > self.max_epochs + 1e-12:
                raise SynthscaleError(
                    f"source {source.name!r} would be read {source.epochs:.3g} times "
                    f"(max_epochs={self.max_epochs:g})"
                )

    # --- derived -------------------------------------------------------------------
    @property
    def weights(self) -> dict[str, float]:
        return {s.name: s.weight for s in self.sources}

    @property
    def synthetic_fraction(self) -> float:
        return round(sum(s.weight for s in self.sources if s.synthetic), 12)

    def _synthetic_field(self, key: str) -> str | None:
        values = sorted({getattr(s, key) for s in self.active_sources if s.synthetic and getattr(s, key)})
        return "+".join(values) if values else None

    @property
    def family(self) -> str | None:
        """The synthetic family of the blend (`+`-joined if several); None for natural text only."""
        return self._synthetic_field("family")

    @property
    def generator(self) -> str | None:
        """The generator(s) of the blend's synthetic sources; None for natural text only, or when unknown."""
        return self._synthetic_field("generator")

    @property
    def identity(self) -> dict:
        """What the blend means for training: the fields its run ids are made from (no paths,
        no manifests: the data's own hashes, shards in order)."""
        return {
            "sources": [[s.weight, s.resolved_data_sha256()] for s in self.active_sources],
            "tokenizer": {key: self.tokenizer.get(key) for key in ("sha256", "vocab_size", "eod_id")},
            "tokens": self.tokens,
            "seq_length": self.seq_length,
        }

    @property
    def identity_sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()

    @property
    def active_sources(self) -> tuple[BlendSource, ...]:
        """Sources with a positive weight: what training actually reads."""
        return tuple(s for s in self.sources if s.weight > 0)

    @property
    def data_path(self) -> list:
        """Megatron's blend list `[w1, prefix1, w2, prefix2, ...]`; every shard of a sharded source."""
        out: list = []
        for source in self.active_sources:
            for weight, prefix in source.megatron_weights:
                out += [weight, prefix]
        return out

    @property
    def sha256(self) -> str | None:
        return sha256_file(self.path) if self.path else None

    # --- file I/O ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "kind": BLEND_KIND,
            "version": BLEND_VERSION,
            "name": self.name,
            "tokens": self.tokens,
            "seq_length": self.seq_length,
            "max_epochs": self.max_epochs,
            "tokenizer": dict(self.tokenizer),
            "sources": [s.to_dict() for s in self.sources],
            "data_path": self.data_path,
            "synthetic_fraction": self.synthetic_fraction,
            "family": self.family,
            "generator": self.generator,
            "identity_sha256": self.identity_sha256,
            "provenance": self.provenance,
        }

    def save(self, path: str | Path) -> "BlendSpec":
        text = yaml.dump(_plain(self.to_dict()), Dumper=_DUMPER, sort_keys=False, width=1000)
        write_text_atomic(path, text)
        return BlendSpec.load(path)

    @classmethod
    def from_dict(cls, data: dict, path: str | None = None) -> "BlendSpec":
        where = path or "blend"
        if not isinstance(data, dict) or data.get("kind") != BLEND_KIND:
            raise SynthscaleError(f"{where}: not a synthscale blend (kind must be {BLEND_KIND!r})")
        if data.get("version") not in READ_VERSIONS:
            raise SynthscaleError(
                f"{where}: version {data.get('version')!r} is not supported (this synthscale reads {READ_VERSIONS})"
            )
        missing = [k for k in ("name", "tokens", "seq_length", "max_epochs", "tokenizer", "sources") if k not in data]
        if missing:
            raise SynthscaleError(f"{where}: missing fields {missing}")
        try:
            sources = tuple(BlendSource(**_source_fields(s)) for s in data["sources"])
            spec = cls(
                name=str(data["name"]),
                tokens=int(data["tokens"]),
                seq_length=int(data["seq_length"]),
                max_epochs=float(data["max_epochs"]),
                tokenizer=dict(data["tokenizer"]),
                sources=sources,
                provenance=data.get("provenance") or {},
                path=path,
            )
        except (TypeError, ValueError) as exc:
            raise SynthscaleError(f"{where}: {exc}") from None
        if "data_path" in data and data["data_path"] != spec.data_path:
            raise SynthscaleError(f"{where}: data_path does not match sources' weights and prefixes")
        return spec

    @classmethod
    def load(cls, path: str | Path) -> "BlendSpec":
        path = Path(path)
        if not path.is_file():
            raise MissingInputError(f"no blend file at {str(path)!r}")
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
        except yaml.YAMLError as exc:
            raise SynthscaleError(f"{path}: not valid YAML: {exc}") from None
        return cls.from_dict(data, str(path.resolve()))


def _source_fields(raw: dict) -> dict:
    """A source's fields; version-1 blends had a `synthetic` flag instead of role/family/generator."""
    if not isinstance(raw, dict):
        raise SynthscaleError(f"sources: each source must be a mapping, got {raw!r}")
    fields = dict(raw)
    if isinstance(fields.get("shards"), list):
        if not all(isinstance(s, dict) for s in fields["shards"]):
            raise SynthscaleError(f"sources[{fields.get('name')}].shards: each shard must be a mapping")
        fields["shards"] = tuple(Shard(**s) for s in fields["shards"])
    if "synthetic" in fields and "role" not in fields:
        synthetic = bool(fields.pop("synthetic"))
        fields["role"] = "synthetic" if synthetic else "natural"
        fields.setdefault("family", fields["name"] if synthetic else NATURAL_FAMILY)
        fields.setdefault("generator", None)
    return fields


def _plain(obj):
    """Make a structure YAML-safe (no numpy scalars, tuples as lists)."""
    return json.loads(json.dumps(obj))
