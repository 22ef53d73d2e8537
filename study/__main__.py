"""`python -m study`: the tiny end-to-end study on CPU (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path

import click

from study.pipeline import Study, StudyConfig


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--workdir", default="demo_out", show_default=True, type=click.Path(file_okay=False))
@click.option("--recipes", default="hq,qa", show_default=True, help="Synthetic styles to generate.")
@click.option("--generate-docs", default=160, show_default=True, help="Natural documents rephrased per recipe.")
@click.option("--sizes", default="tiny-xs,tiny-s", show_default=True, help="Model shapes (see `recipes shapes`).")
@click.option("--budgets", default="48K,96K,192K", show_default=True, help="Training tokens D per run.")
@click.option("--ratios", default="0,33,67", show_default=True, help="Synthetic percentages.")
def main(workdir, recipes, generate_docs, sizes, budgets, ratios):
    """Run the whole study at tiny scale: natural text -> synthetic corpora (vLLM) ->
    Megatron datasets and blends -> CPU training over sizes x budgets x mixtures ->
    scaling-law fits and an HTML report. Rerun to resume; delete WORKDIR to start over.

    \b
    Example:
      python -m study --workdir demo_out --budgets 48K,96K,192K --ratios 0,33,67
    """
    config = StudyConfig(
        workdir=Path(workdir), recipes=_csv(recipes), generate_docs=generate_docs, sizes=_csv(sizes),
        budgets=_csv(budgets), ratios_pct=tuple(float(r) for r in _csv(ratios)),
    )
    Study(config)()


if __name__ == "__main__":
    main()
