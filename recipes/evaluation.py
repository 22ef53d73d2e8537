"""Per-domain evaluation: the windows every backend scores, and what a score means.

**The evaluation set of a domain** (the same for the megatron-core and the Megatron-Bridge backend):
the first K samples of megatron-core's `GPTDataset` built on the domain alone as the *test*
split (Bridge's `blend_per_split = [None, None, [[PREFIX], None]]`), with `random_seed =
EVAL_SEED` (fixed, so runs with different training seeds score the same windows) and the run's
`seq_length`. Each sample is seq_length + 1 tokens (inputs and next-token labels), megatron-core
draws them from the whole domain (documents shuffled with that seed). K is the number of whole
windows in the domain, (tokens - 1) // seq_length, with tokens capped by `eval_max_tokens`,
rounded down to a multiple of EVAL_SAMPLE_MULTIPLE (64; a domain with fewer windows: to a multiple
of the largest power of two it holds), so that Bridge's evaluation batch (micro batch x data
parallel, a power of two up to 64) divides it: Bridge scores exactly
`eval_iters x eval_global_batch_size = K` samples of the same dataset. The domain's loss is the
mean cross-entropy over every predicted token; the run's `loss` is the mean over domains weighted
by their token counts. results.json records this definition under `eval_windows`.

**The evaluation identity** (`eval_definition`, `eval_identity`): what a score means, per domain:
the domain's data (the sha256 of its .bin and .idx), its windows (`eval_windows_record`) and the
K samples = K x seq_length predicted tokens scored (so `--eval-max-tokens` enters through K). A
domain's location is not part of it. Two runs' scores of a domain compare only when its
definition is the same; `eval_identity` hashes the definition of a set of domains.

megatron-core's index cache for these samples goes to `RUN/dataset_cache`, never beside the data.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np

from data_prep.indexed import count_tokens
from synthscale.errors import SynthscaleError
from synthscale.files import sha256_file

EVAL_SEED = 1234
EVAL_SAMPLE_MULTIPLE = 64
EVAL_METHOD = "megatron-core GPTDataset test split, first K samples"
CACHE_DIR = "dataset_cache"


def eval_windows_record(seq_length: int) -> dict:
    """What results.json says about the windows every domain was scored on."""
    return {"method": EVAL_METHOD, "seed": EVAL_SEED, "seq_length": int(seq_length),
            "sample_multiple": EVAL_SAMPLE_MULTIPLE, "version": 1}


def domain_tokens(prefix: str) -> int:
    """Tokens in an evaluation domain, from its .idx (data_prep.indexed, the one reader)."""
    return count_tokens(prefix, f"eval domain {prefix!r}")


def eval_samples(prefix: str, seq_length: int, max_tokens: int | None = None) -> int:
    """K: the number of samples a domain is scored on (see the module docstring)."""
    tokens = domain_tokens(prefix)
    if max_tokens is not None:
        tokens = min(tokens, max_tokens)
    windows = max(0, (tokens - 1) // seq_length)
    multiple = min(EVAL_SAMPLE_MULTIPLE, 1 << (windows.bit_length() - 1)) if windows else 1
    windows -= windows % multiple
    if windows < 1:
        raise SynthscaleError(f"eval domain {prefix}: {tokens} tokens, fewer than one window of seq_length {seq_length} + 1")
    return windows


def domain_data_identity(prefix: str) -> dict:
    """{bin_sha256, idx_sha256} of an evaluation domain's tokens: from PREFIX.manifest.json (data_prep
    writes both hashes) when its idx_sha256 is the .idx's, else hashed here."""
    bin_path, idx_path = Path(prefix + ".bin"), Path(prefix + ".idx")
    stat = bin_path.stat()
    return dict(_data_identity(prefix, stat.st_size, stat.st_mtime_ns, idx_path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=256)
def _data_identity(prefix: str, bin_size: int, bin_mtime: int, idx_mtime: int) -> tuple:
    idx_sha = sha256_file(prefix + ".idx")
    manifest = Path(prefix + ".manifest.json")
    recorded = {}
    if manifest.is_file():
        with contextlib.suppress(ValueError, OSError):
            recorded = json.loads(manifest.read_text(encoding="utf-8"))
    if recorded.get("idx_sha256") == idx_sha and recorded.get("bin_sha256"):
        bin_sha = recorded["bin_sha256"]
    else:
        bin_sha = sha256_file(prefix + ".bin")
    return (("bin_sha256", bin_sha), ("idx_sha256", idx_sha))


def domain_definition(prefix: str, seq_length: int, max_tokens: int | None = None) -> dict:
    """What a score of this domain means: its data, its windows and the samples and tokens scored."""
    samples = eval_samples(prefix, seq_length, max_tokens)
    return {"data": domain_data_identity(prefix), "windows": eval_windows_record(seq_length),
            "samples": samples, "tokens": samples * int(seq_length)}


def eval_definition(domains: dict[str, str], seq_length: int, max_tokens: int | None = None) -> dict:
    """{domain: domain_definition} for a run's evaluation domains ({name: prefix})."""
    return {name: domain_definition(prefix, seq_length, max_tokens) for name, prefix in sorted(domains.items())}


def eval_identity(definition: dict, domains=None) -> str:
    """sha256 of the definition of `domains` (default: all of them), canonical JSON."""
    names = sorted(definition if domains is None else domains)
    missing = [name for name in names if name not in definition]
    if missing:
        raise ValueError(f"no evaluation definition for domains {missing}")
    text = json.dumps({name: definition[name] for name in names}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class _IndexTokenizer:
    """The data is tokenized already: the sample indices need no tokenizer, and with no pad id
    megatron-core masks nothing (as with Bridge's NullTokenizer)."""

    vocab_size = 1
    eod = -1
    unique_identifiers = {"class": "synthscale.eval"}


def eval_dataset_config(prefix: str, seq_length: int, cache_dir: str | Path | None):
    """megatron-core's config for the domain's test split: what Bridge's eval YAML asks for."""
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

    return GPTDatasetConfig(
        random_seed=EVAL_SEED,
        sequence_length=seq_length,
        blend_per_split=[None, None, ([prefix], None)],
        tokenizer=_IndexTokenizer(),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        path_to_cache=str(cache_dir) if cache_dir else None,
    )


def domain_windows(prefix: str, seq_length: int, max_tokens: int | None = None,
                   cache_dir: str | Path | None = None) -> np.ndarray:
    """(K, seq_length + 1) int64 array: the domain's evaluation samples, in dataset order."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset

    samples = eval_samples(prefix, seq_length, max_tokens)
    config = eval_dataset_config(prefix, seq_length, cache_dir)
    logger = logging.getLogger("megatron.core")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # the tokenizer's pad is its eod on purpose: nothing is masked (as Bridge's NullTokenizer)
            warnings.filterwarnings("ignore", message="The pad token id in the tokenizer collides")
            _, _, test = BlendedMegatronDatasetBuilder(GPTDataset, [0, 0, samples], lambda: True, config).build()
    finally:
        logger.setLevel(level)
    out = np.empty((samples, seq_length + 1), dtype=np.int64)
    for i in range(samples):
        item = test[i]
        out[i, :-1] = np.asarray(item["tokens"], dtype=np.int64)
        out[i, -1] = int(item["labels"][-1])
    return out


def token_weighted_loss(per_domain: dict[str, dict]) -> float:
    tokens = sum(d["tokens"] for d in per_domain.values())
    return sum(d["loss"] * d["tokens"] for d in per_domain.values()) / tokens
