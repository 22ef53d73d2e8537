"""Writing a tiny Llama as a GGUF file with the `gguf` package, the way llama.cpp's converter
lays it out (tensor names, the q/k row permutation, tokenizer metadata), for the convert-gguf
tests. Nothing is downloaded: the model and its BPE tokenizer are study.tiny_llama's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's reordering of q/k rows (interleaved rotary halves), which transformers undoes."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def write_llama_gguf(hf_folder: Path, path: Path, name: str = "tiny-llama", architecture: str = "llama",
                     float16: bool = False, rope_scaling: dict | None = None,
                     rope_freqs: np.ndarray | None = None) -> Path:
    """The HF Llama in `hf_folder` (config.json, model.safetensors, tokenizer.json with a BPE
    model, tokenizer_config.json with a chat template) as the GGUF file `path`. `rope_scaling`
    adds `llama.rope.scaling.KEY = VALUE` entries, `rope_freqs` a `rope_freqs.weight` tensor."""
    import gguf
    from safetensors.numpy import load_file

    hf_folder = Path(hf_folder)
    config = json.loads((hf_folder / "config.json").read_text())
    tok = json.loads((hf_folder / "tokenizer.json").read_text())
    tok_config = json.loads((hf_folder / "tokenizer_config.json").read_text())
    weights = load_file(str(hf_folder / "model.safetensors"))
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name(name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(config["hidden_size"] // n_head)
    writer.add_rope_freq_base(float(config.get("rope_theta") or config["rope_parameters"]["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_vocab_size(config["vocab_size"])
    for key, value in (rope_scaling or {}).items():
        full = f"{architecture}.rope.scaling.{key}"
        if isinstance(value, str):
            writer.add_string(full, value)
        elif isinstance(value, bool):
            writer.add_bool(full, value)
        elif isinstance(value, int):
            writer.add_uint32(full, value)
        else:
            writer.add_float32(full, float(value))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if float16 else gguf.LlamaFileType.ALL_F32)

    vocab = dict(tok["model"]["vocab"])
    for added in tok.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    tokens = [None] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    specials = {added["content"] for added in tok.get("added_tokens", []) if added.get("special")}
    merges = [" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(tok_config["chat_template"])

    def add(gguf_name: str, hf_name: str, permute_heads: int | None = None, norm: bool = False) -> None:
        array = weights[hf_name].astype(np.float32)
        if permute_heads:
            array = _permute(array, permute_heads)
        if float16 and not norm:
            array = array.astype(np.float16)
        writer.add_tensor(gguf_name, array)

    add("token_embd.weight", "model.embed_tokens.weight")
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        add(f"blk.{i}.attn_norm.weight", p + "input_layernorm.weight", norm=True)
        add(f"blk.{i}.attn_q.weight", p + "self_attn.q_proj.weight", permute_heads=n_head)
        add(f"blk.{i}.attn_k.weight", p + "self_attn.k_proj.weight", permute_heads=n_kv)
        add(f"blk.{i}.attn_v.weight", p + "self_attn.v_proj.weight")
        add(f"blk.{i}.attn_output.weight", p + "self_attn.o_proj.weight")
        add(f"blk.{i}.ffn_norm.weight", p + "post_attention_layernorm.weight", norm=True)
        add(f"blk.{i}.ffn_gate.weight", p + "mlp.gate_proj.weight")
        add(f"blk.{i}.ffn_up.weight", p + "mlp.up_proj.weight")
        add(f"blk.{i}.ffn_down.weight", p + "mlp.down_proj.weight")
    add("output_norm.weight", "model.norm.weight", norm=True)
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", np.asarray(rope_freqs, dtype=np.float32))
    if "lm_head.weight" in weights:
        add("output.weight", "lm_head.weight")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
