"""Pieces the three reference models (gpt.py, llama.py, bert.py) share; the fast twin is
``fast/blocks.py``.

    check_model_inputs(cfg, ids, mask, labels)   ids / mask / labels against the config
    load_params(shapes, params, tied)            names and shapes checked, a tied pair shared
    sub_params(params, prefix) / add_prefixed    one block's params out of, and grads into, a dict
    causal_lm_loss_forward / _backward           next-token cross-entropy (labels shifted inside)
    Dropouts(p, seed)                            residual dropout with train/eval modes
"""

from __future__ import annotations

import numpy as np

from myllm101.checks import expect_int, expect_ndim, expect_shape
from myllm101.reference.dropout import dropout_backward, dropout_forward
from myllm101.reference.embedding import check_ids
from myllm101.reference.loss import cross_entropy_backward, cross_entropy_forward


def check_model_inputs(cfg, input_ids, attention_mask=None, labels=None) -> None:
    """ids: (B, T) ints in [0, vocab_size), T <= block_size; mask and labels (B, T)."""
    expect_int("input_ids", input_ids)
    expect_ndim("input_ids", input_ids, 2)
    B, T = input_ids.shape
    if T > cfg.block_size:
        raise ValueError(
            f"input_ids: expected a sequence length <= block_size={cfg.block_size}, got {T}"
        )
    check_ids(input_ids, cfg.vocab_size)
    if attention_mask is not None:
        expect_shape("attention_mask", attention_mask, (B, T))
    if labels is not None:
        expect_int("labels", labels)


def sub_params(params: dict, prefix: str) -> dict:
    """{'layers.0.self_attn.q_proj.weight': w, ...}, 'layers.0.self_attn.'
    -> {'q_proj.weight': w, ...}: one block's params, named as its layer functions expect."""
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}


def add_prefixed(grads: dict, prefix: str, sub: dict) -> None:
    """The inverse of ``sub_params`` for gradients: grads[prefix + name] = g for each of ``sub``."""
    for k, g in sub.items():
        grads[prefix + k] = g


def causal_lm_loss_forward(logits: np.ndarray, labels: np.ndarray):
    """Next-token loss: position t predicts labels[t + 1] (HF convention; -100 is ignored).

    logits: (B, T, V), labels: (B, T) -> scalar mean loss, cache.
    """
    expect_shape("labels", labels, logits.shape[:2])
    V = logits.shape[-1]
    shift_logits = logits[:, :-1].reshape(-1, V)  # (B*(T-1), V)
    shift_labels = labels[:, 1:].reshape(-1)  # (B*(T-1),)
    loss, ce_cache = cross_entropy_forward(shift_logits, shift_labels, ignore_index=-100)
    return loss, (ce_cache, logits.shape)


def causal_lm_loss_backward(dloss, cache) -> np.ndarray:
    """-> dlogits (B, T, V); the last position predicts nothing, so its gradient is zero."""
    ce_cache, (B, T, V) = cache
    dshift = cross_entropy_backward(dloss, ce_cache)  # (B*(T-1), V)
    dlogits = np.zeros((B, T, V), dtype=dshift.dtype)
    dlogits[:, :-1] = dshift.reshape(B, T - 1, V)
    return dlogits


class Dropouts:
    """Residual dropout for a reference model: identity when p == 0 or in eval mode."""

    def __init__(self, p: float, seed: int = 0):
        self.p, self.training, self.rng = p, True, np.random.default_rng(seed)

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x, None
        return dropout_forward(x, self.p, self.rng, training=True)

    @staticmethod
    def backward(dy, cache):
        return dy if cache is None else dropout_backward(dy, cache)


def load_params(shapes: dict, params: dict, tied: tuple[str, str] | None) -> dict:
    """Check names and shapes against ``shapes``; make a tied pair share one array."""
    missing, extra = sorted(set(shapes) - set(params)), sorted(set(params) - set(shapes))
    if missing or extra:
        raise ValueError(
            f"params: expected the keys of param_shapes, missing {missing}, extra {extra}"
        )
    out = {}
    for name, shape in shapes.items():
        p = np.asarray(params[name])
        expect_shape(name, p, shape)
        out[name] = p
    if tied is not None:
        src, dst = tied
        if out[dst] is not out[src] and not np.array_equal(out[dst], out[src]):
            raise ValueError(f"params: {dst} is tied to {src} and must hold the same values")
        out[dst] = out[src]
    return out
