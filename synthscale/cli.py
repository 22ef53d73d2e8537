"""The command-line toolkit every stage uses, so that one stage's CLI teaches the other three.

Conventions:
- `-h` and `--help` everywhere; every command's help ends with an example.
- Exit 2 for a usage error (click's own), exit 1 for bad data or a failed check.
- Only `SynthscaleError` (raised on purpose) becomes a one-line `Error: ...`. Anything else is a
  bug and keeps its traceback. `--debug` or SYNTHSCALE_DEBUG=1 shows every traceback.
- `--json` prints machine-readable output on stdout; `--json-file PATH` writes it to a file.
- `--workers 0` means all cores.
- Parsers: NAME=VALUE lists, counts such as 5B or 200M, ratios as percentages (0,33,67), globs.
"""

from __future__ import annotations

import contextlib
import glob as _glob
import json
import math
import os
import sys
from typing import Any, Callable

import click

from synthscale.errors import SynthscaleError
from synthscale.units import parse_count

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
DEBUG_ENV = "SYNTHSCALE_DEBUG"


# --- errors and --debug -------------------------------------------------------------------
def debug_enabled(ctx: click.Context | None = None) -> bool:
    ctx = ctx or click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    flag = bool(root.meta.get("synthscale.debug")) if root is not None else False
    return flag or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _set_debug(ctx: click.Context, _param, value: bool) -> None:
    if value:
        ctx.find_root().meta["synthscale.debug"] = True


debug_option = click.option(
    "--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug,
    help=f"Show full tracebacks (also {DEBUG_ENV}=1).",
)


@contextlib.contextmanager
def project_errors(ctx: click.Context | None = None):
    """Inside: a SynthscaleError becomes a one-line message with exit 1 (unless debugging)."""
    try:
        yield
    except SynthscaleError as exc:
        if debug_enabled(ctx):
            raise
        raise click.ClickException(str(exc)) from None


class _ProjectErrors:
    def invoke(self, ctx: click.Context):
        with project_errors(ctx):
            return super().invoke(ctx)  # type: ignore[misc]


class StageCommand(_ProjectErrors, click.Command):
    """A command with the stage conventions: `-h`, `--debug` and the error convention."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("context_settings", dict(CONTEXT_SETTINGS))
        super().__init__(*args, **kwargs)
        debug_option(self)


class StageGroup(_ProjectErrors, click.Group):
    """A stage's top-level command group; its subcommands are StageCommands by default."""

    command_class = StageCommand

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("context_settings", dict(CONTEXT_SETTINGS))
        super().__init__(*args, **kwargs)
        debug_option(self)


def stage_group(**kwargs) -> Callable:
    return click.group(cls=StageGroup, **kwargs)


def stage_command(**kwargs) -> Callable:
    return click.command(cls=StageCommand, **kwargs)


def usage_error(message: str, option: str | None = None) -> click.BadParameter:
    """A bad flag value: exit 2 with click's usage line."""
    return click.BadParameter(message, param_hint=option)


def option_callback(parse: Callable[[Any], Any]) -> Callable:
    """A click option callback running `parse(value)`: a SynthscaleError it raises (a bad NAME=VALUE,
    a malformed spec) becomes a usage error, exit 2, with the parser's message."""

    def callback(ctx: click.Context, _param, value):
        try:
            return parse(value)
        except SynthscaleError as exc:
            raise click.UsageError(str(exc), ctx) from None

    return callback


def named_values_callback(what: str = "VALUE", **parse_options) -> Callable:
    """A click callback: repeated NAME=WHAT values -> {NAME: WHAT}; a malformed or repeated one is a
    usage error (exit 2) that click prefixes with the option's name. `parse_options` go to
    parse_named_values (convert=..., split_commas=...)."""

    def callback(ctx: click.Context, param: click.Parameter, values) -> dict[str, Any]:
        option = max(param.opts, key=len)
        try:
            return parse_named_values(values or (), option, what, **parse_options)
        except SynthscaleError as exc:
            raise usage_error(str(exc).removeprefix(f"{option}: ")) from None

    return callback


# --- parsers ------------------------------------------------------------------------------
def parse_named(value: str, option: str, what: str = "VALUE") -> tuple[str, str]:
    """'NAME=VALUE' -> (NAME, VALUE); the error names the option and the bad value."""
    name, sep, rest = value.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise SynthscaleError(f"{option}: expected NAME={what}, got {value!r}")
    return name.strip(), rest.strip()


def parse_named_values(values, option: str, what: str = "VALUE", *, convert: Callable[[str, str], Any] | None = None,
                       split_commas: bool = False) -> dict[str, Any]:
    """Repeated NAME=VALUE items (optionally comma-separated) -> {NAME: VALUE}; names are unique.

    `convert(name, raw)` turns each raw value into what the caller needs and raises
    SynthscaleError (or ValueError) naming the problem.
    """
    items = [part.strip() for v in values for part in (v.split(",") if split_commas else [v])]
    out: dict[str, Any] = {}
    for item in filter(None, items):
        name, raw = parse_named(item, option, what)
        if name in out:
            raise SynthscaleError(f"{option}: {name!r} is given twice")
        try:
            out[name] = convert(name, raw) if convert else raw
        except SynthscaleError:
            raise
        except ValueError as exc:
            raise SynthscaleError(f"{option} {item!r}: {exc}") from None
    return out


def parse_percentages(value: str, option: str) -> tuple[float, ...]:
    """'0,33,67' -> (0.0, 33.0, 67.0): synthetic shares as percentages, each in [0, 100]."""
    try:
        percentages = tuple(float(p) for p in str(value).split(",") if p.strip())
    except ValueError:
        raise SynthscaleError(f"{option}: expected comma-separated percentages, got {value!r}") from None
    if not percentages or any(not math.isfinite(p) or not 0 <= p <= 100 for p in percentages):
        raise SynthscaleError(f"{option}: percentages must lie in [0, 100], got {value!r}")
    return percentages


def expand_glob(pattern: str, option: str) -> list[str]:
    """A path or glob -> the sorted matching paths; none matching is an error naming the pattern."""
    matches = sorted(_glob.glob(os.path.expanduser(pattern), recursive=True))
    if not matches:
        raise SynthscaleError(f"{option}: nothing matches {pattern!r}")
    return matches


class CountType(click.ParamType):
    """A click type for counts: 5e9, 5B, 200M, 1.5K or a plain integer."""

    name = "COUNT"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return parse_count(value, "count")
        except ValueError as exc:  # click names the option itself
            self.fail(str(exc).removeprefix("count: "), param, ctx)


COUNT = CountType()


# --- shared options -----------------------------------------------------------------------
def workers_option(default: int = 1, help: str = "Worker processes (0: all cores).") -> Callable:
    return click.option("--workers", "-w", type=click.IntRange(min=0), default=default, show_default=True, help=help)


def resolve_workers(workers: int) -> int:
    """`--workers 0` means every core this process may use."""
    if workers:
        return workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def json_options(func: Callable) -> Callable:
    """`--json` (machine output on stdout) and `--json-file PATH` (the same, to a file)."""
    func = click.option("--json-file", type=click.Path(dir_okay=False), help="Write the JSON output to this file.")(func)
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")(func)


def emit_json(document: Any, as_json: bool, json_file: str | None) -> None:
    """Honour --json / --json-file for one JSON-serialisable document."""
    if json_file:
        from synthscale.files import write_json_atomic

        write_json_atomic(json_file, document)
        click.echo(f"wrote {json_file}", err=True)
    if as_json:
        json.dump(document, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")

