"""The Megatron-Bridge YAML for each of the six paper shapes carries the paper's values, field by field.

Megatron-Bridge cannot be installed here (Python 3.12, CUDA, Transformer Engine), so the field
names are checked two ways: those Bridge inherits from megatron-core against megatron-core's own
dataclasses (installed), and Bridge's own additions against the lists below, read from
Megatron-Bridge v0.6.0 (src/megatron/bridge/models/gpt_provider.py, training/config.py,
data/base.py) and Megatron-LM's megatron/training/config (the commit Bridge v0.6.0 pins).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import yaml

from tests.recipes.helpers import paper_blend
from data_prep.blend_spec import BlendSpec
from recipes.bridge_config import write_bridge_configs
from recipes.parallelism import plan_layout
from recipes.recipe import PAPER
from recipes.run_spec import RunSpec
from recipes.shapes import PAPER_SHAPES

GPT_PROVIDER_FIELDS = {
    "share_embeddings_and_output_weights", "make_vocab_size_divisible_by", "position_embedding_type",
    "rotary_base", "rotary_percent", "seq_length", "vocab_size", "should_pad_vocab",
}
DATALOADER_FIELDS = {"dataloader_type", "num_workers", "data_sharding", "pin_memory", "drop_last", "persistent_workers"}
BRIDGE_DATASET_FIELDS = {"seq_length", "skip_getting_attention_mask_from_dataset", "data_path"} | DATALOADER_FIELDS
MTRAIN_FIELDS = {
    "train": {"train_iters", "global_batch_size", "micro_batch_size", "exit_signal_handler", "manual_gc", "manual_gc_interval"},
    "validation": {"eval_iters", "eval_interval", "skip_train", "eval_global_batch_size", "eval_micro_batch_size"},
    "scheduler": {"lr_decay_style", "lr_warmup_iters", "lr_warmup_init", "lr_decay_iters", "start_weight_decay",
                  "end_weight_decay", "weight_decay_incr_style", "override_opt_param_scheduler"},
    "logger": {"log_interval", "tensorboard_dir", "log_throughput"},
    "checkpoint": {"save", "load", "save_interval", "ckpt_format", "fully_parallel_save", "save_optim", "save_rng",
                   "load_optim", "load_rng", "exit_on_missing_checkpoint", "ckpt_step"},
    "tokenizer": {"tokenizer_type", "vocab_size", "null_tokenizer_eod_id", "use_tokenizer_vocab_size"},
    "rng": {"seed"},
    "dist": set(),
}
D = 5_000_000_000
# The class of each ConfigContainer section, written here from Megatron-Bridge v0.6.0
# (src/megatron/bridge/training/config.py, ConfigContainer's field annotations). `from_yaml` resolves
# a `_target_` by importing its module and reading the attribute, so each is named where that module
# exposes it: ValidationConfig and RNGConfig are megatron.training.config's and TokenizerConfig is
# megatron.bridge.training.tokenizers.config's, all three imported into megatron.bridge.training.config.
BRIDGE_CONFIG = "megatron.bridge.training.config."
BRIDGE_CLASSES = {
    "model": "megatron.bridge.models.gpt_provider.GPTModelProvider",
    "train": BRIDGE_CONFIG + "TrainingConfig",
    "validation": BRIDGE_CONFIG + "ValidationConfig",
    "optimizer": BRIDGE_CONFIG + "OptimizerConfig",
    "scheduler": BRIDGE_CONFIG + "SchedulerConfig",
    "ddp": BRIDGE_CONFIG + "DistributedDataParallelConfig",
    "dataset": BRIDGE_CONFIG + "GPTDatasetConfig",
    "logger": BRIDGE_CONFIG + "LoggerConfig",
    "tokenizer": BRIDGE_CONFIG + "TokenizerConfig",
    "checkpoint": BRIDGE_CONFIG + "CheckpointConfig",
    "rng": BRIDGE_CONFIG + "RNGConfig",
    "dist": BRIDGE_CONFIG + "DistributedInitConfig",
}
# ConfigContainer's fields with no default (v0.6.0): a YAML missing one cannot be loaded.
REQUIRED_SECTIONS = {"train", "model", "optimizer", "scheduler", "dataset", "logger", "tokenizer", "checkpoint"}


@pytest.fixture(scope="module")
def paper_runs(workspace, tmp_path_factory):
    root = tmp_path_factory.mktemp("bridge_yaml")
    blend = BlendSpec.load(paper_blend(root / "hq_33.yaml", root / "data"))
    runs = {}
    for name, shape in PAPER_SHAPES.items():
        layout = plan_layout(shape, PAPER, gpus_per_node=8).to_dict()
        spec = RunSpec.create(shape=shape, recipe=PAPER, tokens=D, blend=blend, backend="bridge",
                              eval_domains={"wiki": workspace.prefixes["eval_wiki"]}, layout=layout)
        run_dir = root / "runs" / spec.run_id
        paths = write_bridge_configs(spec, blend, run_dir)
        loaded = {key: yaml.safe_load(path.read_text()) for key, path in paths.items()}
        runs[name] = (spec, blend, run_dir, loaded)
    return runs


@pytest.mark.parametrize("name", list(PAPER_SHAPES))
def test_training_yaml_carries_the_paper_values(paper_runs, name):
    spec, blend, run_dir, configs = paper_runs[name]
    shape, cfg = PAPER_SHAPES[name], configs["train"]
    assert cfg["_target_"] == "megatron.bridge.training.config.ConfigContainer"

    model = cfg["model"]
    assert model["_target_"] == "megatron.bridge.models.gpt_provider.GPTModelProvider"
    assert (model["num_layers"], model["hidden_size"], model["num_attention_heads"]) == (
        shape.num_layers, shape.d_model, shape.num_heads)
    assert model["kv_channels"] == 64 and model["num_query_groups"] == shape.num_heads
    assert model["ffn_hidden_size"] == shape.ffn
    assert model["normalization"] == "RMSNorm" and model["gated_linear_unit"] is True
    assert model["activation_func"] == {"_target_": "torch.nn.functional.silu", "_call_": False}
    assert model["add_bias_linear"] is False and model["add_qkv_bias"] is False
    assert model["position_embedding_type"] == "rope" and model["rotary_base"] == 500000.0
    assert model["share_embeddings_and_output_weights"] is False
    assert model["vocab_size"] == 128256 and model["should_pad_vocab"] is False
    assert model["seq_length"] == 4096
    assert model["bf16"] is True and model["params_dtype"] == {"_target_": "torch.bfloat16", "_call_": False}
    assert cfg["mixed_precision"] == "bf16_mixed"

    iters = D // (256 * 4096)
    train = cfg["train"]
    assert (train["train_iters"], train["global_batch_size"], train["micro_batch_size"]) == (iters, 256, 1)

    opt = cfg["optimizer"]
    assert opt["optimizer"] == "adam" and opt["lr"] == 3e-4
    assert math.isclose(opt["min_lr"], 3e-4 * 1e-6)
    assert (opt["adam_beta1"], opt["adam_beta2"], opt["weight_decay"], opt["clip_grad"]) == (0.9, 0.95, 0.1, 1.0)

    sched = cfg["scheduler"]
    assert sched["lr_decay_style"] == "cosine"
    assert sched["lr_warmup_iters"] == round(0.1 * iters) and sched["lr_decay_iters"] == iters
    assert sched["start_weight_decay"] == sched["end_weight_decay"] == 0.1

    data = cfg["dataset"]
    assert data["seq_length"] == 4096
    weights, prefixes = blend.data_path[0::2], blend.data_path[1::2]
    assert data["blend"] == [prefixes, weights]
    assert data["split"] == "100,0,0"
    assert cfg["tokenizer"]["vocab_size"] + 1 == 128256  # NullTokenizer adds the EOD entry

    layout = spec.layout
    assert model["tensor_model_parallel_size"] == layout["tensor_parallel"] == 1
    assert model["pipeline_model_parallel_size"] == layout["pipeline_parallel"] == (2 if name == "3B" else 1)
    if name == "3B":
        assert model["pipeline_dtype"] == {"_target_": "torch.bfloat16", "_call_": False}
    assert cfg["checkpoint"]["save"] == cfg["checkpoint"]["load"] == str(run_dir.resolve() / "checkpoints")


def _nested_configs(node, path="cfg"):
    if isinstance(node, dict):
        if "_target_" in node and node.get("_call_", True):
            yield path, node
        for key, value in node.items():
            yield from _nested_configs(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _nested_configs(value, f"{path}[{i}]")


def _resolved(node):
    """A section's values as Python objects: `{_target_: torch.x, _call_: false}` becomes torch.x."""
    import importlib

    if isinstance(node, dict) and node.get("_call_") is False:
        module, _, name = node["_target_"].rpartition(".")
        return getattr(importlib.import_module(module), name)
    return node


def test_every_section_names_bridges_class_and_only_fields_it_has(paper_runs):
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig
    from megatron.core.distributed import DistributedDataParallelConfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.optimizer import OptimizerConfig
    from megatron.core.transformer.transformer_config import TransformerConfig

    def names(cls):
        return {f.name for f in dataclasses.fields(cls)}

    mcore = {
        "model": names(TransformerConfig) | GPT_PROVIDER_FIELDS,
        "optimizer": names(OptimizerConfig),
        "ddp": names(DistributedDataParallelConfig),
        "dataset": names(GPTDatasetConfig) | BRIDGE_DATASET_FIELDS,
    }
    allowed = {**MTRAIN_FIELDS, **mcore}
    for _, _, _, configs in paper_runs.values():
        for cfg in configs.values():
            assert cfg["_target_"] == BRIDGE_CONFIG + "ConfigContainer"
            sections = {k for k in cfg if k not in ("_target_", "mixed_precision")}
            assert REQUIRED_SECTIONS <= sections <= set(BRIDGE_CLASSES), sections
            for section in sections:
                node = cfg[section]
                assert node["_target_"] == BRIDGE_CLASSES[section], section
                unknown = set(node) - {"_target_"} - allowed[section]
                assert not unknown, f"{section}: fields not in the Bridge/megatron-core config: {unknown}"
            for path, node in _nested_configs(cfg):
                assert node["_target_"].startswith(("megatron.bridge.", "torch.")), path


def test_the_sections_megatron_core_defines_instantiate_there(paper_runs):
    """Bridge's optimizer and DDP configs are megatron-core's (their checks deferred to finalize()), and
    its model provider is a TransformerConfig: megatron-core's own classes take these sections' values."""
    from megatron.core.distributed import DistributedDataParallelConfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.optimizer import OptimizerConfig
    from megatron.core.transformer.transformer_config import TransformerConfig

    for name in ("1B", "3B"):
        _, _, _, configs = paper_runs[name]
        cfg = configs["train"]
        values = {section: {k: _resolved(v) for k, v in cfg[section].items() if k != "_target_"}
                  for section in ("optimizer", "ddp", "model")}
        optimizer = OptimizerConfig(**values["optimizer"])
        assert (optimizer.lr, optimizer.weight_decay, optimizer.clip_grad) == (3e-4, 0.1, 1.0)
        DistributedDataParallelConfig(**values["ddp"])
        model = {k: v for k, v in values["model"].items() if k not in GPT_PROVIDER_FIELDS}
        assert model.pop("apply_rope_fusion") is True  # Transformer Engine's fused RoPE: checked only with TE
        transformer = TransformerConfig(**model)
        assert transformer.activation_func is torch_silu() and transformer.params_dtype is torch_bf16()
        assert transformer.num_layers == PAPER_SHAPES[name].num_layers


def torch_silu():
    import torch

    return torch.nn.functional.silu


def torch_bf16():
    import torch

    return torch.bfloat16


def test_eval_yaml_scores_the_final_checkpoint_on_the_domain(paper_runs, workspace):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    spec, _, run_dir, configs = paper_runs["3B"]
    cfg = configs["eval_wiki"]
    prefix = workspace.prefixes["eval_wiki"]
    dataset = IndexedDataset(prefix)  # keep it alive while reading its memory map
    tokens = int(dataset.sequence_lengths.sum())
    eval_batch = 1 * spec.layout["data_parallel"]  # micro batch x DP
    assert cfg["validation"]["skip_train"] is True
    assert cfg["validation"]["eval_global_batch_size"] == eval_batch == 4
    samples = (tokens - 1) // 4096  # 10 windows: rounded down to a multiple of 8, the largest power of two held
    assert samples == 10 and cfg["validation"]["eval_iters"] * eval_batch == 8
    assert cfg["dataset"]["blend"] is None
    assert cfg["dataset"]["blend_per_split"] == [None, None, [[prefix], None]]
    assert cfg["checkpoint"]["load"] == str(run_dir.resolve() / "checkpoints") and cfg["checkpoint"]["save"] is None
    assert cfg["checkpoint"]["load_optim"] is False
    assert cfg["model"] == configs["train"]["model"]  # the same model


def test_training_dataset_section_builds_in_megatron_core(paper_runs, workspace, tmp_path):
    """The dataset section, given to megatron-core's GPTDatasetConfig, validates (blend, split)."""
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

    from data_prep.megatron_blend import BlendTokenizer

    _, _, _, configs = paper_runs["1B"]
    data = dict(configs["train"]["dataset"])
    for key in ("_target_",) + tuple(BRIDGE_DATASET_FIELDS):
        data.pop(key, None)
    config = GPTDatasetConfig(sequence_length=4096, tokenizer=BlendTokenizer(128256, 128001, "llama3", "x"), **data)
    assert config.split_matrix[0] == (0, 1.0)
    assert list(config.blend[0]) == data["blend"][0]


def test_eval_dataset_section_builds_the_domain_test_split(paper_runs, workspace):
    """megatron-core builds the eval YAML's dataset: no train split, the domain as the test split,
    enough 4096-token windows for eval_iters x eval_global_batch_size."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    from data_prep.megatron_blend import BlendTokenizer

    _, _, _, configs = paper_runs["1B"]
    cfg = configs["eval_wiki"]
    data = {k: v for k, v in cfg["dataset"].items() if k != "_target_" and k not in BRIDGE_DATASET_FIELDS}
    config = GPTDatasetConfig(sequence_length=4096, tokenizer=BlendTokenizer(300, 0, "hf", "x"), **data)
    samples = cfg["validation"]["eval_iters"] * cfg["validation"]["eval_global_batch_size"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, valid, test = BlendedMegatronDatasetBuilder(GPTDataset, [0, 0, samples], lambda: True, config).build()
    assert train is None and valid is None
    assert len(test) >= samples and test[0]["tokens"].shape[0] == 4096


def test_eval_yaml_and_the_cpu_backend_score_the_same_windows(paper_runs, workspace, tmp_path):
    """The eval YAML's test split, built by megatron-core as Bridge builds it, gives exactly the
    windows the CPU backend scores (recipes.evaluation), whatever the run's training seed."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    from recipes.evaluation import EVAL_SEED, domain_windows

    _, _, _, configs = paper_runs["1B"]
    cfg = configs["eval_wiki"]
    data = {k: v for k, v in cfg["dataset"].items() if k != "_target_" and k not in BRIDGE_DATASET_FIELDS}
    assert data["random_seed"] == EVAL_SEED
    data["path_to_cache"] = str(tmp_path / "bridge_cache")

    class NullTokenizerLike:  # Bridge's NullTokenizer: no pad id, so nothing is masked
        vocab_size, eod, unique_identifiers = 300, 0, {"class": "null"}

    config = GPTDatasetConfig(sequence_length=4096, tokenizer=NullTokenizerLike(), **data)
    samples = cfg["validation"]["eval_iters"] * cfg["validation"]["eval_global_batch_size"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, _, test = BlendedMegatronDatasetBuilder(GPTDataset, [0, 0, samples], lambda: True, config).build()
    bridge = [[*test[i]["tokens"].tolist(), int(test[i]["labels"][-1])] for i in range(samples)]
    cpu = domain_windows(workspace.prefixes["eval_wiki"], 4096, None, tmp_path / "cpu_cache")
    assert cpu.tolist() == bridge and len(bridge) == 8


def test_dataset_index_caches_go_to_the_run_folder(paper_runs, workspace, tmp_path):
    import shutil

    from recipes.evaluation import domain_windows

    _, _, run_dir, configs = paper_runs["1B"]
    for cfg in configs.values():
        assert cfg["dataset"]["path_to_cache"] == str(run_dir.resolve() / "dataset_cache")
    data = tmp_path / "readonly"
    data.mkdir()
    for suffix in (".bin", ".idx"):
        shutil.copy(workspace.prefixes["eval_news"] + suffix, data / f"news{suffix}")
    before = sorted(p.name for p in data.rglob("*"))
    domain_windows(str(data / "news"), 64, None, tmp_path / "run" / "dataset_cache")
    assert sorted(p.name for p in data.rglob("*")) == before  # nothing written beside the data
    assert any((tmp_path / "run" / "dataset_cache").iterdir())
