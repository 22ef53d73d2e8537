"""`python -m study`: a whole study from one config file (`make demo` runs study/demo.yaml)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click

from study.config import StudyConfig, study_config
from synthscale.config import ConfigCommand, plain, write_resolved_config

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")


def _option(field):
    """The click.option decorator of one StudyConfig field, its default shown; tuples are comma-separated."""
    default = field.default
    kind = str(field.type)
    if kind.startswith("tuple"):
        default = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
        ptype = str
    elif kind == "Path":
        default, ptype = str(default), click.Path()
    elif kind in ("int", "float", "bool"):
        ptype = {"int": int, "float": float, "bool": click.BOOL}[kind]
    else:
        default, ptype = ("" if default is None else default), str
    return click.option(f"--{field.name.replace('_', '-')}", field.name, type=ptype, default=default,
                        show_default=True)


def _with_study_options(func):
    for field in reversed(fields(StudyConfig)):  # decorators apply bottom-up: keep the fields' order
        func = _option(field)(func)
    return func


class StudyCommand(ConfigCommand):
    def resolved(self, ctx):
        """The StudyConfig itself (validated), with lists for its tuples."""
        config = study_config(ctx.params)
        return {f.name: plain(getattr(config, f.name)) for f in fields(config)}


@click.command(cls=StudyCommand)
@_with_study_options
@click.pass_context
def main(ctx, **values):
    """Run a whole study: natural text -> synthetic corpora (vLLM) -> Megatron datasets and
    blends -> training over sizes x budgets x mixtures -> scaling-law fits and a report.

    Every field of the study is a flag below and a key of a YAML config; `make demo` runs
    study/demo.yaml (tiny, CPU). Copy that file to run your own study. Rerun to resume: a
    step whose output exists is skipped. With `executor: slurm` the study submits the
    training and stops; rerun it when the jobs are done to collect and fit them.

    \b
    Examples:
      python -m study --config study/demo.yaml
      python -m study --config study/demo.yaml --set training.sizes=tiny-xs,tiny-s,tiny-m --workdir out2
      python -m study --config my_study.yaml --print-config
    """
    from study.pipeline import Study  # after parsing: `--help` stays fast

    config = study_config(values)
    config.workdir.mkdir(parents=True, exist_ok=True)
    write_resolved_config(ctx, config.workdir / "study.config.yaml")
    Study(config)()


if __name__ == "__main__":
    main()
