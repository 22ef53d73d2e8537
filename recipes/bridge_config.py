"""Megatron-Bridge `ConfigContainer` YAML for a run, written by plain Python (no Bridge import).

`ConfigContainer.from_yaml(path)` (Megatron-Bridge 0.6, in `nvcr.io/nvidia/nemo:26.08`) reads a
mapping whose every nested config carries `_target_`, the class to instantiate; fields left
out keep the class defaults. Functions and dtypes are `{_target_: ..., _call_: false}`.
Targets point at names that `megatron.bridge.training.config` exports (re-exports included),
so they resolve across Bridge versions.

Two kinds of file per run:
  - `bridge/train.yaml`: the pretraining run (the paper's model, optimizer, schedule, batch,
    sequence length, the blend's data_path as the dataset blend, checkpoints, logging);
  - `bridge/eval_<domain>.yaml`: the same model loaded from the final checkpoint (`ckpt_step`),
    training skipped, the domain's evaluation set as the test split (recipes.evaluation: the
    windows the megatron-core backend scores too).
Both put megatron-core's dataset index caches in `RUN/dataset_cache` (`path_to_cache`).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from data_prep.blend_spec import BlendSpec
from recipes.evaluation import CACHE_DIR, EVAL_SAMPLE_MULTIPLE, EVAL_SEED, eval_samples
from recipes.run_spec import RunSpec
from synthscale.errors import SynthscaleError
from synthscale.files import write_text_atomic

CONFIG = "megatron.bridge.training.config."
TARGETS = {
    "container": CONFIG + "ConfigContainer",
    "model": "megatron.bridge.models.gpt_provider.GPTModelProvider",
    "train": CONFIG + "TrainingConfig",
    "validation": CONFIG + "ValidationConfig",
    "optimizer": CONFIG + "OptimizerConfig",
    "scheduler": CONFIG + "SchedulerConfig",
    "ddp": CONFIG + "DistributedDataParallelConfig",
    "dataset": CONFIG + "GPTDatasetConfig",
    "logger": CONFIG + "LoggerConfig",
    "tokenizer": CONFIG + "TokenizerConfig",
    "checkpoint": CONFIG + "CheckpointConfig",
    "rng": CONFIG + "RNGConfig",
    "dist": CONFIG + "DistributedInitConfig",
}
SILU = {"_target_": "torch.nn.functional.silu", "_call_": False}
DTYPES = {"bf16": "torch.bfloat16", "fp32": "torch.float32"}


def _dtype(precision: str) -> dict:
    return {"_target_": DTYPES[precision], "_call_": False}


def bridge_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "bridge"


def _model(spec: RunSpec, vocab_size: int) -> dict:
    shape, recipe, layout = spec.shape, spec.recipe, spec.layout or {}
    pp = layout.get("pipeline_parallel", 1)
    bf16 = recipe.precision == "bf16"
    return {
        "_target_": TARGETS["model"],
        # shape (Table 1): Llama-3 style decoder
        "num_layers": shape.num_layers,
        "hidden_size": shape.d_model,
        "num_attention_heads": shape.num_heads,
        "num_query_groups": shape.query_groups,
        "kv_channels": shape.head_dim,
        "ffn_hidden_size": shape.ffn,
        "normalization": "RMSNorm",
        "layernorm_epsilon": shape.norm_eps,
        "gated_linear_unit": True,  # SwiGLU
        "activation_func": SILU,
        "add_bias_linear": False,
        "add_qkv_bias": False,
        "position_embedding_type": "rope",
        "rotary_base": shape.rope_theta,
        "rotary_percent": 1.0,
        "share_embeddings_and_output_weights": False,  # untied embeddings
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "init_method_std": shape.init_std,
        "seq_length": recipe.seq_length,
        "vocab_size": vocab_size,
        "should_pad_vocab": False,
        "make_vocab_size_divisible_by": 128,
        # precision
        "bf16": bf16,
        "fp16": False,
        "params_dtype": _dtype(recipe.precision),
        "pipeline_dtype": _dtype(recipe.precision) if pp > 1 else None,
        # parallelism
        "tensor_model_parallel_size": layout.get("tensor_parallel", 1),
        "pipeline_model_parallel_size": pp,
        "context_parallel_size": 1,
        "sequence_parallel": False,
        # Llama kernels, as Bridge's Llama bridge sets them
        "bias_activation_fusion": True,
        "masked_softmax_fusion": True,
        "persist_layer_norm": True,
        "bias_dropout_fusion": True,
        "apply_rope_fusion": True,
        "cross_entropy_loss_fusion": True,
    }


def _tokenizer(blend: BlendSpec) -> dict:
    # The data is already tokenized: the trainer needs only the vocabulary size and the EOD id.
    # NullTokenizer(vocab_size=V-1) reports V entries (it adds one for EOD).
    return {
        "_target_": TARGETS["tokenizer"],
        "tokenizer_type": "NullTokenizer",
        "vocab_size": int(blend.tokenizer["vocab_size"]) - 1,
        "null_tokenizer_eod_id": int(blend.tokenizer["eod_id"]),
        "use_tokenizer_vocab_size": False,
    }


def blend_from_data_path(data_path: list) -> list:
    """Megatron's blend `[[prefix, ...], [weight, ...]]` from `[w1, prefix1, w2, prefix2, ...]`."""
    weights = [float(w) for w in data_path[0::2]]
    prefixes = [str(p) for p in data_path[1::2]]
    return [prefixes, weights]


def _dataset(spec: RunSpec, blend_per_split: list | None, blend: list | None, split: str | None,
             run_dir: Path) -> dict:
    return {
        "_target_": TARGETS["dataset"],
        "seq_length": spec.recipe.seq_length,
        "random_seed": spec.recipe.seed,
        "blend": blend,
        "blend_per_split": blend_per_split,
        "split": split,
        "reset_position_ids": False,
        "reset_attention_mask": False,
        "eod_mask_loss": False,
        "num_dataset_builder_threads": 1,
        "data_sharding": True,
        "dataloader_type": "single",
        "num_workers": 2,
        "skip_getting_attention_mask_from_dataset": True,
        # megatron-core's index caches: in the run folder, built by rank 0 once per run, never
        # beside the data (read-only data folders work, concurrent runs do not race)
        "path_to_cache": str(run_dir / CACHE_DIR),
    }


def _common(spec: RunSpec, blend: BlendSpec, run_dir: Path) -> dict:
    recipe, plan, layout = spec.recipe, spec.plan, spec.layout or {}
    bf16 = recipe.precision == "bf16"
    return {
        "_target_": TARGETS["container"],
        "model": _model(spec, int(blend.tokenizer["vocab_size"])),
        "train": {
            "_target_": TARGETS["train"],
            "train_iters": plan.train_iters,
            "global_batch_size": recipe.global_batch_size,
            "micro_batch_size": layout.get("micro_batch_size", recipe.micro_batch_size),
            "exit_signal_handler": True,
            "manual_gc": True,
            "manual_gc_interval": 100,
        },
        "optimizer": {
            "_target_": TARGETS["optimizer"],
            "optimizer": "adam",  # Megatron's adam is AdamW (decoupled weight decay)
            "lr": recipe.peak_lr,
            "min_lr": recipe.min_lr,
            "weight_decay": recipe.weight_decay,
            "adam_beta1": recipe.adam_beta1,
            "adam_beta2": recipe.adam_beta2,
            "adam_eps": recipe.adam_eps,
            "clip_grad": recipe.clip_grad,
            "bf16": bf16,
            "fp16": False,
            "params_dtype": _dtype(recipe.precision),
            "use_distributed_optimizer": True,
        },
        "scheduler": {
            "_target_": TARGETS["scheduler"],
            "lr_decay_style": "cosine",
            "lr_warmup_iters": plan.warmup_iters,
            "lr_warmup_init": 0.0,
            "lr_decay_iters": plan.train_iters,
            # Bridge's start/end weight decay override optimizer.weight_decay: set them.
            "start_weight_decay": recipe.weight_decay,
            "end_weight_decay": recipe.weight_decay,
            "weight_decay_incr_style": "constant",
            "override_opt_param_scheduler": True,
        },
        "ddp": {
            "_target_": TARGETS["ddp"],
            "use_distributed_optimizer": True,
            "check_for_nan_in_grad": True,
            "grad_reduce_in_fp32": True,
            "overlap_grad_reduce": True,
            "overlap_param_gather": True,
            "average_in_collective": True,
        },
        "tokenizer": _tokenizer(blend),
        "logger": {
            "_target_": TARGETS["logger"],
            "log_interval": 10,
            "tensorboard_dir": str(run_dir / "tensorboard"),
            "log_throughput": True,
        },
        "rng": {"_target_": TARGETS["rng"], "seed": recipe.seed},
        "dist": {"_target_": TARGETS["dist"]},
        "mixed_precision": "bf16_mixed" if bf16 else None,
    }


def training_config(spec: RunSpec, blend: BlendSpec, run_dir: str | Path) -> dict:
    """The pretraining ConfigContainer as a plain dict."""
    run_dir = Path(run_dir).resolve()
    checkpoints = str(run_dir / "checkpoints")
    config = _common(spec, blend, run_dir)
    config["validation"] = {"_target_": TARGETS["validation"], "eval_iters": 0, "eval_interval": None}
    # The whole blend is the training split; evaluation runs per domain afterwards.
    config["dataset"] = _dataset(spec, None, blend_from_data_path(blend.data_path), "100,0,0", run_dir)
    config["checkpoint"] = {
        "_target_": TARGETS["checkpoint"],
        "save": checkpoints,
        "load": checkpoints,  # resume after preemption
        "save_interval": min(spec.recipe.checkpoint_interval, spec.plan.train_iters),
        "ckpt_format": "torch_dist",
        "fully_parallel_save": True,
        "save_optim": True,
        "save_rng": True,
    }
    return config


def eval_batch(samples: int, data_parallel: int, micro_batch_size: int, domain: str) -> tuple[int, int]:
    """(eval_micro_batch_size, eval_global_batch_size) whose global batch divides `samples`, so that
    Bridge scores exactly the domain's evaluation set (recipes.evaluation); the largest micro batch
    up to the training one."""
    for micro in range(micro_batch_size, 0, -1):
        if samples % (micro * data_parallel) == 0:
            return micro, micro * data_parallel
    raise SynthscaleError(
        f"eval domain {domain!r}: its evaluation set has {samples} samples (a multiple of {EVAL_SAMPLE_MULTIPLE}, "
        f"or of a smaller power of two for a small domain), which data_parallel={data_parallel} does not divide; use a data-parallel "
        f"size that divides {samples} (a power of two up to {EVAL_SAMPLE_MULTIPLE}), or another --eval-max-tokens"
    )


def evaluation_config(spec: RunSpec, blend: BlendSpec, run_dir: str | Path, domain: str) -> dict:
    """Score the final checkpoint on one domain: training skipped, the domain as the test split.

    The test split is the domain's evaluation set as recipes.evaluation defines it (the same
    windows the megatron-core backend scores): megatron-core's GPTDataset on the domain alone, random_seed
    EVAL_SEED, and eval_iters x eval_global_batch_size = K samples.
    """
    run_dir = Path(run_dir).resolve()
    prefix = spec.eval_domains[domain]
    layout = spec.layout or {}
    micro = layout.get("micro_batch_size", spec.recipe.micro_batch_size)
    samples = eval_samples(prefix, spec.recipe.seq_length, spec.eval_max_tokens)
    eval_micro, eval_global = eval_batch(samples, layout.get("data_parallel", 1), micro, domain)
    config = _common(spec, blend, run_dir)
    config["validation"] = {
        "_target_": TARGETS["validation"],
        "skip_train": True,
        "eval_iters": samples // eval_global,
        "eval_interval": None,
        "eval_global_batch_size": eval_global,
        "eval_micro_batch_size": eval_micro,
    }
    domain_blend = [[prefix], None]
    config["dataset"] = _dataset(spec, [None, None, domain_blend], None, None, run_dir)
    config["dataset"]["random_seed"] = EVAL_SEED  # the same windows for every run, whatever its seed
    config["checkpoint"] = {
        "_target_": TARGETS["checkpoint"],
        "save": None,
        "load": str(run_dir / "checkpoints"),
        # the final iteration, never an earlier one; bridge_entry checks it exists before this
        # config runs, because Bridge skips loading (and exit_on_missing_checkpoint) when none exists
        "ckpt_step": spec.plan.train_iters,
        "load_optim": False,
        "load_rng": False,
        "ckpt_format": "torch_dist",
        "exit_on_missing_checkpoint": True,
    }
    config["logger"]["tensorboard_dir"] = None
    return config


def dump_yaml(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=1000)


def write_bridge_configs(spec: RunSpec, blend: BlendSpec, run_dir: str | Path) -> dict[str, Path]:
    """Write bridge/train.yaml and bridge/eval_<domain>.yaml; return {name: path}."""
    out_dir = bridge_dir(run_dir)
    header = f"# Megatron-Bridge ConfigContainer for run {spec.run_id} (written by synthscale recipes)\n"
    paths = {"train": out_dir / "train.yaml"}
    write_text_atomic(paths["train"], header + dump_yaml(training_config(spec, blend, run_dir)))
    for domain in spec.eval_domains:
        path = out_dir / f"eval_{domain}.yaml"
        write_text_atomic(path, header + dump_yaml(evaluation_config(spec, blend, run_dir, domain)))
        paths[f"eval_{domain}"] = path
    return paths
