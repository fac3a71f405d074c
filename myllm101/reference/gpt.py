"""GPT-2 (Radford et al., 2019) in NumPy, with a hand-written backward through the whole model.

    x = wte[ids] + wpe[0..T-1]                                   # (B, T, C)
    for each block:  x = x + attn(ln_1(x))                       # causal self-attention
                     x = x + c_proj(gelu_tanh(c_fc(ln_2(x))))    # MLP, width 4C
    logits = ln_f(x) @ wte.T                                     # (B, T, V), LM head tied to wte
    loss = cross_entropy(logits[:, :-1], ids[:, 1:])             # labels shifted inside the model

Built only from the reference layers; ``backward`` calls their backward functions in reverse order.

Parameter names equal the fast model's ``state_dict`` keys (``myllm101.fast.gpt.GPT``), GPT-2's
own names with every weight stored (out, in)::

    wte.weight (V, C)   wpe.weight (block_size, C)
    h.{i}.ln_1.{weight,bias}   h.{i}.attn.c_attn.{weight,bias} (3C, C)   h.{i}.attn.c_proj.* (C, C)
    h.{i}.ln_2.{weight,bias}   h.{i}.mlp.c_fc.{weight,bias} (4C, C)   h.{i}.mlp.c_proj.{weight,bias}
    ln_f.{weight,bias}         lm_head.weight (V, C)

``attn.c_attn`` holds the q, k and v projections stacked by rows ([q | k | v] along the output
axis); attention itself is the shared ``reference/attention.py`` block, which takes them apart.

Tied weights: with ``tie_word_embeddings`` the fast state_dict lists both ``wte.weight`` and
``lm_head.weight`` (one tensor under two names). Here ``lm_head.weight`` is the very same array as
``wte.weight``; backward sums the embedding and the LM-head gradient into one array and reports it
under both names. ``parameter_names()`` lists each array once (what an optimizer should update).
"""

from __future__ import annotations

import numpy as np

from myllm101.config import GPTConfig
from myllm101.reference.activations import gelu_backward, gelu_forward
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
from myllm101.reference.layernorm import layernorm_backward, layernorm_forward
from myllm101.reference.linear import linear_backward, linear_forward

QKV = ("q_proj", "k_proj", "v_proj")  # the row blocks of c_attn, in order


def attention_params(attn: dict) -> dict:
    """One block's GPT-2 attention params ("c_attn.weight", ...) -> the names of the attention
    block ``mha_forward`` takes: c_attn's three row blocks are q_proj, k_proj, v_proj (views, no
    copy) and c_proj is o_proj."""
    C = attn["c_proj.weight"].shape[0]
    out = {}
    for j, name in enumerate(QKV):
        for kind in ("weight", "bias"):
            if f"c_attn.{kind}" in attn:
                out[f"{name}.{kind}"] = attn[f"c_attn.{kind}"][j * C : (j + 1) * C]
    for kind in ("weight", "bias"):
        if f"c_proj.{kind}" in attn:
            out[f"o_proj.{kind}"] = attn[f"c_proj.{kind}"]
    return out


def attention_grads(grads: dict) -> dict:
    """``mha_backward``'s gradients -> GPT-2's names: q/k/v stacked back into c_attn's rows."""
    out = {}
    for kind in ("weight", "bias"):
        if f"q_proj.{kind}" in grads:
            out[f"c_attn.{kind}"] = np.concatenate([grads[f"{n}.{kind}"] for n in QKV])
        if f"o_proj.{kind}" in grads:
            out[f"c_proj.{kind}"] = grads[f"o_proj.{kind}"]
    return out


def param_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter name -> shape, in the fast model's state_dict order."""
    C, V = cfg.n_embd, cfg.vocab_size
    shapes = {"wte.weight": (V, C), "wpe.weight": (cfg.block_size, C)}

    def add(name, out_features, in_features=None):
        if in_features is None:  # a LayerNorm
            shapes[f"{name}.weight"] = (out_features,)
        else:
            shapes[f"{name}.weight"] = (out_features, in_features)
        if cfg.bias:
            shapes[f"{name}.bias"] = (out_features,)

    for i in range(cfg.n_layer):
        add(f"h.{i}.ln_1", C)
        add(f"h.{i}.attn.c_attn", 3 * C, C)
        add(f"h.{i}.attn.c_proj", C, C)
        add(f"h.{i}.ln_2", C)
        add(f"h.{i}.mlp.c_fc", 4 * C, C)
        add(f"h.{i}.mlp.c_proj", C, 4 * C)
    add("ln_f", C)
    shapes["lm_head.weight"] = (V, C)
    return shapes


def init_params(cfg: GPTConfig, seed: int = 0, dtype=np.float64) -> dict[str, np.ndarray]:
    """GPT-2 init: N(0, 0.02) weights, zero biases, unit LayerNorm scales, and the projections
    that write into the residual stream (attn.c_proj, mlp.c_proj) scaled by 1/sqrt(2 * n_layer)."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith(".bias"):
            params[name] = np.zeros(shape, dtype)
        elif len(shape) == 1:
            params[name] = np.ones(shape, dtype)
        else:
            std = 0.02
            if name.endswith("c_proj.weight"):
                std /= np.sqrt(2 * cfg.n_layer)
            params[name] = (rng.standard_normal(shape) * std).astype(dtype)
    if cfg.tie_word_embeddings:
        params["lm_head.weight"] = params["wte.weight"]
    return params


class ReferenceGPT:
    """GPT-2 in NumPy. ``params`` maps state_dict names to arrays (float64 or float32)."""

    def __init__(self, cfg: GPTConfig, params: dict | None = None, seed: int = 0):
        self.cfg = cfg
        tied = ("wte.weight", "lm_head.weight") if cfg.tie_word_embeddings else None
        if params is None:
            params = init_params(cfg, seed)
        self.params = load_params(param_shapes(cfg), params, tied)
        self.dropout = Dropouts(cfg.dropout, seed)

    def parameter_names(self) -> list[str]:
        """Each array once (the tied lm_head.weight is left out): what an optimizer updates."""
        names = list(self.params)
        if self.cfg.tie_word_embeddings:
            names.remove("lm_head.weight")
        return names

    def train(self, mode: bool = True):
        self.dropout.training = mode
        return self

    def eval(self):
        return self.train(False)

    def _ln(self, name, x):
        p = self.params
        return layernorm_forward(
            x, p[f"{name}.weight"], p.get(f"{name}.bias"), eps=self.cfg.layer_norm_eps
        )

    def forward(self, input_ids, attention_mask=None, labels=None):
        """input_ids: (B, T) -> (logits (B, T, V), loss or None, cache)."""
        cfg, p = self.cfg, self.params
        check_model_inputs(cfg, input_ids, attention_mask, labels)
        B, T = input_ids.shape
        mask = None if attention_mask is None else attention_mask.astype(bool)  # True = real token

        tok, c_tok = embedding_forward(input_ids, p["wte.weight"])  # (B, T, C)
        pos, c_pos = embedding_forward(np.arange(T), p["wpe.weight"])  # (T, C)
        x, c_drop = self.dropout.forward(tok + pos)  # (B, T, C)
        blocks = []
        for i in range(cfg.n_layer):
            c = {}
            h, c["ln_1"] = self._ln(f"h.{i}.ln_1", x)
            a, c["attn"] = mha_forward(
                h,
                attention_params(sub_params(p, f"h.{i}.attn.")),
                cfg.n_head,
                cfg.n_head,
                causal=True,
                key_padding_mask=mask,
            )
            a, c["drop_attn"] = self.dropout.forward(a)
            x = x + a
            h, c["ln_2"] = self._ln(f"h.{i}.ln_2", x)
            h, c["c_fc"] = linear_forward(
                h, p[f"h.{i}.mlp.c_fc.weight"], p.get(f"h.{i}.mlp.c_fc.bias")
            )  # (B, T, 4C)
            h, c["gelu"] = gelu_forward(h, approximate="tanh")
            h, c["c_proj"] = linear_forward(
                h, p[f"h.{i}.mlp.c_proj.weight"], p.get(f"h.{i}.mlp.c_proj.bias")
            )  # (B, T, C)
            h, c["drop_mlp"] = self.dropout.forward(h)
            x = x + h
            blocks.append(c)
        x, c_lnf = self._ln("ln_f", x)
        logits, c_head = linear_forward(x, p["lm_head.weight"], None)  # (B, T, V)

        loss, c_loss = None, None
        if labels is not None:
            loss, c_loss = causal_lm_loss_forward(logits, labels)
        cache = dict(
            tok=c_tok, pos=c_pos, drop=c_drop, blocks=blocks, ln_f=c_lnf, head=c_head, loss=c_loss
        )
        return logits, loss, cache

    def backward(self, cache, dlogits=None) -> dict[str, np.ndarray]:
        """Gradients of the loss (or of sum(logits * dlogits)) for every name in ``params``."""
        cfg, p = self.cfg, self.params
        if dlogits is None:
            if cache["loss"] is None:
                raise ValueError("backward: expected dlogits, or a forward pass given labels")
            dlogits = causal_lm_loss_backward(1.0, cache["loss"])
        grads = {}

        dx, grads["lm_head.weight"], _ = linear_backward(dlogits, cache["head"])
        dx, grads["ln_f.weight"], dbias = layernorm_backward(dx, cache["ln_f"])
        if cfg.bias:
            grads["ln_f.bias"] = dbias
        for i in reversed(range(cfg.n_layer)):
            c = cache["blocks"][i]
            # x = x + mlp(ln_2(x)): the residual passes dx through, the branch adds its own
            dh = self.dropout.backward(dx, c["drop_mlp"])
            dh, *g_proj = linear_backward(dh, c["c_proj"])
            dh = gelu_backward(dh, c["gelu"])
            dh, *g_fc = linear_backward(dh, c["c_fc"])
            dh, *g_ln2 = layernorm_backward(dh, c["ln_2"])
            dx = dx + dh
            # x = x + attn(ln_1(x))
            da = self.dropout.backward(dx, c["drop_attn"])
            dh, g_attn = mha_backward(da, c["attn"])
            dh, *g_ln1 = layernorm_backward(dh, c["ln_1"])
            dx = dx + dh
            for name, (dw, db) in (
                (f"h.{i}.mlp.c_proj", g_proj),
                (f"h.{i}.mlp.c_fc", g_fc),
                (f"h.{i}.ln_2", g_ln2),
                (f"h.{i}.ln_1", g_ln1),
            ):
                grads[f"{name}.weight"] = dw
                if cfg.bias:
                    grads[f"{name}.bias"] = db
            add_prefixed(grads, f"h.{i}.attn.", attention_grads(g_attn))

        dx = self.dropout.backward(dx, cache["drop"])  # d(tok + pos)
        grads["wpe.weight"] = embedding_backward(dx.sum(axis=0), cache["pos"])
        grads["wte.weight"] = embedding_backward(dx, cache["tok"])
        if cfg.tie_word_embeddings:  # one array, two uses: the gradients add
            grads["wte.weight"] = grads["wte.weight"] + grads["lm_head.weight"]
            grads["lm_head.weight"] = grads["wte.weight"]
        return {name: grads[name] for name in p}
