"""LLaMA 2/3 (Touvron et al., 2023) in NumPy, with a hand-written backward through the whole model.

    x = embed_tokens[ids]                                                  # (B, T, C), no positions
    for each layer:  x = x + attn(rmsnorm(x))      # causal, RoPE on q and k, grouped-query heads
                     x = x + down(silu(gate(h)) * up(h)),  h = rmsnorm(x)  # SwiGLU MLP
    logits = rmsnorm(x) @ lm_head.T                                        # (B, T, V)
    loss = cross_entropy(logits[:, :-1], ids[:, 1:])                       # shifted inside

What differs from GPT-2 (reference/gpt.py): RMSNorm instead of LayerNorm, no biases, rotary
positions instead of a learned table, a gated MLP, and fewer key/value heads than query heads.

Parameter names equal the fast model's ``state_dict`` keys (``myllm101.fast.llama.Llama``), which are
HF's ``LlamaForCausalLM`` names without the ``model.`` prefix::

    embed_tokens.weight (V, C)
    layers.{i}.input_layernorm.weight (C,)
    layers.{i}.self_attn.q_proj.weight (H*D, C)   k_proj / v_proj (Hkv*D, C)   o_proj (C, H*D)
    layers.{i}.post_attention_layernorm.weight (C,)
    layers.{i}.mlp.gate_proj.weight / up_proj.weight (I, C)   down_proj.weight (C, I)
    norm.weight (C,)   lm_head.weight (V, C)

With ``tie_word_embeddings`` (LLaMA 3.2 small models) lm_head.weight is embed_tokens.weight, as in
reference/gpt.py: one array, the gradients of both uses summed and reported under both names.

Per-layer shapes (a structurally pruned config): layer i's H, Hkv and I above are
``cfg.n_head_of(i)``, ``cfg.n_kv_head_of(i)`` and ``cfg.intermediate_size_of(i)``; D is
``cfg.head_dim`` everywhere, so H*D may differ from C.
"""

from __future__ import annotations

import numpy as np

from myllm101.config import LlamaConfig
from myllm101.reference.activations import swiglu_backward, swiglu_forward
from myllm101.reference.attention import mha_backward, mha_forward
from myllm101.reference.blocks import (
    Dropouts,
    add_prefixed,
    causal_lm_loss_backward,
    causal_lm_loss_forward,
    check_model_inputs,
    load_params,
    sub_params,
)
from myllm101.reference.embedding import embedding_backward, embedding_forward
from myllm101.reference.linear import linear_backward, linear_forward
from myllm101.reference.rmsnorm import rmsnorm_backward, rmsnorm_forward
from myllm101.reference.rope import rope_frequencies


def param_shapes(cfg: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter name -> shape, in the fast model's state_dict order."""
    C, V, D = cfg.n_embd, cfg.vocab_size, cfg.head_dim
    shapes = {"embed_tokens.weight": (V, C)}
    for i in range(cfg.n_layer):
        L, H, Hkv, I = (
            f"layers.{i}",
            cfg.n_head_of(i),
            cfg.n_kv_head_of(i),
            cfg.intermediate_size_of(i),
        )
        shapes[f"{L}.input_layernorm.weight"] = (C,)
        shapes[f"{L}.self_attn.q_proj.weight"] = (H * D, C)
        shapes[f"{L}.self_attn.k_proj.weight"] = (Hkv * D, C)
        shapes[f"{L}.self_attn.v_proj.weight"] = (Hkv * D, C)
        shapes[f"{L}.self_attn.o_proj.weight"] = (C, H * D)
        shapes[f"{L}.post_attention_layernorm.weight"] = (C,)
        shapes[f"{L}.mlp.gate_proj.weight"] = (I, C)
        shapes[f"{L}.mlp.up_proj.weight"] = (I, C)
        shapes[f"{L}.mlp.down_proj.weight"] = (C, I)
    shapes["norm.weight"] = (C,)
    shapes["lm_head.weight"] = (V, C)
    return shapes


def init_params(cfg: LlamaConfig, seed: int = 0, dtype=np.float64) -> dict[str, np.ndarray]:
    """N(0, 0.02) matrices, unit RMSNorm scales, residual projections (o_proj, down_proj) scaled
    by 1/sqrt(2 * n_layer) (the GPT-2 recipe the fast model uses too)."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(cfg).items():
        if len(shape) == 1:
            params[name] = np.ones(shape, dtype)
        else:
            std = 0.02
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                std /= np.sqrt(2 * cfg.n_layer)
            params[name] = (rng.standard_normal(shape) * std).astype(dtype)
    if cfg.tie_word_embeddings:
        params["lm_head.weight"] = params["embed_tokens.weight"]
    return params


class ReferenceLlama:
    """LLaMA in NumPy. ``params`` maps state_dict names to arrays (float64 or float32)."""

    def __init__(self, cfg: LlamaConfig, params: dict | None = None, seed: int = 0):
        self.cfg = cfg
        tied = ("embed_tokens.weight", "lm_head.weight") if cfg.tie_word_embeddings else None
        if params is None:
            params = init_params(cfg, seed)
        self.params = load_params(param_shapes(cfg), params, tied)
        self.dropout = Dropouts(cfg.dropout, seed)

    def parameter_names(self) -> list[str]:
        """Each array once (a tied lm_head.weight is left out): what an optimizer updates."""
        names = list(self.params)
        if self.cfg.tie_word_embeddings:
            names.remove("lm_head.weight")
        return names

    def train(self, mode: bool = True):
        self.dropout.training = mode
        return self

    def eval(self):
        return self.train(False)

    def forward(self, input_ids, attention_mask=None, labels=None):
        """input_ids: (B, T) -> (logits (B, T, V), loss or None, cache)."""
        cfg, p = self.cfg, self.params
        check_model_inputs(cfg, input_ids, attention_mask, labels)
        T = input_ids.shape[1]
        mask = None if attention_mask is None else attention_mask.astype(bool)  # True = real token
        eps = cfg.rms_norm_eps
        rope = rope_frequencies(cfg.head_dim, T, cfg.rope_theta)  # (cos, sin), each (T, D)

        x, c_tok = embedding_forward(input_ids, p["embed_tokens.weight"])  # (B, T, C)
        layers = []
        for i in range(cfg.n_layer):
            L, c = f"layers.{i}", {}
            h, c["norm_1"] = rmsnorm_forward(x, p[f"{L}.input_layernorm.weight"], eps)
            a, c["attn"] = mha_forward(
                h,
                sub_params(p, f"{L}.self_attn."),
                cfg.n_head_of(i),
                cfg.n_kv_head_of(i),
                causal=True,
                key_padding_mask=mask,
                rope=rope,
            )
            a, c["drop_attn"] = self.dropout.forward(a)
            x = x + a
            h, c["norm_2"] = rmsnorm_forward(x, p[f"{L}.post_attention_layernorm.weight"], eps)
            gate, c["gate"] = linear_forward(h, p[f"{L}.mlp.gate_proj.weight"])  # (B, T, I)
            up, c["up"] = linear_forward(h, p[f"{L}.mlp.up_proj.weight"])  # (B, T, I)
            s, c["swiglu"] = swiglu_forward(gate, up)  # silu(gate) * up
            m, c["down"] = linear_forward(s, p[f"{L}.mlp.down_proj.weight"])  # (B, T, C)
            m, c["drop_mlp"] = self.dropout.forward(m)
            x = x + m
            layers.append(c)
        x, c_norm = rmsnorm_forward(x, p["norm.weight"], eps)
        logits, c_head = linear_forward(x, p["lm_head.weight"])  # (B, T, V)

        loss, c_loss = None, None
        if labels is not None:
            loss, c_loss = causal_lm_loss_forward(logits, labels)
        cache = dict(tok=c_tok, layers=layers, norm=c_norm, head=c_head, loss=c_loss)
        return logits, loss, cache

    def backward(self, cache, dlogits=None) -> dict[str, np.ndarray]:
        """Gradients of the loss (or of sum(logits * dlogits)) for every name in ``params``."""
        cfg = self.cfg
        if dlogits is None:
            if cache["loss"] is None:
                raise ValueError("backward: expected dlogits, or a forward pass given labels")
            dlogits = causal_lm_loss_backward(1.0, cache["loss"])
        grads = {}

        dx, grads["lm_head.weight"], _ = linear_backward(dlogits, cache["head"])
        dx, grads["norm.weight"] = rmsnorm_backward(dx, cache["norm"])
        for i in reversed(range(cfg.n_layer)):
            L, c = f"layers.{i}", cache["layers"][i]
            # x = x + down(swiglu(gate(h), up(h))): h feeds two projections, their dh add
            dm = self.dropout.backward(dx, c["drop_mlp"])
            ds, grads[f"{L}.mlp.down_proj.weight"], _ = linear_backward(dm, c["down"])
            dgate, dup = swiglu_backward(ds, c["swiglu"])
            dh_gate, grads[f"{L}.mlp.gate_proj.weight"], _ = linear_backward(dgate, c["gate"])
            dh_up, grads[f"{L}.mlp.up_proj.weight"], _ = linear_backward(dup, c["up"])
            dh, grads[f"{L}.post_attention_layernorm.weight"] = rmsnorm_backward(
                dh_gate + dh_up, c["norm_2"]
            )
            dx = dx + dh
            # x = x + attn(rmsnorm(x)); mha_backward undoes RoPE on dq and dk itself
            da = self.dropout.backward(dx, c["drop_attn"])
            dh, g_attn = mha_backward(da, c["attn"])
            add_prefixed(grads, f"{L}.self_attn.", g_attn)
            dh, grads[f"{L}.input_layernorm.weight"] = rmsnorm_backward(dh, c["norm_1"])
            dx = dx + dh

        grads["embed_tokens.weight"] = embedding_backward(dx, cache["tok"])
        if cfg.tie_word_embeddings:  # one array, two uses: the gradients add
            grads["embed_tokens.weight"] = grads["embed_tokens.weight"] + grads["lm_head.weight"]
            grads["lm_head.weight"] = grads["embed_tokens.weight"]
        return {name: grads[name] for name in self.params}
