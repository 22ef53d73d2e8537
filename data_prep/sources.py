"""What a `--data NAME=WHERE` names: one tokenized dataset, or a source made of many shards.

WHERE is resolved, in this order, as
  - a PREFIX with a manifest (`PREFIX.manifest.json`): one dataset, as `data_prep tokenize` wrote it;
  - a glob over prefixes (`data/cc/shard-*`, matched against `PREFIX.manifest.json`, `.bin` and
    `.idx`, so a shard missing its manifest is named, never skipped): a sharded source;
  - a file that lists prefixes, one a line (blank lines and `#` comments ignored; a relative
    prefix is relative to the list's folder; a line may itself be a glob): a sharded source.
Shards are kept in the list's order, a glob's matches in natural order (shard-2 before shard-10).
All shards of a source must share one tokenizer; the error names the odd shard.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from data_prep.tokenize import MANIFEST_KIND, output_paths
from synthscale.errors import MissingInputError, SynthscaleError

SUFFIXES = (".manifest.json", ".bin", ".idx")


@dataclass(frozen=True)
class TokenizedDataset:
    """A PREFIX with a complete manifest."""

    name: str
    prefix: str
    manifest_path: str
    manifest: dict

    @property
    def tokens(self) -> int:
        return int(self.manifest["tokens"])

    def origin_counts(self, key: str) -> dict[str, int]:
        """Documents per value of the records' `recipe` or `generator` field."""
        return dict((self.manifest.get("origin") or {}).get(key) or {})

    def origin(self, key: str) -> list[str]:
        """Distinct values of the documents' `recipe` or `generator` field (see `data_prep tokenize`)."""
        return sorted(self.origin_counts(key))


@dataclass(frozen=True)
class DataSource:
    """One blend source: a single dataset, or the shards of one (counted as a whole)."""

    name: str
    location: str  # the prefix; for a sharded source the glob or list file, absolute
    shards: tuple[TokenizedDataset, ...]
    sharded: bool

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.shards)

    @property
    def manifest(self) -> dict:
        """The first shard's manifest (all shards share its tokenizer)."""
        return self.shards[0].manifest

    @property
    def prefix(self) -> str:
        return self.location

    def origin_counts(self, key: str) -> dict[str, int]:
        """The shards' origin counts, summed."""
        total: Counter = Counter()
        for shard in self.shards:
            total.update(shard.origin_counts(key))
        return dict(sorted(total.items()))

    def origin(self, key: str) -> list[str]:
        return sorted(self.origin_counts(key))


def as_source(item: TokenizedDataset | DataSource) -> DataSource:
    if isinstance(item, DataSource):
        return item
    return DataSource(item.name, item.prefix, (item,), sharded=False)


def open_tokenized(name: str, prefix: str | Path, label: str | None = None) -> TokenizedDataset:
    """Check that PREFIX is a complete tokenized dataset and read its manifest.

    Errors start with `label` (default: `data 'NAME'`).
    """
    label = label or f"data {name!r}"
    paths = output_paths(prefix)
    manifest_path = paths["manifest"]
    if not manifest_path.is_file():
        raise MissingInputError(
            f"{label}: no manifest at {str(manifest_path)!r} "
            f"(run `data_prep tokenize ... --output {prefix}` first)"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SynthscaleError(f"{label}: {str(manifest_path)!r} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
        raise SynthscaleError(f"{label}: {str(manifest_path)!r} is not a tokenized-dataset manifest")
    for part in ("bin", "idx"):
        if not paths[part].is_file():
            raise MissingInputError(f"{label}: {str(paths[part])!r} is missing")
    itemsize = 2 if manifest["dtype"] == "uint16" else 4
    if paths["bin"].stat().st_size != manifest["tokens"] * itemsize:
        raise SynthscaleError(
            f"{label}: {str(paths['bin'])!r} does not hold the {manifest['tokens']:,} tokens "
            "its manifest records (rewritten since?)"
        )
    return TokenizedDataset(name, str(Path(prefix).resolve()), str(manifest_path.resolve()), manifest)


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _strip_suffix(value: str) -> str:
    for suffix in SUFFIXES:
        if value.endswith(suffix):
            return value[: -len(suffix)]
    return value


def _glob_prefixes(label: str, pattern: str) -> list[str]:
    pattern = _strip_suffix(pattern)
    found = {m[: -len(suffix)] for suffix in SUFFIXES for m in glob.glob(pattern + suffix)}
    if not found:
        raise MissingInputError(
            f"{label}: no tokenized dataset matches {pattern!r} (looked for {pattern + '.manifest.json'!r})"
        )
    return sorted(found, key=_natural_key)


def _list_file_prefixes(name: str, path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise SynthscaleError(f"data {name!r}: {str(path)!r} is neither a prefix nor a text file listing prefixes") from None
    prefixes: list[str] = []
    for number, line in enumerate(lines, 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        where = entry if os.path.isabs(entry) else str(path.resolve().parent / entry)
        if glob.has_magic(where) and not Path(where + ".manifest.json").exists():
            prefixes += _glob_prefixes(f"data {name!r} ({path}:{number})", where)
        else:
            prefixes.append(_strip_suffix(where))
    if not prefixes:
        raise SynthscaleError(f"data {name!r}: {str(path)!r} lists no prefixes")
    return prefixes


def resolve_prefixes(name: str, value: str) -> tuple[str, list[str], bool]:
    """WHERE -> (its absolute location, the prefixes it names, whether it is sharded)."""
    if not value:
        raise SynthscaleError(f"data {name!r}: no prefix given")
    value = os.path.expanduser(value)
    if Path(value + ".manifest.json").is_file():
        return str(Path(value).resolve()), [value], False
    if glob.has_magic(value):
        return os.path.abspath(value), _glob_prefixes(f"data {name!r}", value), True
    path = Path(value)
    if path.is_file() and path.suffix not in (".bin", ".idx", ".json"):
        return str(path.resolve()), _list_file_prefixes(name, path), True
    if path.is_dir():
        raise MissingInputError(
            f"data {name!r}: {value!r} is a folder; give a prefix, a glob such as "
            f"{os.path.join(value, '*')!r}, or a file listing prefixes"
        )
    return str(Path(value).resolve()), [_strip_suffix(value)], False


def check_same_tokenizer(datasets, what: str = "data", need: str = "a blend needs one tokenizer") -> None:
    """Refuse datasets tokenized differently; the error names the odd one and the first."""
    first = datasets[0]
    a = first.manifest["tokenizer"]
    for other in datasets[1:]:
        b = other.manifest["tokenizer"]
        if (a["sha256"], a["vocab_size"], a["eod_id"]) != (b["sha256"], b["vocab_size"], b["eod_id"]):
            raise SynthscaleError(
                f"{what} {other.name!r} was tokenized with {b['spec']!r}, {what} {first.name!r} with "
                f"{a['spec']!r}: {need}"
            )


def open_shards(name: str, value: str, same_tokenizer: bool = True) -> tuple[str, list[TokenizedDataset], bool]:
    """Open every prefix WHERE names; refuse duplicates and (unless told not to) shards of different tokenizers."""
    location, prefixes, sharded = resolve_prefixes(name, value)
    shards: list[TokenizedDataset] = []
    seen: dict[str, str] = {}
    for prefix in prefixes:
        shard_name = prefix if sharded else name
        shard = open_tokenized(shard_name, prefix, f"data {name!r} shard {prefix!r}" if sharded else None)
        if shard.prefix in seen:
            raise SynthscaleError(f"data {name!r}: shard {shard.prefix!r} is listed twice")
        seen[shard.prefix] = prefix
        shards.append(shard)
    if sharded and same_tokenizer:
        try:
            check_same_tokenizer(shards, "shard", "a source's shards need one tokenizer")
        except SynthscaleError as exc:
            raise SynthscaleError(f"data {name!r}: {exc}") from None
    return location, shards, sharded


def open_source(name: str, value: str) -> DataSource:
    """`--data NAME=WHERE`: a prefix, a glob over prefixes, or a file listing prefixes."""
    location, shards, sharded = open_shards(name, value)
    if not sharded:
        return as_source(shards[0])
    return DataSource(name, location, tuple(shards), sharded=True)
