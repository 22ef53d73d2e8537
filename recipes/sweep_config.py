"""`recipes sweep`'s config file: the sections its options are grouped in, and the list options.

A sweep's config (`--config sweep.yaml`, synthscale.config) has the sweep's option names as keys,
grouped for reading in four sections: `grid` (what is trained), `evaluation`, `training` (the
recipe and its overrides) and `execution` (where and how). The resolved config -- every option
after defaults, file, `--set` and flags, with paths made absolute and the recipe named -- is what
`--print-config` prints and what a sweep writes to RUNS_DIR/_sweeps/ and into each run folder it
writes (recipes.sweep). It never enters a run id.

List options (sizes, tokens, blends, seeds) take repeated flags, comma-separated values or YAML
lists; a bad token count or seed is a usage error (exit 2).
"""

from __future__ import annotations

import os

import click

from synthscale.cli import COUNT, usage_error
from synthscale.config import ConfigCommand

SECTIONS: dict[str, tuple[str, ...]] = {
    "grid": ("sizes", "tokens", "blends", "seeds"),
    "evaluation": ("eval", "eval_max_tokens"),
    "training": ("recipe", "seq_length", "global_batch_size", "micro_batch_size", "peak_lr", "checkpoint_interval"),
    "execution": ("output", "backend", "executor", "jobs", "threads", "nodes", "gpus_per_node", "tensor_parallel",
                  "pipeline_parallel", "container_image", "slurm_account", "slurm_partition", "slurm_time",
                  "slurm_max_requeues", "slurm_array_parallelism", "mount", "dry_run", "force"),
}
NOT_CONFIG = ("json", "json_file")  # how this invocation reports, not what the sweep is


def split_list(ctx, param, values) -> tuple[str, ...]:
    """`--x a --x b`, `--x a,b` and a YAML list -> ('a', 'b')."""
    return tuple(v.strip() for value in values or () for v in str(value).split(",") if v.strip())


def count_list(ctx, param, values) -> tuple[int, ...]:
    """Token counts (5B, 200M, 1e9), split like split_list; a bad one exits 2 naming it."""
    return tuple(COUNT.convert(v, param, ctx) for v in split_list(ctx, param, values))


def int_list(ctx, param, values) -> tuple[int, ...]:
    """Seeds: non-negative integers, split like split_list, none repeated."""
    items = split_list(ctx, param, values)
    flag = f"--{param.name.replace('_', '-')}"
    try:
        numbers = tuple(int(v) for v in items)
    except ValueError:
        raise usage_error(f"expected comma-separated integers, got {','.join(items)!r}", flag) from None
    if any(n < 0 for n in numbers):
        raise usage_error(f"must be >= 0, got {','.join(items)!r}", flag)
    if len(set(numbers)) != len(numbers):
        raise usage_error(f"repeats a value: {','.join(items)!r}", flag)
    return numbers


class SlurmTimeType(click.ParamType):
    """A Slurm time limit as text. A number is refused: YAML reads an unquoted 4:00:00 as 14400."""

    name = "TIME"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.fail(f"got the number {value!r}: in YAML quote a Slurm time (\"04:00:00\"), which "
                      f"read unquoted is a count of seconds", param, ctx)
        return str(value)


SLURM_TIME = SlurmTimeType()


def default_recipe(backend: str, sizes) -> str:
    """The recipe a sweep trains with when none is named: cpu-tiny for megatron when every size is
    a CPU shape; paper otherwise (and always for bridge)."""
    from recipes.shapes import SHAPES

    if backend == "megatron" and all(s in SHAPES and SHAPES[s].cpu for s in sizes):
        return "cpu-tiny"
    return "paper"


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


class SweepCommand(ConfigCommand):
    """The sweep's ConfigCommand: its resolved config in sections, with absolute paths."""

    def resolved(self, ctx: click.Context) -> dict:
        flat = super().resolved(ctx)
        keys = self.option_keys()
        values = {key: flat[keys[key]] for section in SECTIONS.values() for key in section}
        values["blends"] = [_absolute(b) for b in values["blends"]]
        values["output"] = _absolute(values["output"])
        values["eval"] = [f"{n.strip()}={_absolute(p.strip())}" if sep else f"{n}{sep}{p}"
                          for n, sep, p in (e.partition("=") for e in values["eval"])]
        values["recipe"] = values["recipe"] or default_recipe(values["backend"], values["sizes"])
        return {section: {key: values[key] for key in keys_} for section, keys_ in SECTIONS.items()}
