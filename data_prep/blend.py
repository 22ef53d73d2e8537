"""`data_prep blend` and `data_prep grid`: token-weighted mixtures of tokenized datasets.

Weights are token fractions (the paper's "33% synthetic" is a third of training tokens).
Each source's accounting (tokens requested, available) comes from its manifest (a sharded
source's: its shards' together). Its `epochs` is what megatron-core will really read
(`megatron_read_epochs`): each shard is a GPTDataset over its training split (the whole shard:
the blend is read with split 100,0,0), asked for ceil(ceil(samples x shard weight) x 1.005)
samples (megatron's mid-level surplus; exactly the blend's samples when the blend is one
dataset), each of seq_length + 1 tokens, consecutive samples sharing one token. A source whose
most-read shard would be read more than `max_epochs` times is refused: at exactly its size a
source starts a second epoch. Sources are resolved by `data_prep.sources`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from data_prep.blend_spec import (NATURAL_FAMILY, WEIGHT_TOLERANCE, BlendSource, BlendSpec, Shard, dataset_data_sha256,
                                  shards_sha256)
from data_prep.sources import (  # noqa: F401  (open_tokenized, TokenizedDataset: re-exported)
    DataSource,
    TokenizedDataset,
    as_source,
    check_same_tokenizer,
    open_source,
    open_tokenized,
)
from synthscale.cli import parse_named_values
from synthscale.errors import SynthscaleError
from synthscale.files import sha256_file
from synthscale.provenance import provenance

# The paper's grid of synthetic shares, in percent of training tokens.
PAPER_RATIOS_PCT = (0, 0.5, 1, 2, 5, 10, 15, 20, 33, 50, 67, 100)
MID_LEVEL_SURPLUS = 0.005  # megatron-core's BlendedMegatronDatasetConfig.mid_level_dataset_surplus default
EXTRA_TOKEN = 1  # GPTDatasetConfig.add_extra_token_to_sequence: a sample reads seq_length + 1 tokens


def megatron_read_epochs(shard_tokens: list[int], weight: float, samples: int, seq_length: int,
                         only_dataset: bool = False) -> float:
    """How many times megatron-core reads a source of shards with `shard_tokens` and blend weight
    `weight`, for a blend of `samples` samples: the most-read shard's tokens read over its tokens.

    Mirrors megatron-core 0.16's BlendedMegatronDatasetBuilder (`_get_size_per_split_per_dataset`
    with the surplus) and GPTDataset (`_get_num_epochs`: samples x seq_length + 1 tokens); a
    test checks it against the epochs megatron-core builds."""
    if weight <= 0:
        return 0.0
    total = sum(shard_tokens)
    worst = 0.0
    for tokens in shard_tokens:
        if only_dataset:
            needed = samples
        else:
            needed = math.ceil(math.ceil(samples * weight * tokens / total) * (1 + MID_LEVEL_SURPLUS))
        worst = max(worst, (needed * seq_length + EXTRA_TOKEN) / tokens)
    return worst


@dataclass(frozen=True)
class SourceIdentity:
    """What a source is, as a blend records it: its role, family and generator."""

    role: str
    family: str
    generator: str | None


def source_identity(
    dataset: TokenizedDataset | DataSource,
    synthetic: set[str] | frozenset[str] = frozenset(),
    natural: set[str] | frozenset[str] = frozenset(),
    families: dict[str, str] | None = None,
    generators: dict[str, str] | None = None,
) -> SourceIdentity:
    """Role, family and generator of a source: from its manifest, unless the user sets them.

    A dataset whose documents name a generator (what `generation run` writes) is synthetic,
    its family the documents' recipe (a sharded source: its shards' origins together);
    `--synthetic` / `--natural` override the role, `--family` / `--generator` the rest.
    """
    name = dataset.name
    made_by = dataset.origin("generator")
    role = source_role(dataset, synthetic, natural)
    family = (families or {}).get(name)
    generator = (generators or {}).get(name)
    if role == "natural":
        return SourceIdentity(role, family or NATURAL_FAMILY, generator)
    recipes = dataset.origin("recipe")
    if family is None:
        # one family per source: several recipes in one corpus are one family named after the source
        family = recipes[0] if len(recipes) == 1 else name
    if generator is None and made_by:
        generator = "+".join(made_by)
    return SourceIdentity(role, family, generator)


def _weight(name: str, raw: str) -> float:
    try:
        weight = float(raw)
    except ValueError:
        raise SynthscaleError(f"--weights: weight of {name!r} is not a number: {raw!r}") from None
    if not math.isfinite(weight) or weight < 0:
        raise SynthscaleError(f"--weights: weight of {name!r} must be a non-negative number, got {raw!r}")
    return weight


def parse_weights(values: list[str] | tuple[str, ...]) -> dict[str, float]:
    """'a=0.67,b=0.33' (or several such strings) -> {'a': 0.67, 'b': 0.33}."""
    weights = parse_named_values(values, "--weights", "W", convert=_weight, split_commas=True)
    if not weights:
        raise SynthscaleError("--weights: give at least one NAME=W")
    return weights


def source_role(dataset: TokenizedDataset | DataSource, synthetic=frozenset(), natural=frozenset()) -> str:
    """'synthetic' or 'natural': as `--synthetic NAME` / `--natural NAME` say, else from the manifest
    (a dataset whose documents name a generator is synthetic)."""
    if dataset.name in synthetic:
        return "synthetic"
    if dataset.name in natural:
        return "natural"
    return "synthetic" if dataset.origin("generator") else "natural"


def check_names(names: list[str], **named) -> None:
    """Source names are unique; every name an option gives (`synthetic={...}`) is a source's; roles
    do not clash. Errors name the option (`--synthetic`) and the names."""
    if len(set(names)) != len(names):
        raise SynthscaleError(f"--data: names must be unique, got {names}")
    for key, given in named.items():
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise SynthscaleError(f"--{key}: no --data for {', '.join(map(repr, unknown))} (data given: {names})")
    both = sorted(set(named.get("synthetic", ())) & set(named.get("natural", ())))
    if both:
        raise SynthscaleError(f"--synthetic and --natural both name {', '.join(map(repr, both))}")


def split_roles(datasets: list[TokenizedDataset | DataSource], synthetic=frozenset(), natural=frozenset(),
                families: dict[str, str] | None = None,
                generators: dict[str, str] | None = None) -> tuple[DataSource, list[DataSource]]:
    """`data_prep grid`'s sources: (the one natural source, the synthetic ones), roles by `source_role`."""
    datasets = [as_source(d) for d in datasets]
    check_names([d.name for d in datasets], synthetic=synthetic, natural=natural, family=families or {},
                generator=generators or {})
    roles = {d.name: source_role(d, synthetic, natural) for d in datasets}
    naturals = [d for d in datasets if roles[d.name] == "natural"]
    synthetics = [d for d in datasets if roles[d.name] == "synthetic"]
    if len(naturals) != 1:
        raise SynthscaleError(
            f"grid: needs exactly one natural source, got {[d.name for d in naturals]} "
            "(mark sources with --natural NAME / --synthetic NAME; without a mark, a source is synthetic "
            "when its documents name a generator)")
    if not synthetics:
        raise SynthscaleError(f"grid: needs at least one synthetic source (data given: {list(roles)}); "
                              "mark one with --synthetic NAME")
    return naturals[0], synthetics


def make_blend(
    name: str,
    datasets: list[TokenizedDataset | DataSource],
    weights: dict[str, float],
    tokens: int,
    seq_length: int,
    synthetic: set[str] | frozenset[str] = frozenset(),
    max_epochs: float = 1.0,
    normalize: bool = False,
    natural: set[str] | frozenset[str] = frozenset(),
    families: dict[str, str] | None = None,
    generators: dict[str, str] | None = None,
) -> BlendSpec:
    """Validate weights against the datasets, account tokens per source, build the spec.

    Each source's role, family and generator come from `source_identity`. A sharded source is
    accounted as a whole; its shards are listed in the spec.
    """
    datasets = [as_source(d) for d in datasets]
    names = [d.name for d in datasets]
    check_names(names, weights=weights, synthetic=synthetic, natural=natural, family=families or {},
                generator=generators or {})
    unweighted = sorted(set(names) - set(weights))
    if unweighted:
        raise SynthscaleError(f"--weights: no weight for data {', '.join(map(repr, unweighted))}")
    total = sum(weights.values())
    if total <= 0:
        raise SynthscaleError("--weights: at least one weight must be positive")
    if not normalize and abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise SynthscaleError(f"--weights: weights sum to {total:.6g}, not 1 (pass --normalize to rescale them)")
    check_same_tokenizer(datasets)
    samples = math.ceil(tokens / seq_length)
    one_dataset = sum(len(d.shards) for d in datasets if weights[d.name] > 0) == 1
    sources = []
    for dataset in datasets:
        weight = weights[dataset.name] / total
        requested = int(round(weight * tokens))
        epochs = megatron_read_epochs([s.tokens for s in dataset.shards], weight, samples, seq_length, one_dataset)
        if epochs > max_epochs:
            raise SynthscaleError(
                f"source {dataset.name!r} has {dataset.tokens:,} tokens and the blend asks for {requested:,}: "
                f"megatron-core would read it {epochs:.6g} times ({samples:,} samples of {seq_length} + 1 tokens, "
                f"{MID_LEVEL_SURPLUS:.1%} surplus per dataset), more than --max-epochs {max_epochs:g}"
            )
        sources.append(
            BlendSource(
                name=dataset.name,
                **_where(dataset),
                **vars(source_identity(dataset, synthetic, natural, families, generators)),
                weight=weight,
                tokens_requested=requested,
                tokens_available=dataset.tokens,
                epochs=round(epochs, 9),
            )
        )
    config = {"data": {d.name: d.location for d in datasets}, "weights": weights, "tokens": tokens, "seq_length": seq_length,
              "max_epochs": max_epochs, "normalize": normalize, "synthetic": sorted(synthetic),
              "natural": sorted(natural), "families": families or {}, "generators": generators or {}}
    return BlendSpec(
        name=name,
        tokens=tokens,
        seq_length=seq_length,
        max_epochs=max_epochs,
        tokenizer=datasets[0].manifest["tokenizer"],
        sources=tuple(sources),
        provenance=provenance(config=config),
    )


def _where(source: DataSource) -> dict:
    """A source's location fields in the spec: its prefix and manifest, or its shards."""
    if not source.sharded:
        (dataset,) = source.shards
        return {"prefix": dataset.prefix, "manifest": dataset.manifest_path,
                "manifest_sha256": sha256_file(dataset.manifest_path), "shards": None,
                "data_sha256": dataset_data_sha256(dataset.manifest, dataset.prefix)}
    shards = tuple(Shard(s.prefix, s.tokens, sha256_file(s.manifest_path), dataset_data_sha256(s.manifest, s.prefix))
                   for s in source.shards)
    return {"prefix": source.location, "manifest": None,
            "manifest_sha256": shards_sha256(s.manifest_sha256 for s in shards), "shards": shards,
            "data_sha256": shards_sha256(s.data_sha256 for s in shards)}


def _only(values: dict[str, str] | None, members: list[TokenizedDataset]) -> dict[str, str]:
    names = {m.name for m in members}
    return {k: v for k, v in (values or {}).items() if k in names}


def ratio_label(pct: float) -> str:
    return f"{pct:g}".replace(".", "p")


def make_grid(
    natural: TokenizedDataset | DataSource,
    synthetic: list[TokenizedDataset | DataSource],
    tokens: int,
    seq_length: int,
    ratios_pct: tuple[float, ...] = PAPER_RATIOS_PCT,
    max_epochs: float = 1.0,
    families: dict[str, str] | None = None,
    generators: dict[str, str] | None = None,
) -> list[BlendSpec]:
    """One blend per synthetic share and synthetic source; the 0% blend once, named after natural."""
    natural, synthetic = as_source(natural), [as_source(s) for s in synthetic]
    bad = [r for r in ratios_pct if not 0 <= r <= 100]
    if bad:
        raise SynthscaleError(f"--ratios: percentages must lie in [0, 100], got {bad}")
    blends: list[BlendSpec] = []
    if 0 in ratios_pct:
        blends.append(make_blend(natural.name, [natural], {natural.name: 1.0}, tokens, seq_length,
                                 max_epochs=max_epochs, natural={natural.name}))
    for synth in synthetic:
        for pct in sorted(set(ratios_pct) - {0}):
            share = pct / 100.0
            members = [synth] if share == 1.0 else [natural, synth]
            weights = {synth.name: share} if share == 1.0 else {natural.name: 1.0 - share, synth.name: share}
            blends.append(make_blend(f"{synth.name}-{ratio_label(pct)}pct", members, weights, tokens,
                                     seq_length, synthetic={synth.name}, max_epochs=max_epochs,
                                     natural={m.name for m in members} - {synth.name},
                                     families=_only(families, members),
                                     generators=_only(generators, members)))
    return blends
