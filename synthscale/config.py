"""Config files for commands whose flags pile up: `--config FILE.yaml`, `--set KEY=VALUE`, `--print-config`.

A config file is YAML (read with yaml.safe_load) whose keys are the command's option names
(`peak_lr` or `peak-lr`). Keys may be grouped in sections for readability; a section is only a
name, so `training: {peak_lr: 2e-3}` sets `peak_lr`, and `--set training.peak_lr=1e-3` (or
`--set peak_lr=1e-3`) overrides it. Precedence: flags on the command line > `--set` > the
file > the command's defaults. An unknown key is an error that names it and the known ones.

`--print-config` prints the resolved configuration as YAML and exits; `resolved_config(ctx)`
gives the same mapping to write beside a command's outputs.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import click
import yaml

from synthscale.cli import StageCommand, project_errors
from synthscale.errors import MissingInputError, SynthscaleError


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """yaml.safe_load a file that must hold a mapping; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"--config: no such file: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SynthscaleError(f"--config {path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SynthscaleError(f"--config {path}: expected a mapping of option names, got {type(data).__name__}")
    return data


def parse_scalar(text: str) -> Any:
    """A --set value: YAML (lists, numbers, booleans, null), with 1e-3 read as a number.

    A value with a colon stays a string: YAML 1.1 reads `4:00:00` as the base-60 integer 14400,
    never what a user means by a time limit. (In a config file, quote such values.)
    """
    if re.fullmatch(r"[0-9:.\-]+", text) and ":" in text:
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        if math.isfinite(number):
            return number
    return value


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """config['a']['b'] = value for key 'a.b' (sections are created as needed)."""
    parts = key.split(".")
    if not all(parts):
        raise SynthscaleError(f"--set {key!r}: empty part in the dotted key")
    node = config
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SynthscaleError(f"--set {key!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def flatten_sections(config: dict[str, Any], known: set[str], where: str = "") -> dict[str, Any]:
    """{'training': {'peak_lr': 1}} -> {'peak_lr': 1} when `peak_lr` is an option and `training` is not."""
    flat: dict[str, Any] = {}
    for raw_key, value in config.items():
        key = str(raw_key).replace("-", "_")
        dotted = f"{where}{raw_key}"
        if key in known:
            if key in flat:
                raise SynthscaleError(f"config: {key!r} is set twice (last at {dotted!r})")
            flat[key] = value
        elif isinstance(value, dict):
            for inner, inner_value in flatten_sections(value, known, f"{dotted}.").items():
                if inner in flat:
                    raise SynthscaleError(f"config: {inner!r} is set twice (last under {dotted!r})")
                flat[inner] = inner_value
        else:
            raise SynthscaleError(f"config: unknown key {dotted!r}; known keys: {', '.join(sorted(known))}")
    return flat


def _scan(args: list[str], flag: str) -> list[str]:
    """Values of `flag VALUE` / `flag=VALUE` in raw argv (before click parses it)."""
    values, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg == flag and i + 1 < len(args):
            values.append(args[i + 1])
            i += 2
            continue
        if arg.startswith(flag + "="):
            values.append(arg[len(flag) + 1:])
        i += 1
    return values


class ConfigCommand(StageCommand):
    """A StageCommand that also reads `--config FILE`, `--set KEY=VALUE` and `--print-config`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.extend([
            click.Option(["--config", "config_file"], type=click.Path(dir_okay=False), expose_value=False,
                         help="YAML file of option values (keys may be grouped in sections)."),
            click.Option(["--set", "overrides"], multiple=True, metavar="KEY=VALUE", expose_value=False,
                         help="Override one config value; dotted keys reach into sections. Repeatable."),
            click.Option(["--print-config"], is_flag=True, expose_value=False,
                         help="Print the resolved configuration as YAML and exit."),
        ])

    def option_keys(self) -> dict[str, str]:
        """Config key -> parameter name: each option's long flag (`--eval` -> `eval`) and its name."""
        skip = {"config_file", "overrides", "print_config", "help", "debug"}
        keys: dict[str, str] = {}
        for param in self.params:
            if not param.name or param.name in skip:
                continue
            keys[param.name] = param.name
            for opt in getattr(param, "opts", []):
                if opt.startswith("--"):
                    keys[opt[2:].replace("-", "_")] = param.name
        return keys

    def make_context(self, info_name, args, parent=None, **extra):
        args = list(args)
        print_config = "--print-config" in args
        if not ({"-h", "--help"} & set(args)):
            try:
                extra["default_map"] = self.config_defaults(args)
            except SynthscaleError as exc:
                raise click.UsageError(str(exc)) from None
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        ctx.meta["synthscale.print_config"] = print_config
        return ctx

    def config_defaults(self, args: list[str]) -> dict[str, Any]:
        keys = self.option_keys()
        flat: dict[str, Any] = {}
        for path in _scan(args, "--config"):
            flat.update({keys[k]: v for k, v in flatten_sections(load_yaml_mapping(path), set(keys)).items()})
        for item in _scan(args, "--set"):  # each override beats the file, whatever section it names
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise SynthscaleError(f"--set: expected KEY=VALUE, got {item!r}")
            override: dict[str, Any] = {}
            set_dotted(override, key.strip().replace("-", "_"), parse_scalar(raw.strip()))
            flat.update({keys[k]: v for k, v in flatten_sections(override, set(keys)).items()})
        params = {p.name: p for p in self.params}
        for key, value in flat.items():
            if getattr(params[key], "multiple", False) and not isinstance(value, (list, tuple)):
                flat[key] = [value]
            elif isinstance(value, (list, tuple)) and not getattr(params[key], "multiple", False) \
                    and getattr(params[key], "nargs", 1) == 1:
                flat[key] = ",".join(str(v) for v in value)  # `sizes: [a, b]` for a comma-separated option
        return flat

    def resolved(self, ctx: click.Context) -> dict[str, Any]:
        """What --print-config shows and write_resolved_config writes; commands may refine it."""
        return resolved_config(ctx)

    def invoke(self, ctx: click.Context):
        if ctx.meta.get("synthscale.print_config"):
            with project_errors(ctx):
                click.echo(yaml.safe_dump(self.resolved(ctx), sort_keys=False), nl=False)
            return None
        return super().invoke(ctx)


def plain(value: Any) -> Any:
    """Tuples, paths and nested mappings as YAML-safe lists, strings and dicts."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def resolved_config(ctx: click.Context) -> dict[str, Any]:
    """The command's option values after defaults, file, --set and flags: what actually ran."""
    return {key: plain(value) for key, value in ctx.params.items()}


def resolved_config_text(ctx: click.Context) -> str:
    """The resolved configuration as YAML that `--config` reads back, with a header line."""
    values = ctx.command.resolved(ctx) if isinstance(ctx.command, ConfigCommand) else resolved_config(ctx)
    return (f"# {ctx.command_path}: resolved configuration (rerun with --config THIS_FILE)\n"
            + yaml.safe_dump(values, sort_keys=False))


def write_resolved_config(ctx: click.Context, path: str | Path) -> Path:
    """Write the resolved configuration as YAML beside a command's outputs (atomically)."""
    from synthscale.files import write_text_atomic

    write_text_atomic(Path(path), resolved_config_text(ctx))
    return Path(path)
