"""The SynthLLM commands of `generation` (Qin et al. 2025; docs/synthllm.md):

  generation concepts       `generation run` with the concept-extraction recipe (synthllm-concepts)
  generation concept-graph  the streaming reduce: concept outputs of all shards -> Parquet graph
  generation diversity      level 1, 2, 3 corpora compared at one budget: is level 3 more diverse?

The levels themselves run through `generation run --recipe synthllm-l1|synthllm-l2|synthllm-l3`.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import click

CONCEPTS_HELP = """Extract each document's topics and key concepts with an LLM (SynthLLM, step 1).

\b
The same command as `generation run --recipe synthllm-concepts` (every option of `run`:
backends, --shard I/N, resume, --prompts to replace the extraction prompt). Each output record
has `concepts` (a normalised list: case-folded, whitespace collapsed, duplicates dropped, at most
20 items of at most 6 words) and `document` (the source chunk); outputs that hold no list are
counted in the manifest's failures (concepts_unparseable, concepts_too_long, concepts_empty) and
kept with the raw output in DIR/failures/. Next: `generation concept-graph DIR --output GRAPH`.
"""

_GRAPH_ONLY = {"graph", "combinations", "subsets_per_document", "combination_size", "reference_chars"}


def register(main: click.Group, run_command: click.Command) -> None:
    params = []
    for param in run_command.params:
        if param.name in _GRAPH_ONLY:
            continue
        param = copy.copy(param)
        if param.name == "recipe":
            param.required = False
            param.default = "synthllm-concepts"
            param.show_default = True
        if param.name == "inputs":
            param.required = True
        params.append(param)
    main.add_command(click.Command("concepts", params=params, callback=run_command.callback, help=CONCEPTS_HELP,
                                   epilog=run_command.epilog, context_settings=run_command.context_settings))
    main.add_command(concept_graph_command)
    main.add_command(diversity_command)


@click.command("concept-graph")
@click.argument("sources", nargs=-1, required=True)
@click.option("--output", required=True, type=click.Path(file_okay=False), help="The graph directory to write.")
@click.option("--min-docs", type=int, default=2, show_default=True,
              help="Prune concepts seen in fewer documents than this (rare).")
@click.option("--max-docs", type=int, default=None, help="Prune concepts seen in more documents than this (common).")
@click.option("--max-doc-fraction", type=float, default=0.5, show_default=True,
              help="Prune concepts seen in more than this share of the documents (common); 1 = off.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print graph.json.")
def concept_graph_command(sources, output, min_docs, max_docs, max_doc_fraction, progress, as_json) -> None:
    """Build the global concept graph (SynthLLM level 3, step 2) from concept-extraction outputs:
    SOURCES are `generation concepts` output directories (every shard there and complete) or their
    JSONL files.

    \b
    Nodes are concepts, an edge joins two concepts of one document, weighted by the documents
    they share. Streams in two passes: memory follows the graph, not the corpus.
    Writes OUTPUT/{nodes,edges,documents}.parquet, texts.bin and graph.json (inputs with sha256,
    pruning counts, files with sha256, graph_sha256). Example:
      generation concept-graph synth/concepts --output synth/graph --min-docs 2 --max-doc-fraction 0.05
    """
    from generation.concept_graph import ConceptGraphError, build_graph

    try:
        manifest = build_graph(list(sources), output, min_docs=min_docs, max_docs=max_docs,
                               max_doc_fraction=None if max_doc_fraction >= 1 else max_doc_fraction,
                               progress=progress, log=lambda line: click.echo(line, err=True))
    except (ConceptGraphError, FileNotFoundError) as exc:
        click.echo(f"generation concept-graph: error: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
        return
    c = manifest["counts"]
    click.echo(f"{output}: {c['documents']:,} documents, {c['concepts']:,} concepts: {c['kept']:,} kept, "
               f"{c['pruned_rare']:,} pruned as rare (< {min_docs} documents), {c['pruned_common']:,} pruned as "
               f"common (> {manifest['options']['max_docs_effective']} documents); {c['edges']:,} edges; "
               f"graph {manifest['graph_sha256'][:12]} in {manifest['elapsed_s']:.1f} s")


def _corpus_files(source: str) -> tuple[str, list[Path]]:
    path = Path(source)
    manifest_path = path / "manifest.json" if path.is_dir() else path
    if not manifest_path.is_file():
        raise click.BadParameter(f"{source}: no manifest.json (run `generation merge` on a sharded output first)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    return manifest.get("recipe", str(source)), [manifest_path.parent / f["path"] for f in manifest["files"]]


@click.command("diversity")
@click.argument("corpora", nargs=-1, required=True)
@click.option("--level3", default=None, help="The corpus to test as most diverse (default: the synthllm-l3 one).")
@click.option("--max-tokens", type=int, default=1_000_000, show_default=True, help="Cap of the distinct-n budget.")
@click.option("--output", default=None, type=click.Path(dir_okay=False), help="Write the comparison as JSON here.")
def diversity_command(corpora, level3, max_tokens, output) -> None:
    """Compare the diversity of SynthLLM corpora (output directories of `generation run`, merged):
    distinct concepts and pairs, combinations spanning documents, documents cited, distinct-1/2/3 at
    one token budget (the smallest corpus). Says whether level 3 is above each other level, metric
    by metric: the paper's claim, on your data.

    \b
      generation diversity synth/l1 synth/l2 synth/l3 --output synth/diversity.json
    """
    from synthscale.files import write_json_atomic
    from synthscale.provenance import provenance

    from generation.diversity import compare

    labelled: dict[str, list[Path]] = {}
    for source in corpora:
        label, files = _corpus_files(source)
        if label in labelled:
            label = f"{label}@{source}"
        labelled[label] = files
    if level3 is None:
        level3 = next((label for label in labelled if label.startswith("synthllm-l3")), None)
    elif level3 not in labelled:
        raise click.BadParameter(f"{level3!r} is none of {', '.join(labelled)}", param_hint="--level3")
    result = compare(labelled, level3, max_tokens=max_tokens)
    result = {"kind": "synthscale.diversity", **result,
              "provenance": provenance(config={"corpora": list(corpora), "max_tokens": max_tokens})}
    for label, block in result["corpora"].items():
        d = block["distinct_n"]
        click.echo(f"{label:24s} records {block['records']:>7,}  concepts {block['distinct_concepts']}  "
                   f"pairs {block['distinct_concept_pairs']}  spanning {block['combinations_spanning_documents']}  "
                   f"2+docs {block['multi_document_share']}  distinct-1/2/3 {d['1']}/{d['2']}/{d['3']} "
                   f"({d['tokens']:,} tokens)")
    for label, row in result["level3_more_diverse_than"].items():
        click.echo(f"{level3} more diverse than {label}: {'yes' if row['all'] else 'no'} "
                   f"({', '.join(k for k, v in row.items() if k != 'all' and v is False) or 'every measured metric'}"
                   f"{' not above' if not row['all'] else ''})")
    if output:
        write_json_atomic(Path(output), result)
