"""generation: synthetic pre-training corpora from natural documents (Kang et al. 2025).

`generation run` rephrases JSONL documents with an instruct model, through vLLM in-process or
any OpenAI-compatible server, with the paper's three recipes (`hq`, `qa`, `textbook`) or your own
(recipes are data: generation/text/prompt_sets/paper.yaml). Output: sharded JSONL + manifest.json that
`data_prep tokenize` reads. See `generation --help`.

Subpackages, from the commands down (each imports only the ones below it; .importlinter checks it):
  cli.py, cli_synthllm.py  the `generation` command (click); `python -m generation`
  run/       the run loop and around it: config, chunking, work plan, store, manifest, merge, submit
  synthllm/  SynthLLM (docs/synthllm.md): concepts, the concept graph, level-2/3 sources, diversity
  text/      recipes and prompts (text/prompt_sets/*.yaml), chat rendering, filters, fidelity
  models/    the generator's identity, GGUF conversion
  engine/    the backends: vLLM in this process, an OpenAI-compatible server; the KV cache plan
  corpus/    source documents (byte-range shards), generation outputs found by their manifests

This package talks to the other stages only through files; it imports only the shared core.
"""

__all__ = ["RunConfig", "run"]


def __getattr__(name):  # lazy: `import generation` stays cheap
    if name == "RunConfig":
        from generation.run.config import RunConfig

        return RunConfig
    if name == "run":
        from generation.run.loop import run

        return run
    raise AttributeError(name)
