"""Hugging Face checkpoints -> our config dataclass + our state_dict.

    cfg, sd = load_hf_checkpoint("path/to/dir")          # config.json + model.safetensors
    cfg, sd = from_hf_state_dict(hf_config_dict, hf_sd)  # e.g. model.config.to_dict(), model.state_dict()
    fast.gpt.GPT(cfg).load_state_dict(sd)                # or reference.gpt.ReferenceGPT(cfg, sd)

Supported: ``GPT2LMHeadModel`` / ``GPT2Model``, ``LlamaForCausalLM`` / ``LlamaModel``, ``BertModel``
/ ``BertForMaskedLM`` (keys with or without the ``transformer.`` / ``model.`` / ``bert.`` prefix).

What changes on the way:
- GPT-2 keeps its names (our GPT uses them too: ``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc``,
  ``mlp.c_proj``), but stores its Linear layers as ``Conv1D`` with weight (in, out): transposed to
  our (out, in). The causal-mask buffers ``attn.bias`` / ``attn.masked_bias`` of old checkpoints
  are ignored.
- LLaMA: names lose the ``model.`` prefix; a tied head (``tie_word_embeddings``) need not be saved.
- BERT: every layer is renamed (``attention.self.query`` -> ``attn.q_proj``, ...). A head missing
  from the checkpoint (BertModel has no MLM head, BertForMaskedLM no pooler; neither has our
  classifier) is filled with zeros and unit LayerNorm scales: its outputs mean nothing until
  trained. A head that is partly there is an error.

Everything that does not fit (unknown keys, missing keys, wrong shapes, config options our models
do not have) is collected and raised as ONE ValueError listing all of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from myllm101.config import BertConfig, GPTConfig, LlamaConfig
from myllm101.hub.names import BERT_LAYER, BERT_MLM_HEAD, LLAMA_LAYER

ARCHITECTURES = ("gpt2", "llama", "bert")


# ---------------------------------------------------------------------------------------------
# bookkeeping: take keys out of the HF dict, remember every problem, raise once


class _Taker:
    """Reads HF tensors by (prefix-stripped) name, checking shapes; collects every problem."""

    def __init__(self, sd: dict[str, torch.Tensor], prefix: str, ignore: Callable[[str], bool]):
        self.sd: dict[str, torch.Tensor] = {}
        for k, v in sd.items():
            name = k[len(prefix) :] if k.startswith(prefix) else k
            if not ignore(name):
                self.sd[name] = v
        self.used: set[str] = set()
        self.missing: list[str] = []
        self.bad_shapes: list[str] = []
        self.other: list[str] = []

    def has(self, name: str) -> bool:
        return name in self.sd

    def take(self, name: str, shape: tuple[int, ...]) -> torch.Tensor | None:
        if name not in self.sd:
            self.missing.append(name)
            return None
        self.used.add(name)
        t = self.sd[name]
        if tuple(t.shape) != tuple(shape):
            self.bad_shapes.append(f"{name}: expected {tuple(shape)}, got {tuple(t.shape)}")
            return None
        return t

    def raise_if_any(self, arch: str) -> None:
        unknown = sorted(set(self.sd) - self.used)
        parts = []
        if self.other:
            parts.append("unsupported config: " + "; ".join(self.other))
        if self.missing:
            parts.append(f"missing keys ({len(self.missing)}): {self.missing}")
        if unknown:
            parts.append(f"unexpected keys ({len(unknown)}): {unknown}")
        if self.bad_shapes:
            parts.append(f"shape mismatches ({len(self.bad_shapes)}): {self.bad_shapes}")
        if parts:
            raise ValueError(f"cannot convert this {arch} checkpoint: " + " | ".join(parts))


def _require(taker: _Taker, hf: dict, key: str, allowed, default=None) -> None:
    """Note an unsupported config option: hf[key] (default ``default``) must be in ``allowed``."""
    value = hf.get(key, default)
    if value not in allowed:
        taker.other.append(f"{key}={value!r} (our model supports {list(allowed)})")


def _int(hf: dict, *keys: str, default=None):
    for k in keys:
        if hf.get(k) is not None:
            return hf[k]
    if default is None:
        raise ValueError(f"config.json: expected one of {list(keys)}, got none of them")
    return default


def _as(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.detach().to(dtype).contiguous()


# ---------------------------------------------------------------------------------------------
# GPT-2


def _convert_gpt2(hf: dict, sd: dict, dtype: torch.dtype):
    C, L = _int(hf, "n_embd", "hidden_size"), _int(hf, "n_layer", "num_hidden_layers")
    V, P = _int(hf, "vocab_size"), _int(hf, "n_positions", "max_position_embeddings")
    tied = bool(hf.get("tie_word_embeddings", True))
    cfg = GPTConfig(
        vocab_size=V,
        block_size=P,
        n_layer=L,
        n_head=_int(hf, "n_head", "num_attention_heads"),
        n_embd=C,
        bias=True,
        layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        tie_word_embeddings=tied,
    )
    # attn.bias / attn.masked_bias: the causal mask, stored as buffers by old transformers
    ignore = lambda k: k.endswith((".attn.bias", ".attn.masked_bias"))
    tk = _Taker(sd, "transformer.", ignore)
    _require(tk, hf, "activation_function", ("gelu_new", "gelu_pytorch_tanh"), "gelu_new")
    _require(tk, hf, "n_inner", (None, 4 * C))
    _require(tk, hf, "scale_attn_weights", (True,), True)
    _require(tk, hf, "scale_attn_by_inverse_layer_idx", (False,), False)
    _require(tk, hf, "add_cross_attention", (False,), False)

    out: dict[str, torch.Tensor | None] = {}
    out["wte.weight"] = tk.take("wte.weight", (V, C))
    out["wpe.weight"] = tk.take("wpe.weight", (P, C))

    def conv1d(src: str, dst: str, n_in: int, n_out: int) -> None:
        w, b = tk.take(f"{src}.weight", (n_in, n_out)), tk.take(f"{src}.bias", (n_out,))
        out[f"{dst}.weight"] = None if w is None else w.t()  # Conv1D (in, out) -> Linear (out, in)
        out[f"{dst}.bias"] = b

    def norm(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = tk.take(f"{src}.weight", (C,))
        out[f"{dst}.bias"] = tk.take(f"{src}.bias", (C,))

    for i in range(L):
        h = f"h.{i}"
        norm(f"{h}.ln_1", f"{h}.ln_1")
        conv1d(f"{h}.attn.c_attn", f"{h}.attn.c_attn", C, 3 * C)  # x @ w = [q | k | v]
        conv1d(f"{h}.attn.c_proj", f"{h}.attn.c_proj", C, C)
        norm(f"{h}.ln_2", f"{h}.ln_2")
        conv1d(f"{h}.mlp.c_fc", f"{h}.mlp.c_fc", C, 4 * C)
        conv1d(f"{h}.mlp.c_proj", f"{h}.mlp.c_proj", 4 * C, C)
    norm("ln_f", "ln_f")
    _head(tk, out, tied, "wte.weight", (V, C))
    tk.raise_if_any("GPT-2")
    return cfg, _finish(out, dtype, ("wte.weight", "lm_head.weight") if tied else None)


def _head(tk: _Taker, out: dict, tied: bool, embedding: str, shape) -> None:
    """lm_head.weight: its own tensor, or (tied) the embedding; a saved tied copy must match."""
    if not tied:
        out["lm_head.weight"] = tk.take("lm_head.weight", shape)
    elif tk.has("lm_head.weight"):  # HF's state_dict() lists a tied head under both names
        head, emb = tk.take("lm_head.weight", shape), out[embedding]
        if head is not None and emb is not None and not torch.equal(head, emb):
            tk.other.append(
                "tie_word_embeddings=True but lm_head.weight differs from the embedding"
            )


def _finish(out: dict, dtype: torch.dtype, tied: tuple[str, str] | None) -> dict:
    sd = {k: _as(v, dtype) for k, v in out.items()}
    if tied is not None:
        sd[tied[1]] = sd[tied[0]]  # one tensor under two names, as our state_dict lists it
    return sd


# ---------------------------------------------------------------------------------------------
# LLaMA


def rope_theta_of(hf: dict) -> tuple[float, list[str]]:
    """RoPE base from ``rope_theta`` (transformers 4) or ``rope_parameters`` (5); plus problems
    (a scaled RoPE: llama3 / linear / yarn ... which our model does not implement)."""
    problems = []
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    for source in (params, scaling):
        kind = source.get("rope_type", source.get("type", "default"))
        if kind != "default":
            problems.append(f"rope type {kind!r} (our model supports only 'default' RoPE)")
    theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    return float(theta), problems


def _convert_llama(hf: dict, sd: dict, dtype: torch.dtype):
    C, L = _int(hf, "hidden_size"), _int(hf, "num_hidden_layers")
    H = _int(hf, "num_attention_heads")
    Hkv = _int(hf, "num_key_value_heads", default=H)
    V, I = _int(hf, "vocab_size"), _int(hf, "intermediate_size")
    tied = bool(hf.get("tie_word_embeddings", False))
    theta, problems = rope_theta_of(hf)
    cfg = LlamaConfig(
        vocab_size=V,
        block_size=_int(hf, "max_position_embeddings", default=2048),
        n_layer=L,
        n_head=H,
        n_kv_head=Hkv,
        n_embd=C,
        intermediate_size=I,
        rope_theta=theta,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=tied,
    )
    tk = _Taker(sd, "model.", lambda k: k.endswith("rotary_emb.inv_freq"))
    tk.other.extend(problems)
    _require(tk, hf, "hidden_act", ("silu",), "silu")
    _require(tk, hf, "attention_bias", (False,), False)
    _require(tk, hf, "mlp_bias", (False,), False)
    _require(tk, hf, "head_dim", (None, C // H))
    D = C // H

    out: dict[str, torch.Tensor | None] = {
        "embed_tokens.weight": tk.take("embed_tokens.weight", (V, C))
    }
    shapes = {  # one layer's weights by hub/names.py LLAMA_LAYER name
        "input_layernorm": (C,),
        "self_attn.q_proj": (H * D, C),
        "self_attn.k_proj": (Hkv * D, C),
        "self_attn.v_proj": (Hkv * D, C),
        "self_attn.o_proj": (C, H * D),
        "post_attention_layernorm": (C,),
        "mlp.gate_proj": (I, C),
        "mlp.up_proj": (I, C),
        "mlp.down_proj": (C, I),
    }
    for i in range(L):
        for m in LLAMA_LAYER:  # same names, minus "model."
            out[f"layers.{i}.{m}.weight"] = tk.take(f"layers.{i}.{m}.weight", shapes[m])
    out["norm.weight"] = tk.take("norm.weight", (C,))
    _head(tk, out, tied, "embed_tokens.weight", (V, C))
    tk.raise_if_any("LLaMA")
    return cfg, _finish(out, dtype, ("embed_tokens.weight", "lm_head.weight") if tied else None)


# ---------------------------------------------------------------------------------------------
# BERT


def _convert_bert(hf: dict, sd: dict, dtype: torch.dtype, num_labels: int = 2):
    C, L = _int(hf, "hidden_size"), _int(hf, "num_hidden_layers")
    V, I, P = (
        _int(hf, "vocab_size"),
        _int(hf, "intermediate_size"),
        _int(hf, "max_position_embeddings"),
    )
    T = _int(hf, "type_vocab_size", default=2)
    cfg = BertConfig(
        vocab_size=V,
        block_size=P,
        type_vocab_size=T,
        n_layer=L,
        n_head=_int(hf, "num_attention_heads"),
        n_embd=C,
        intermediate_size=I,
        layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        num_labels=num_labels,
        pad_token_id=int(hf.get("pad_token_id") or 0),
    )
    # position_ids / token_type_ids: index buffers, not weights
    ignore = lambda k: k.endswith(("embeddings.position_ids", "embeddings.token_type_ids"))
    tk = _Taker(sd, "bert.", ignore)
    _require(tk, hf, "hidden_act", ("gelu",), "gelu")
    _require(tk, hf, "position_embedding_type", ("absolute",), "absolute")
    _require(tk, hf, "is_decoder", (False,), False)

    out: dict[str, torch.Tensor | None] = {}

    def lin(src, dst, n_out, n_in):
        out[f"{dst}.weight"] = tk.take(f"{src}.weight", (n_out, n_in))
        out[f"{dst}.bias"] = tk.take(f"{src}.bias", (n_out,))

    def norm(src, dst):
        out[f"{dst}.weight"] = tk.take(f"{src}.weight", (C,))
        out[f"{dst}.bias"] = tk.take(f"{src}.bias", (C,))

    e = "embeddings"
    out[f"{e}.word_embeddings.weight"] = tk.take(f"{e}.word_embeddings.weight", (V, C))
    out[f"{e}.position_embeddings.weight"] = tk.take(f"{e}.position_embeddings.weight", (P, C))
    out[f"{e}.token_type_embeddings.weight"] = tk.take(f"{e}.token_type_embeddings.weight", (T, C))
    norm(f"{e}.LayerNorm", f"{e}.layer_norm")
    shapes = {"mlp.fc_in": (I, C), "mlp.fc_out": (C, I)}  # (out, in); the other Linears: (C, C)
    for i in range(L):
        for hf_name, ours in BERT_LAYER.items():  # hub/names.py
            src, dst = f"encoder.layer.{i}.{hf_name}", f"layers.{i}.{ours}"
            if ours.endswith("norm"):
                norm(src, dst)
            else:
                lin(src, dst, *shapes.get(ours, (C, C)))

    # optional heads: all of a head's keys, or none of them (then zeros)
    if any(k.startswith("cls.predictions.") for k in tk.sd):
        head_shapes = {"dense.weight": (C, C), "decoder.bias": (V,)}  # the rest: (C,)
        for hf_name, ours in BERT_MLM_HEAD.items():  # hub/names.py
            out[ours] = tk.take(hf_name, head_shapes.get(ours.removeprefix("mlm_head."), (C,)))
        if tk.has("cls.predictions.decoder.bias"):  # the same tensor as cls.predictions.bias
            tk.take("cls.predictions.decoder.bias", (V,))
        if tk.has("cls.predictions.decoder.weight"):  # tied to the word embeddings
            dec = tk.take("cls.predictions.decoder.weight", (V, C))
            emb = out[f"{e}.word_embeddings.weight"]
            if dec is not None and emb is not None and not torch.equal(dec, emb):
                tk.other.append("cls.predictions.decoder.weight differs from the word embeddings")
    else:
        out["mlm_head.dense.weight"], out["mlm_head.dense.bias"] = torch.zeros(C, C), torch.zeros(C)
        out["mlm_head.layer_norm.weight"] = torch.ones(C)
        out["mlm_head.layer_norm.bias"] = torch.zeros(C)
        out["mlm_head.decoder.bias"] = torch.zeros(V)
    if any(k.startswith("pooler.") for k in tk.sd):
        lin("pooler.dense", "pooler", C, C)
    else:
        out["pooler.weight"], out["pooler.bias"] = torch.zeros(C, C), torch.zeros(C)
    out["classifier.weight"] = torch.zeros(num_labels, C)  # never in a BertModel / MLM checkpoint
    out["classifier.bias"] = torch.zeros(num_labels)
    out["mlm_head.decoder.weight"] = None  # tied: filled by _finish
    tk.raise_if_any("BERT")
    return cfg, _finish(out, dtype, (f"{e}.word_embeddings.weight", "mlm_head.decoder.weight"))


# ---------------------------------------------------------------------------------------------
# entry points


def architecture_of(hf_config: dict) -> str:
    """'gpt2', 'llama' or 'bert' from ``model_type`` (or ``architectures``); ValueError otherwise."""
    kind = hf_config.get("model_type")
    if kind is None:
        archs = " ".join(hf_config.get("architectures") or []).lower()
        kind = next((a for a in ARCHITECTURES if a in archs), None)
    if kind not in ARCHITECTURES:
        raise ValueError(
            f"config.json: expected model_type one of {list(ARCHITECTURES)}, got {kind!r} "
            f"(architectures {hf_config.get('architectures')})"
        )
    return kind


def from_hf_state_dict(
    hf_config: dict, state_dict: dict, dtype: torch.dtype = torch.float32
) -> tuple[GPTConfig | LlamaConfig | BertConfig, dict[str, torch.Tensor]]:
    """An HF config (``config.json`` as a dict) and state_dict -> (our config, our state_dict).

    The tensors are cast to ``dtype`` (float32 by default: the reference models and bf16
    checkpoints both need a cast). Tied weights appear under both names, sharing one tensor.
    """
    if hasattr(hf_config, "to_dict"):  # a transformers PretrainedConfig
        hf_config = hf_config.to_dict()
    arch = architecture_of(hf_config)
    convert = {"gpt2": _convert_gpt2, "llama": _convert_llama, "bert": _convert_bert}[arch]
    try:
        return convert(hf_config, dict(state_dict), dtype)
    except (KeyError, TypeError) as e:  # a malformed config value
        raise ValueError(f"config.json for {arch}: unusable value ({e!r})") from None


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file; a truncated or corrupt file -> ValueError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise ValueError(f"{path}: not a readable safetensors file (truncated?): {e}") from None


def read_hf_config(directory: str | Path) -> dict:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected a Hugging Face model directory)")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: expected JSON, got a parse error: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(d).__name__}")
    return d


def load_hf_checkpoint(directory: str | Path, dtype: torch.dtype = torch.float32):
    """``DIR/config.json`` + ``DIR/model.safetensors`` -> (our config, our state_dict)."""
    directory = Path(directory)
    hf_config = read_hf_config(directory)
    architecture_of(hf_config)  # a wrong architecture fails before reading the weights
    sd = read_safetensors(directory / "model.safetensors")
    return from_hf_state_dict(hf_config, sd, dtype)
