"""`OpenAIBackend`: any OpenAI-compatible server (vLLM, SGLang, ...) over HTTP.

Requests go to `/v1/chat/completions` from an asyncio loop in a background thread, up to
`concurrency` at a time, with a timeout per attempt and retries with exponential backoff on
transient errors (see `OpenAIBackend`). The server gets the chat messages; the run loop still
renders them with the generator's own tokenizer (`load_hf_tokenizer` loads it) to count prompt
tokens and clip `max_tokens` to the model's context.

httpx and transformers are imported only when a backend is built: `generation --help` does not
pay for them.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import threading
from typing import Any

from synthscale.errors import SynthscaleError

from generation.engine.base import Backend, Request, Result

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class ServerError(SynthscaleError, ConnectionError):
    """The server at --base-url cannot be reached, or does not serve --model."""


def load_hf_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


class OpenAIBackend(Backend):
    """Any OpenAI-compatible server (vLLM, SGLang, ...) over HTTP, `/v1/chat/completions`.

    Up to `concurrency` requests in flight; each request gets `timeout` seconds per attempt and
    up to `retries` retries on connection errors, timeouts, 408/429/5xx, with exponential backoff
    (base `backoff` seconds, doubled per attempt, jittered, capped at `max_backoff`). Other HTTP
    errors (400: prompt too long for the server, ...) fail the request at once.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        tokenizer: Any,
        api_key: str | None = None,
        concurrency: int = 64,
        timeout: float = 600.0,
        retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        max_model_len: int | None = None,
        check_server: bool = True,
    ):
        import httpx

        self._httpx = httpx
        url = base_url.rstrip("/")
        if not url.endswith("/v1"):
            url = url + "/v1"
        self.base_url = url
        self.model = model
        self.tokenizer = tokenizer
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.concurrency = max(1, int(concurrency))
        self.max_inflight = self.concurrency
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_model_len = max_model_len
        self._results: queue.Queue[Result] = queue.Queue()
        self._inflight = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="generation-http", daemon=True)
        self._thread.start()
        self._client = self._call(self._make_client())
        self.server_info: dict = {}
        if check_server:
            try:
                self._check_server()
            except BaseException:
                self.close()
                raise

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _make_client(self):
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = self._httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        return self._httpx.AsyncClient(base_url=self.base_url, headers=headers, limits=limits,
                                       timeout=self._httpx.Timeout(self.timeout, connect=min(self.timeout, 30.0)))

    def _check_server(self) -> None:
        """GET /v1/models: the server is up and serves `model` (and, from vLLM, its max_model_len)."""

        async def fetch():
            last_exc: Exception | None = None
            for attempt in range(self.retries + 1):
                try:
                    response = await self._client.get("/models")
                    if response.status_code in RETRYABLE_STATUS:
                        raise RuntimeError(f"HTTP {response.status_code}")
                    return response
                except Exception as exc:
                    last_exc = exc
                    await asyncio.sleep(self._delay(attempt))
            raise ServerError(f"cannot reach {self.base_url}/models: {last_exc}")

        response = self._call(fetch())
        if response.status_code != 200:
            raise ServerError(f"{self.base_url}/models answered HTTP {response.status_code}: {response.text[:300]}")
        models = response.json().get("data", [])
        ids = [m.get("id") for m in models]
        match = [m for m in models if m.get("id") == self.model]
        if not match:
            raise ServerError(f"the server at {self.base_url} does not serve model {self.model!r}; it serves {ids}")
        self.server_info = match[0]
        if self.max_model_len is None and match[0].get("max_model_len"):
            self.max_model_len = int(match[0]["max_model_len"])

    def _delay(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff * (2**attempt)) * (0.5 + random.random() / 2)

    @property
    def inflight(self) -> int:
        return self._inflight

    def payload(self, request: Request) -> dict:
        return {
            "model": self.model,
            "messages": request.messages,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
            "seed": request.seed,
            "n": 1,
            "stream": False,
            **request.penalties(),  # repetition_penalty: a vLLM server extension of the API
        }

    async def _one(self, request: Request) -> Result:
        httpx = self._httpx
        last = ("server_error", "", True)
        attempts = 0
        for attempt in range(self.retries + 1):
            attempts = attempt + 1
            try:
                response = await self._client.post("/chat/completions", json=self.payload(request))
            except httpx.TimeoutException as exc:
                last = ("timeout", f"{type(exc).__name__}: {exc}", True)
            except httpx.HTTPError as exc:
                last = ("connection_error", f"{type(exc).__name__}: {exc}", True)
            else:
                if response.status_code == 200:
                    try:
                        body = response.json()
                        choice = body["choices"][0]
                        text = (choice.get("message") or {}).get("content") or ""
                        usage = body.get("usage") or {}
                        return Result(
                            request,
                            text=text,
                            output_tokens=int(usage.get("completion_tokens") or 0),
                            prompt_tokens=int(usage.get("prompt_tokens") or len(request.prompt_token_ids)),
                            finish_reason=choice.get("finish_reason"),
                            attempts=attempts,
                        )
                    except (ValueError, KeyError, IndexError, TypeError) as exc:
                        last = ("bad_response", f"{type(exc).__name__}: {exc}: {response.text[:300]}", True)
                elif response.status_code in RETRYABLE_STATUS:
                    last = (f"http_{response.status_code}", response.text[:1000], True)
                else:
                    return Result(request, error=f"http_{response.status_code}", detail=response.text[:2000],
                                  retryable=False, attempts=attempts, prompt_tokens=len(request.prompt_token_ids))
            if attempt < self.retries:
                await asyncio.sleep(self._delay(attempt))
        reason, detail, retryable = last
        return Result(request, error=reason, detail=f"after {attempts} attempts: {detail}"[:2000],
                      retryable=retryable, attempts=attempts, prompt_tokens=len(request.prompt_token_ids))

    async def _run(self, request: Request) -> None:
        try:
            result = await self._one(request)
        except Exception as exc:  # never lose a request: report it as failed
            result = Result(request, error="client_error", detail=f"{type(exc).__name__}: {exc}", retryable=True)
        self._results.put(result)

    def submit(self, request: Request) -> None:
        self._inflight += 1
        asyncio.run_coroutine_threadsafe(self._run(request), self._loop)

    def poll(self) -> list[Result]:
        if self._inflight == 0:
            return []
        out = [self._results.get()]
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                break
        self._inflight -= len(out)
        return out

    def describe(self) -> dict:
        info = super().describe()
        info["base_url"] = self.base_url
        info["concurrency"] = self.concurrency
        return info

    def close(self) -> None:
        if self._loop.is_closed():
            return

        async def shutdown():
            await self._client.aclose()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        try:
            self._call(shutdown())
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
