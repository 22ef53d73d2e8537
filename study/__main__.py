"""`python -m study`: the tiny end-to-end study on CPU (what `make demo` runs)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click

from study.pipeline import Study, StudyConfig

DEFAULTS = {f.name: f.default for f in fields(StudyConfig) if f.name != "workdir"}


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _joined(values) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--workdir", default="demo_out", show_default=True, type=click.Path(file_okay=False))
@click.option("--recipes", default=_joined(DEFAULTS["recipes"]), show_default=True, help="Synthetic styles the real generator writes.")
@click.option("--ablation-recipe", default=DEFAULTS["ablation_recipe"], show_default=True, help="Recipe also written by a random tiny Llama (the generator ablation); '' for none.")
@click.option("--generate-docs", default=DEFAULTS["generate_docs"], show_default=True, help="Natural documents rephrased per recipe.")
@click.option("--sizes", default=_joined(DEFAULTS["sizes"]), show_default=True, help="Model shapes (see `recipes shapes`).")
@click.option("--budgets", default=_joined(DEFAULTS["budgets"]), show_default=True, help="Training tokens D per run.")
@click.option("--ratios", default=_joined(DEFAULTS["ratios_pct"]), show_default=True, help="Synthetic percentages.")
@click.option("--jobs", default=DEFAULTS["jobs"], show_default=True, type=click.IntRange(min=1), help="Training runs at once.")
def main(workdir, recipes, ablation_recipe, generate_docs, sizes, budgets, ratios, jobs):
    """Run the whole study at tiny scale: natural text -> synthetic corpora (vLLM, with
    SmolLM2-135M-Instruct and a random tiny Llama for the generator ablation) -> Megatron
    datasets and blends -> CPU training over sizes x budgets x mixtures -> scaling-law fits
    and an HTML report. Rerun to resume; delete WORKDIR to start over (the converted
    generator stays cached in $SYNTHSCALE_CACHE, default ~/.cache/synthscale).

    \b
    Example:
      python -m study --workdir demo_out --sizes tiny-xs,tiny-s --ratios 0,33,67
    """
    try:
        config = StudyConfig(
            workdir=Path(workdir), recipes=_csv(recipes), ablation_recipe=ablation_recipe or None,
            generate_docs=generate_docs, sizes=_csv(sizes), budgets=_csv(budgets),
            ratios_pct=tuple(float(r) for r in _csv(ratios)), jobs=jobs,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    Study(config)()


if __name__ == "__main__":
    main()
