"""The SynthLLM commands of `generation` (Qin et al. 2025; docs/synthllm.md):

  generation concepts       `generation run` with the concept-extraction recipe (synthllm-concepts)
  generation concept-graph  the streaming reduce: concept outputs of all shards -> Parquet graph
  generation diversity      level 1, 2, 3 corpora compared at one budget: is level 3 more diverse?

The levels themselves run through `generation run --recipe synthllm-l1|synthllm-l2|synthllm-l3`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import click

from synthscale.cli import COUNT, StageCommand, emit_json, json_options
from synthscale.errors import SynthscaleError
from synthscale.files import read_manifest

CONCEPTS_HELP = """Extract each document's topics and key concepts with an LLM (SynthLLM, step 1).

\b
The same command as `generation run --recipe synthllm-concepts` (every option of `run`:
backends, --shard I/N, resume, --prompts to replace the extraction prompt). Each output record
has `concepts` (the model's names as it wrote them, explanations cut off, at most 20 items of at
most 6 words), `concept_aliases` (from "Name (ABBR)"), `concepts_raw`, `text_concepts` (the chunk's
top key phrases by YAKE) and `document` (the source chunk); an answer cut at the token limit is
parsed without its last line. Outputs that hold no list are counted in the manifest's failures
(concepts_unparseable, concepts_too_long, concepts_empty) and kept with the raw output in
DIR/failures/. Next: `generation concept-graph DIR --output GRAPH`.
"""

CONCEPTS_EXAMPLE = """\b
Example:
  generation concepts --model models/SmolLM2-135M-Instruct --input 'docs/*.jsonl' --output synth/concepts
  generation concept-graph synth/concepts --output synth/graph
"""


def register(main: click.Group, run_command: click.Command, graph_only: tuple[str, ...], output_epilog: str) -> None:
    """`generation concepts` (`run` with the extraction recipe, without the `graph_only` options),
    `concept-graph` and `diversity`."""
    params = []
    for param in run_command.params:
        if param.name in graph_only or param.name == "debug":  # StageCommand adds its own --debug
            continue
        param = copy.copy(param)
        if param.name == "recipe":
            param.required = False
            param.default = "synthllm-concepts"
            param.show_default = True
        if param.name == "inputs":
            param.required = True
        params.append(param)
    main.add_command(StageCommand("concepts", params=params, callback=run_command.callback, help=CONCEPTS_HELP,
                                  epilog=output_epilog + CONCEPTS_EXAMPLE))
    main.add_command(concept_graph_command)
    main.add_command(diversity_command)


@click.command("concept-graph", cls=StageCommand)
@click.argument("sources", nargs=-1, required=True)
@click.option("--output", required=True, type=click.Path(file_okay=False), help="The graph directory to write.")
@click.option("--min-docs", type=COUNT, default=2, show_default=True,
              help="A concept in this many documents is shared: a walk start, with edges (rarer ones are kept).")
@click.option("--max-docs", type=COUNT, default=None, help="Prune concepts seen in more documents than this (common).")
@click.option("--max-doc-fraction", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="Prune concepts seen in more than this share of the documents (common; rounded up, never "
                   "below --min-docs); 1 = off.")
@click.option("--concept-sources", type=click.Choice(["llm,text", "llm", "text"]), default="llm,text",
              show_default=True, help="The model's concepts (grounded in the text), the text's key phrases, or both.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a terminal).")
@json_options
def concept_graph_command(sources, output, min_docs, max_docs, max_doc_fraction, concept_sources, progress, as_json,
                          json_file) -> None:
    """Build the global concept graph (SynthLLM level 3, step 2) from concept-extraction outputs:
    SOURCES are `generation concepts` output directories (every shard there and complete) or their
    JSONL files. `--json` prints graph.json.

    \b
    Nodes are concepts under a canonical key (case, articles, plurals folded; named by their most
    frequent surface form): the model's, when grounded in the text, and YAKE's key phrases. A
    concept in --min-docs documents is shared: level 3 walks concept -> document -> concept through
    it. Only too common concepts are pruned; a graph with no shared concept is refused. An edge
    joins two shared concepts of one document. Streams in two passes: memory follows the graph.
    Writes OUTPUT/{nodes,edges,documents}.parquet, texts.bin and graph.json (inputs with sha256,
    pruning counts, files with sha256, graph_sha256).

    \b
    Example:
      generation concept-graph synth/concepts --output synth/graph --min-docs 2 --max-doc-fraction 0.05
      generation run --recipe synthllm-l3 --graph synth/graph --combinations 100K --model MODEL --output synth/l3
    """
    from generation.synthllm.graph_build import build_graph

    manifest = build_graph(list(sources), output, min_docs=min_docs, max_docs=max_docs,
                           max_doc_fraction=None if max_doc_fraction >= 1 else max_doc_fraction,
                           progress=progress, log=lambda line: click.echo(line, err=True),
                           concept_sources=tuple(concept_sources.split(",")))
    emit_json(manifest, as_json, json_file)
    if as_json:
        return
    c = manifest["counts"]
    src = c["sources"]
    click.echo(f"{output}: {c['documents']:,} documents, {c['concepts']:,} concepts: {c['shared']:,} shared "
               f"({c['shared_share']:.1%}, in {min_docs}+ documents), {c['pruned_common']:,} pruned as common "
               f"(> {manifest['options']['max_docs_effective']} documents), {c['walk_starts']:,} walk starts; "
               f"{c['edges']:,} edges; sources: model {src['llm_share']:.1%} of concepts "
               f"({src['llm_grounded']:,} of {src['llm_parsed']:,} model concepts grounded), text "
               f"{src['text_share']:.1%}; graph {manifest['graph_sha256'][:12]} in {manifest['elapsed_s']:.1f} s")


def _corpus_files(source: str) -> tuple[str, list[Path]]:
    manifest_path, manifest = read_manifest(source, source, "manifest.json (run `generation merge` on a sharded output first)")
    try:
        return manifest.get("recipe", str(source)), [manifest_path.parent / f["path"] for f in manifest["files"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise SynthscaleError(f"{manifest_path}: not a `generation run` manifest ({type(exc).__name__}: {exc})") from None


@click.command("diversity", cls=StageCommand)
@click.argument("corpora", nargs=-1, required=True)
@click.option("--level3", default=None, help="The corpus to test as most diverse (default: the synthllm-l3 one).")
@click.option("--max-tokens", type=COUNT, default=1_000_000, show_default=True, help="Cap of the distinct-n budget.")
@click.option("--output", default=None, type=click.Path(dir_okay=False),
              help="Write the comparison (the document --json prints) to this JSON file.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON on stdout instead of the table.")
def diversity_command(corpora, level3, max_tokens, output, as_json) -> None:
    """Compare the diversity of SynthLLM corpora (output directories of `generation run`, merged):
    distinct concepts and pairs, combinations spanning documents, documents cited, distinct-1/2/3 at
    one token budget (the smallest corpus). Says whether level 3 is above each other level, metric
    by metric: the paper's claim, on your data. The comparison is this command's product: `--output`
    writes it (there is no --json-file: it would write the same file).

    \b
    Example:
      generation diversity synth/l1 synth/l2 synth/l3 --output synth/diversity.json
      generation diversity synth/l1 synth/l3 --level3 synthllm-l3 --max-tokens 200K --json
    """
    from synthscale.provenance import provenance

    from generation.synthllm.diversity import compare

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
    emit_json(result, as_json, output)
    if as_json:
        return
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
