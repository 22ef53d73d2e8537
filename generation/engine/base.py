"""What the run loop asks of a generation backend: `Request`, `Result` and the `Backend` interface.

A backend takes `Request`s (a rendered prompt as token ids, its sampling settings and seed) and
gives back `Result`s (the completion, or the reason it failed). The run loop drives every
backend the same way: `submit()` requests while `inflight` is below `max_inflight`, and `poll()`
for finished results (it blocks until at least one is ready).

The two implementations, each in a module of its own (`generation.engine.make_backend` picks one):
  generation/engine/vllm_engine.py    `VLLMBackend`: vLLM's offline engine in this process
  generation/engine/openai_client.py  `OpenAIBackend`: any OpenAI-compatible server over HTTP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
