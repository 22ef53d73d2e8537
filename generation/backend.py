"""What the run loop asks of a generation backend, and which backend a `RunConfig` gets.

A backend takes `Request`s (a rendered prompt as token ids, its sampling settings and seed) and
gives back `Result`s (the completion, or the reason it failed). The run loop drives every
backend the same way: `submit()` requests while `inflight` is below `max_inflight`, and `poll()`
for finished results (it blocks until at least one is ready).

The two implementations, each in a module of its own:
  generation/backend_vllm.py    `VLLMBackend`: vLLM's offline engine in this process
  generation/backend_openai.py  `OpenAIBackend`: any OpenAI-compatible server over HTTP

vllm and httpx are imported lazily: `generation --help` does not pay for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from synthscale.errors import SynthscaleError

if TYPE_CHECKING:
    from generation.run_config import RunConfig, RunSettings


@dataclass
class Request:
    key: str
    messages: list[dict]
    prompt_token_ids: list[int]
    max_tokens: int
    seed: int
    temperature: float
    top_p: float
    tag: Any = None  # opaque, returned with the result
    repetition_penalty: float | None = None  # vLLM's; None: the engine's default (off)
    frequency_penalty: float | None = None  # OpenAI's and vLLM's; None: the engine's default (off)

    def penalties(self) -> dict:
        """The penalties set on this request (none: the engine's defaults)."""
        return {name: value for name, value in (("repetition_penalty", self.repetition_penalty),
                                                ("frequency_penalty", self.frequency_penalty)) if value is not None}


@dataclass
class Result:
    request: Request
    text: str = ""
    output_tokens: int = 0
    prompt_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None  # reason code when the request failed
    detail: str = ""
    retryable: bool = False
    attempts: int = 1


class Backend:
    """The interface; see the module docstring for how the run loop uses it."""

    name = "base"
    model: str = ""
    tokenizer: Any = None
    max_model_len: int | None = None
    max_inflight: int = 1

    @property
    def inflight(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def submit(self, request: Request) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def poll(self) -> list[Result]:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model, "max_model_len": self.max_model_len}

    def close(self) -> None:
        pass


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


def make_backend(config: RunConfig, settings: RunSettings | None = None) -> Backend:
    """The backend `config.backend` names (`vllm` or `openai`), built from the config's settings
    (`settings`, when given, tells the vllm backend how long the run's sequences can get)."""
    c = config
    problem = backend_problem(c.backend, c.base_url, c.batch_invariant)
    if problem:
        raise SynthscaleError(problem)
    if c.backend == "vllm":
        from generation.backend_vllm import VLLMBackend

        return VLLMBackend(
            model=c.model, tokenizer=c.tokenizer, tensor_parallel_size=c.tensor_parallel_size,
            dtype=c.dtype, max_model_len=c.max_model_len, seed=c.seed,
            max_inflight=c.max_inflight, engine_kwargs=c.engine_kwargs,
            context_tokens=settings.context_tokens() if settings is not None else None,
            batch_invariant=c.batch_invariant,
        )
    from generation.backend_openai import OpenAIBackend, load_hf_tokenizer

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
