"""llama.cpp GGUF files (LLaMA architecture) -> our LlamaConfig, state_dict and BPE Tokenizer.

    reader = read_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    cfg = llama_config_from_gguf(reader)            # from the llama.* metadata
    sd = llama_state_dict_from_gguf(reader, cfg)    # dequantized to float32
    tok = tokenizer_from_gguf(reader)               # our fast byte-level BPE Tokenizer

A GGUF file is a header of typed metadata (``llama.block_count``, ``tokenizer.ggml.tokens``, ...)
followed by tensors, each in its own format (F32, Q8_0, Q4_1, ...). ``gguf.quants.dequantize``
turns a quantized block format back into float32: Q4_1 stores 32 weights as 4-bit integers q with
one scale d and one minimum m, w = d * q + m.

Two conversions undo what llama.cpp's converter did:
- tensor names: ``blk.{i}.attn_q.weight`` -> ``layers.{i}.self_attn.q_proj.weight`` etc.
- RoPE layout: HF rotates the two halves of a head vector (rotate-half), llama.cpp rotates
  adjacent pairs, so the converter permuted the rows of q_proj and k_proj within each head:
  HF row s * D/2 + j became row 2j + s. ``unpermute_rope_rows`` puts them back (the inverse of
  that permutation; transformers' GGUF loader does the same).

The tokenizer: ``tokenizer.ggml.tokens`` are written in GPT-2's byte-to-unicode alphabet, token
ids follow the merge order (checked), control tokens (``<|im_start|>``) become special tokens.
Bytes absent from the vocabulary (SmolLM2 lacks 21: some control bytes and bytes that never occur
in UTF-8) get ids past the model's vocabulary, and ``encode_ids`` drops them, as transformers'
tokenizer does for characters it cannot spell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from myllm101.config import LlamaConfig
from myllm101.tokenizer.hf_format import HF_BYTELEVEL_REGEX, hf_to_bytes

# tokenizer.ggml.pre -> the split regex (the ones transformers maps to GPT-2's ByteLevel regex)
PRE_TOKENIZER_PATTERNS = {"smollm": HF_BYTELEVEL_REGEX, "gpt2": HF_BYTELEVEL_REGEX}
CONTROL, USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values

_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def read_gguf(path: str | Path):
    """A ``gguf.GGUFReader`` (memory-mapped); a truncated or foreign file -> ValueError naming it."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, IndexError, OSError, KeyError, AssertionError) as e:
        raise ValueError(f"{path}: not a readable GGUF file (truncated?): {e}") from None


def metadata(reader, key: str, default=None):
    """One metadata value (str, int, float, list); ``default`` (or a ValueError) when absent."""
    field = reader.fields.get(key)
    if field is None:
        if default is None:
            raise ValueError(f"GGUF metadata: expected key {key!r}, not found")
        return default
    return field.contents()


def llama_config_from_gguf(reader, block_size: int | None = None) -> LlamaConfig:
    """Our LlamaConfig from the ``llama.*`` metadata (a wrong architecture -> ValueError)."""
    arch = metadata(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"GGUF general.architecture: expected 'llama', got {arch!r}")
    n_embd = int(metadata(reader, "llama.embedding_length"))
    n_head = int(metadata(reader, "llama.attention.head_count"))
    head_dim = int(metadata(reader, "llama.rope.dimension_count", n_embd // n_head))
    if head_dim != n_embd // n_head:
        raise ValueError(
            f"GGUF llama.rope.dimension_count: expected {n_embd // n_head} (embedding_length / "
            f"head_count; partial RoPE is not supported), got {head_dim}"
        )
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    has_head = any(t.name == "output.weight" for t in reader.tensors)
    return LlamaConfig(
        vocab_size=int(metadata(reader, "llama.vocab_size", n_vocab)),
        block_size=block_size or int(metadata(reader, "llama.context_length")),
        n_layer=int(metadata(reader, "llama.block_count")),
        n_head=n_head,
        n_kv_head=int(metadata(reader, "llama.attention.head_count_kv", n_head)),
        n_embd=n_embd,
        intermediate_size=int(metadata(reader, "llama.feed_forward_length")),
        rope_theta=float(metadata(reader, "llama.rope.freq_base", 10000.0)),
        rms_norm_eps=float(metadata(reader, "llama.attention.layer_norm_rms_epsilon")),
        tie_word_embeddings=not has_head,
    )


def unpermute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order: within each head, row 2j + s goes back to s * D/2 + j.

    (n_head * D, C) -> (n_head * D, C); e.g. one head with D = 4: rows [0, 1, 2, 3] (llama.cpp's
    pairs (0, 1), (2, 3)) -> [0, 2, 1, 3] (HF's halves [0, 2 | 1, 3])."""
    rows, cols = w.shape
    half = rows // n_head // 2
    # (head, j, s, C) -> (head, s, j, C)
    return w.reshape(n_head, half, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _dequantize(tensor) -> np.ndarray:
    from gguf.quants import dequantize

    # GGUF lists dimensions fastest-first: shape [C_in, C_out] is our (C_out, C_in)
    shape = tuple(int(d) for d in reversed(tensor.shape))
    w = dequantize(tensor.data, tensor.tensor_type)
    return np.array(w, dtype=np.float32).reshape(shape)  # a writable copy (F32 data is mmapped)


def llama_state_dict_from_gguf(reader, cfg: LlamaConfig) -> dict[str, torch.Tensor]:
    """float32 state_dict with our names; missing / unknown / misshaped tensors -> one ValueError."""
    from myllm101.reference.llama import param_shapes

    sd: dict[str, torch.Tensor] = {}
    unknown = []
    for t in reader.tensors:
        name = t.name
        if name == "token_embd.weight":
            ours = "embed_tokens.weight"
        elif name == "output_norm.weight":
            ours = "norm.weight"
        elif name == "output.weight":
            ours = "lm_head.weight"
        elif name.startswith("blk.") and name.count(".") == 3:
            _, i, kind, suffix = name.split(".")
            if kind not in _LAYER_NAMES:
                unknown.append(name)
                continue
            ours = f"layers.{i}.{_LAYER_NAMES[kind]}.{suffix}"
        else:
            unknown.append(name)
            continue
        w = _dequantize(t)
        if name.endswith("attn_q.weight"):
            w = unpermute_rope_rows(w, cfg.n_head)
        elif name.endswith("attn_k.weight"):
            w = unpermute_rope_rows(w, cfg.n_kv_head)
        sd[ours] = torch.from_numpy(np.ascontiguousarray(w))  # (out, in)
    if cfg.tie_word_embeddings and "embed_tokens.weight" in sd:
        sd["lm_head.weight"] = sd["embed_tokens.weight"]
    shapes = param_shapes(cfg)
    missing = sorted(set(shapes) - set(sd))
    bad = [
        f"{k}: expected {shapes[k]}, got {tuple(v.shape)}"
        for k, v in sd.items()
        if k in shapes and tuple(v.shape) != shapes[k]
    ]
    if missing or unknown or bad:
        raise ValueError(
            f"GGUF tensors do not fit LLaMA {cfg.n_layer} layers: missing {missing}, "
            f"unexpected {unknown}, shape mismatches {bad}"
        )
    return sd


class GGUFTokenizer:
    """Our byte-level BPE Tokenizer plus what a GGUF adds: bos/eos ids and the model's vocab size
    (ids of bytes the vocabulary lacks lie past it and are dropped, like transformers does)."""

    def __init__(self, bpe, n_vocab: int, bos_id: int | None, eos_id: int | None, chat_template):
        self.bpe, self.n_vocab = bpe, n_vocab
        self.bos_id, self.eos_id, self.chat_template = bos_id, eos_id, chat_template

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; special tokens written in it (``<|im_start|>``) become their ids."""
        return [i for i in self.bpe.encode(text, allowed_special="all") if i < self.n_vocab]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        specials = set(self.bpe.special_tokens.values()) if skip_special_tokens else set()
        return self.bpe.decode([i for i in ids if i not in specials])


def tokenizer_from_gguf(reader, impl: str = "fast") -> GGUFTokenizer:
    """Our BPE Tokenizer from ``tokenizer.ggml.{model,pre,tokens,token_type,merges}``."""
    from myllm101.tokenizer.formats import tokenizer_class

    model = metadata(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(
            f"GGUF tokenizer.ggml.model: expected 'gpt2' (byte-level BPE), got {model!r}"
        )
    pre = metadata(reader, "tokenizer.ggml.pre", "gpt2")
    if pre not in PRE_TOKENIZER_PATTERNS:
        raise ValueError(
            f"GGUF tokenizer.ggml.pre: expected one of {sorted(PRE_TOKENIZER_PATTERNS)}, got {pre!r}"
        )
    tokens = metadata(reader, "tokenizer.ggml.tokens")
    types = metadata(reader, "tokenizer.ggml.token_type", [1] * len(tokens))
    ranks: dict[bytes, int] = {}
    specials: dict[str, int] = {}
    for i, (token, kind) in enumerate(zip(tokens, types)):
        if kind in (CONTROL, USER_DEFINED):
            specials[token] = i
        else:
            ranks[hf_to_bytes(token)] = i
    # our BPE merges by id (lower id = earlier merge): true when merge k makes a higher id than k-1
    previous = -1
    for k, merge in enumerate(metadata(reader, "tokenizer.ggml.merges", [])):
        a, b = merge.split(" ")
        made = ranks.get(hf_to_bytes(a) + hf_to_bytes(b))
        if made is None or made <= previous:
            raise ValueError(
                f"GGUF tokenizer.ggml.merges[{k}] {merge!r}: makes id {made}, expected an id above "
                f"{previous} (merge order must follow the token ids)"
            )
        previous = made
    n_vocab = len(tokens)
    extra = n_vocab
    for byte in range(256):  # bytes the vocabulary cannot spell: ids past it, dropped on encode
        if bytes([byte]) not in ranks:
            ranks[bytes([byte])] = extra
            extra += 1
    bpe = tokenizer_class(impl)(ranks, PRE_TOKENIZER_PATTERNS[pre], specials, name=str(pre))
    bos = reader.fields.get("tokenizer.ggml.bos_token_id")
    eos = reader.fields.get("tokenizer.ggml.eos_token_id")
    template = reader.fields.get("tokenizer.chat_template")
    return GGUFTokenizer(
        bpe,
        n_vocab,
        None if bos is None else int(bos.contents()),
        None if eos is None else int(eos.contents()),
        None if template is None else template.contents(),
    )
