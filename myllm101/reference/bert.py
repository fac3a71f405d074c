"""BERT (Devlin et al., 2019) in NumPy, with a hand-written backward through the whole model.

    x = LN(word[ids] + position[0..T-1] + token_type[type_ids])      # (B, T, C)
    for each layer:  x = LN(x + attn(x))              # bidirectional, padding keys masked out
                     x = LN(x + fc_out(gelu(fc_in(x))))                # post-LN: norm after the add
    head "mlm": logits = decoder(LN(gelu(dense(x))))  # (B, T, V), decoder.weight tied to word emb.
                loss = cross_entropy(logits, labels), labels -100 where nothing was masked
    head "cls": pooled = tanh(pooler(x[:, 0]))        # the [CLS] position
                logits = classifier(pooled)           # (B, num_labels), loss = cross_entropy

Compared with GPT-2 (reference/gpt.py): the LayerNorm comes *after* each residual add, attention is
not causal, GELU is the exact erf form, and a padding mask keeps real tokens from attending to pads.

Parameter names equal the fast model's ``state_dict`` keys (``myllm101.fast.bert.Bert``)::

    embeddings.{word,position,token_type}_embeddings.weight   embeddings.layer_norm.{weight,bias}
    layers.{i}.attn.{q,k,v,o}_proj.{weight,bias}   layers.{i}.attn_norm.{weight,bias}
    layers.{i}.mlp.fc_in.{weight,bias} (I, C)   layers.{i}.mlp.fc_out.{weight,bias} (C, I)
    layers.{i}.mlp_norm.{weight,bias}
    mlm_head.dense.{weight,bias}   mlm_head.layer_norm.{weight,bias}
    mlm_head.decoder.weight (V, C) (= embeddings.word_embeddings.weight)   mlm_head.decoder.bias (V,)
    pooler.{weight,bias} (C, C)    classifier.{weight,bias} (num_labels, C)

Both heads always exist; a pass through one head gives zero gradients to the other's parameters.
The tied decoder weight works as in reference/gpt.py: one array, gradients of both uses summed,
reported under both names.
"""

from __future__ import annotations

import numpy as np

from myllm101.checks import expect_shape
from myllm101.config import BertConfig
from myllm101.reference.activations import gelu_backward, gelu_forward
from myllm101.reference.attention import mha_backward, mha_forward
from myllm101.reference.blocks import (
    Dropouts,
    add_prefixed,
    check_model_inputs,
    load_params,
    sub_params,
)
from myllm101.reference.embedding import embedding_backward, embedding_forward
from myllm101.reference.layernorm import layernorm_backward, layernorm_forward
from myllm101.reference.linear import linear_backward, linear_forward
from myllm101.reference.loss import cross_entropy_backward, cross_entropy_forward

HEADS = ("mlm", "cls")
TIED = ("embeddings.word_embeddings.weight", "mlm_head.decoder.weight")


def param_shapes(cfg: BertConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter name -> shape, in the fast model's state_dict order."""
    C, V, I = cfg.n_embd, cfg.vocab_size, cfg.intermediate_size
    shapes = {
        "embeddings.word_embeddings.weight": (V, C),
        "embeddings.position_embeddings.weight": (cfg.block_size, C),
        "embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, C),
    }

    def add(name, out_features, in_features=None):  # a Linear, or a LayerNorm without in_features
        shapes[f"{name}.weight"] = (
            (out_features,) if in_features is None else (out_features, in_features)
        )
        shapes[f"{name}.bias"] = (out_features,)

    add("embeddings.layer_norm", C)
    for i in range(cfg.n_layer):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            add(f"layers.{i}.attn.{proj}", C, C)
        add(f"layers.{i}.attn_norm", C)
        add(f"layers.{i}.mlp.fc_in", I, C)
        add(f"layers.{i}.mlp.fc_out", C, I)
        add(f"layers.{i}.mlp_norm", C)
    add("mlm_head.dense", C, C)
    add("mlm_head.layer_norm", C)
    add("mlm_head.decoder", V, C)
    add("pooler", C, C)
    add("classifier", cfg.num_labels, C)
    return shapes


def init_params(cfg: BertConfig, seed: int = 0, dtype=np.float64) -> dict[str, np.ndarray]:
    """N(0, 0.02) matrices and embeddings, zero biases, unit LayerNorm scales; residual
    projections (o_proj, fc_out) scaled by 1/sqrt(2 * n_layer), like the fast model."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith(".bias"):
            params[name] = np.zeros(shape, dtype)
        elif len(shape) == 1:
            params[name] = np.ones(shape, dtype)
        else:
            std = 0.02
            if name.endswith(("o_proj.weight", "fc_out.weight")):
                std /= np.sqrt(2 * cfg.n_layer)
            params[name] = (rng.standard_normal(shape) * std).astype(dtype)
    params[TIED[1]] = params[TIED[0]]
    return params


class ReferenceBert:
    """BERT in NumPy. ``params`` maps state_dict names to arrays (float64 or float32)."""

    def __init__(self, cfg: BertConfig, params: dict | None = None, seed: int = 0):
        self.cfg = cfg
        if params is None:
            params = init_params(cfg, seed)
        self.params = load_params(param_shapes(cfg), params, TIED)
        self.dropout = Dropouts(cfg.dropout, seed)

    def parameter_names(self) -> list[str]:
        """Each array once (the tied decoder weight is left out): what an optimizer updates."""
        return [n for n in self.params if n != TIED[1]]

    def train(self, mode: bool = True):
        self.dropout.training = mode
        return self

    def eval(self):
        return self.train(False)

    def _linear(self, name, x):
        return linear_forward(x, self.params[f"{name}.weight"], self.params[f"{name}.bias"])

    def _ln(self, name, x):
        p = self.params
        return layernorm_forward(
            x, p[f"{name}.weight"], p[f"{name}.bias"], eps=self.cfg.layer_norm_eps
        )

    def forward(self, input_ids, attention_mask=None, labels=None, token_type_ids=None, head="mlm"):
        """input_ids: (B, T) -> (logits, loss or None, cache).

        head "mlm": logits (B, T, V), labels (B, T) with -100 at unmasked positions.
        head "cls": logits (B, num_labels), labels (B,) class ids.
        attention_mask: (B, T), 1/True = real token; token_type_ids: (B, T), default all 0.
        """
        cfg, p = self.cfg, self.params
        if head not in HEADS:
            raise ValueError(f"head: expected one of {HEADS}, got {head!r}")
        check_model_inputs(cfg, input_ids, attention_mask, labels)
        B, T = input_ids.shape
        if token_type_ids is None:
            token_type_ids = np.zeros((B, T), dtype=np.int64)
        expect_shape("token_type_ids", token_type_ids, (B, T))
        mask = None if attention_mask is None else attention_mask.astype(bool)  # True = real token

        word, c_word = embedding_forward(input_ids, p["embeddings.word_embeddings.weight"])
        pos, c_pos = embedding_forward(np.arange(T), p["embeddings.position_embeddings.weight"])
        typ, c_typ = embedding_forward(token_type_ids, p["embeddings.token_type_embeddings.weight"])
        x, c_emb_ln = self._ln("embeddings.layer_norm", word + pos + typ)  # (B, T, C)
        x, c_emb_drop = self.dropout.forward(x)
        layers = []
        for i in range(cfg.n_layer):
            L, c = f"layers.{i}", {}
            a, c["attn"] = mha_forward(
                x,
                sub_params(p, f"{L}.attn."),
                cfg.n_head,
                cfg.n_head,
                causal=False,
                key_padding_mask=mask,
            )
            a, c["drop_attn"] = self.dropout.forward(a)
            x, c["attn_norm"] = self._ln(f"{L}.attn_norm", x + a)  # post-LN
            h, c["fc_in"] = self._linear(f"{L}.mlp.fc_in", x)  # (B, T, I)
            h, c["gelu"] = gelu_forward(h)
            h, c["fc_out"] = self._linear(f"{L}.mlp.fc_out", h)  # (B, T, C)
            h, c["drop_mlp"] = self.dropout.forward(h)
            x, c["mlp_norm"] = self._ln(f"{L}.mlp_norm", x + h)
            layers.append(c)

        c_head = {"name": head}
        if head == "mlm":
            h, c_head["dense"] = self._linear("mlm_head.dense", x)
            h, c_head["gelu"] = gelu_forward(h)
            h, c_head["ln"] = self._ln("mlm_head.layer_norm", h)
            logits, c_head["decoder"] = self._linear("mlm_head.decoder", h)  # (B, T, V)
        else:
            z, c_head["pooler"] = self._linear("pooler", x[:, 0])  # (B, C): the first token
            pooled = np.tanh(z)
            c_head["pooled"] = pooled
            pooled, c_head["drop"] = self.dropout.forward(pooled)
            logits, c_head["classifier"] = self._linear("classifier", pooled)  # (B, num_labels)

        loss, c_loss = None, None
        if labels is not None:
            expect_shape("labels", labels, logits.shape[:-1])
            V = logits.shape[-1]
            loss, c_loss = cross_entropy_forward(
                logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100
            )
        cache = dict(
            shape=(B, T),
            word=c_word,
            pos=c_pos,
            typ=c_typ,
            emb_ln=c_emb_ln,
            emb_drop=c_emb_drop,
            layers=layers,
            head=c_head,
            loss=c_loss,
            logits_shape=logits.shape,
        )
        return logits, loss, cache

    def backward(self, cache, dlogits=None) -> dict[str, np.ndarray]:
        """Gradients of the loss (or of sum(logits * dlogits)) for every name in ``params``."""
        cfg = self.cfg
        if dlogits is None:
            if cache["loss"] is None:
                raise ValueError("backward: expected dlogits, or a forward pass given labels")
            dlogits = cross_entropy_backward(1.0, cache["loss"]).reshape(cache["logits_shape"])
        expect_shape("dlogits", dlogits, cache["logits_shape"])
        B, T = cache["shape"]
        grads = {name: np.zeros_like(p) for name, p in self.params.items()}  # unused head: 0

        def put(name, g):  # g = (dweight, dbias)
            grads[f"{name}.weight"], grads[f"{name}.bias"] = g

        c = cache["head"]
        if c["name"] == "mlm":
            dh, *g = linear_backward(dlogits, c["decoder"])
            put("mlm_head.decoder", g)
            dh, *g = layernorm_backward(dh, c["ln"])
            put("mlm_head.layer_norm", g)
            dh = gelu_backward(dh, c["gelu"])
            dx, *g = linear_backward(dh, c["dense"])
            put("mlm_head.dense", g)
        else:
            dpooled, *g = linear_backward(dlogits, c["classifier"])
            put("classifier", g)
            dpooled = self.dropout.backward(dpooled, c["drop"])
            dz = dpooled * (1.0 - c["pooled"] ** 2)  # tanh'(z) = 1 - tanh(z)^2
            dcls, *g = linear_backward(dz, c["pooler"])
            put("pooler", g)
            dx = np.zeros((B, T, cfg.n_embd), dtype=dcls.dtype)
            dx[:, 0] = dcls  # only the first position fed the pooler

        for i in reversed(range(cfg.n_layer)):
            L, c = f"layers.{i}", cache["layers"][i]
            # x = LN(x + mlp(x)): through the norm first, then the add splits dx into two paths
            dsum, *g = layernorm_backward(dx, c["mlp_norm"])
            put(f"{L}.mlp_norm", g)
            dh = self.dropout.backward(dsum, c["drop_mlp"])
            dh, *g = linear_backward(dh, c["fc_out"])
            put(f"{L}.mlp.fc_out", g)
            dh = gelu_backward(dh, c["gelu"])
            dh, *g = linear_backward(dh, c["fc_in"])
            put(f"{L}.mlp.fc_in", g)
            dx = dsum + dh
            # x = LN(x + attn(x))
            dsum, *g = layernorm_backward(dx, c["attn_norm"])
            put(f"{L}.attn_norm", g)
            da = self.dropout.backward(dsum, c["drop_attn"])
            dh, g_attn = mha_backward(da, c["attn"])
            add_prefixed(grads, f"{L}.attn.", g_attn)
            dx = dsum + dh

        dx = self.dropout.backward(dx, cache["emb_drop"])
        demb, *g = layernorm_backward(dx, cache["emb_ln"])
        put("embeddings.layer_norm", g)
        grads["embeddings.token_type_embeddings.weight"] = embedding_backward(demb, cache["typ"])
        grads["embeddings.position_embeddings.weight"] = embedding_backward(
            demb.sum(axis=0), cache["pos"]
        )
        word = embedding_backward(demb, cache["word"]) + grads[TIED[1]]  # both uses of one array
        grads[TIED[0]] = grads[TIED[1]] = word
        return grads
