"""Scaled dot-product attention and the multi-head attention block, forward and backward in NumPy.

    scores = q k^T * scale            (scale = 1/sqrt(D) by default)
    p      = softmax(scores + mask)   (masked keys get -inf; a row with no key left gives p = 0)
    out    = p v

Masks. ``causal``: query t may look at keys up to its own position. With S keys and T <= S queries
the queries are the *last* T positions (bottom-right alignment, the KV-cache case): query t sits at
absolute position S - T + t. ``key_padding_mask`` (B, S) marks real tokens True; padded keys are
never attended to. A query row with no allowed key (e.g. a left-padding row under causal masking)
outputs zeros and gets zero gradients instead of the NaN of a 0/0 softmax.

Grouped-query attention (GQA): q has H heads, k/v have Hkv heads with H % Hkv == 0, and query head h
reads kv head h // (H // Hkv). Multi-query (Hkv = 1) and plain multi-head (Hkv = H) are the two ends.
"""

import numpy as np

from myllm101.checks import (
    check_qkv,
    expect_divisible,
    expect_dtype,
    expect_float,
    expect_ndim,
    expect_positive,
    expect_shape,
)
from myllm101.reference.rope import rope_backward, rope_forward

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


def attention_mask(T: int, S: int, causal: bool, key_padding_mask=None):
    """Boolean (B or 1, 1, T, S) mask, True = query t may attend to key s; None = no masking.

    Causal, bottom-right aligned: key s is visible to query t when s <= S - T + t.
    """
    mask = None
    if causal:
        t = np.arange(T)[:, None]  # (T, 1)
        s = np.arange(S)[None, :]  # (1, S)
        mask = (s <= S - T + t)[None, None]  # (1, 1, T, S)
    if key_padding_mask is not None:
        pad = key_padding_mask[:, None, None, :]  # (B, 1, 1, S)
        mask = pad if mask is None else mask & pad  # (B, 1, T, S)
    return mask


def scaled_dot_product_attention_forward(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    causal: bool = False,
    key_padding_mask: np.ndarray | None = None,
    scale: float | None = None,
):
    """q: (B, H, T, D), k/v: (B, Hkv, S, D), key_padding_mask: (B, S) bool -> out (B, H, T, D), cache."""
    check_qkv(q, k, v, key_padding_mask, scale)
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    G = H // Hkv  # query heads per kv head
    scale = 1.0 / D**0.5 if scale is None else float(scale)  # a Python float keeps q's dtype
    # group the query heads by the kv head they read: (B, Hkv, G, T, D); k/v get a G axis of 1
    qg = q.reshape(B, Hkv, G, T, D)
    kg, vg = k[:, :, None], v[:, :, None]  # (B, Hkv, 1, S, D)
    scores = (qg @ kg.swapaxes(-1, -2)) * scale  # (B, Hkv, G, T, S)

    mask = attention_mask(T, S, causal, key_padding_mask)  # (B or 1, 1, T, S) or None
    if mask is not None:
        mask = mask[:, :, None]  # (B or 1, 1, 1, T, S): same mask for every head
        scores = np.where(mask, scores, -np.inf)
    # softmax, stable: subtract the row max; a row with every key masked has max -inf -> use 0
    row_max = scores.max(axis=-1, keepdims=True)  # (B, Hkv, G, T, 1)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    e = np.exp(scores - row_max)  # exp(-inf) = 0 for masked keys
    denom = e.sum(axis=-1, keepdims=True)
    p = e / np.where(denom > 0, denom, 1.0)  # fully masked row: 0 / 1 = 0, not 0 / 0
    p = p.astype(q.dtype, copy=False)
    out = (p @ vg).reshape(B, H, T, D)  # (B, Hkv, G, T, D) -> (B, H, T, D)
    return out, (q, k, v, p, scale)


def scaled_dot_product_attention_backward(dout: np.ndarray, cache):
    """dout: (B, H, T, D) -> (dq (B, H, T, D), dk (B, Hkv, S, D), dv (B, Hkv, S, D)).

    dk, dv sum over the G query heads that share each kv head.
    """
    q, k, v, p, scale = cache
    expect_shape("dout", dout, q.shape)
    B, H, T, D = q.shape
    Hkv = k.shape[1]
    G = H // Hkv
    qg, dog = q.reshape(B, Hkv, G, T, D), dout.reshape(B, Hkv, G, T, D)
    kg, vg = k[:, :, None], v[:, :, None]  # (B, Hkv, 1, S, D)

    # out = p v
    dv = (p.swapaxes(-1, -2) @ dog).sum(axis=2)  # (B, Hkv, G, S, D) -> (B, Hkv, S, D)
    dp = dog @ vg.swapaxes(-1, -2)  # (B, Hkv, G, T, S)
    # softmax: ds = p * (dp - sum(p * dp)); masked keys and dead rows have p = 0, so ds = 0 there
    ds = p * (dp - np.sum(p * dp, axis=-1, keepdims=True))  # (B, Hkv, G, T, S)
    # scores = q k^T * scale
    dq = (ds @ kg) * scale  # (B, Hkv, G, T, D)
    dk = (ds.swapaxes(-1, -2) @ qg).sum(axis=2) * scale  # (B, Hkv, S, D)
    return dq.reshape(B, H, T, D), dk, dv


def _check_params(x, params, n_heads, n_kv_heads):
    expect_float("x", x)
    expect_ndim("x", x, 3)
    C = x.shape[-1]
    expect_positive("n_heads", n_heads)
    expect_positive("n_kv_heads", n_kv_heads)
    expect_divisible("n_heads", n_heads, "n_kv_heads", n_kv_heads)
    known = {f"{p}.{w}" for p in PROJECTIONS for w in ("weight", "bias")}
    if unknown := sorted(set(params) - known):
        raise ValueError(f"params: expected keys among {sorted(known)}, got unknown {unknown}")
    for name in (f"{p}.weight" for p in PROJECTIONS):
        if name not in params:
            raise ValueError(f"params: expected key {name!r}, got keys {sorted(params)}")
    wq = params["q_proj.weight"]
    expect_ndim("q_proj.weight", wq, 2)
    expect_divisible("q_proj.weight rows", wq.shape[0], "n_heads", n_heads)
    D = wq.shape[0] // n_heads
    shapes = {
        "q_proj": (n_heads * D, C),
        "k_proj": (n_kv_heads * D, C),
        "v_proj": (n_kv_heads * D, C),
        "o_proj": (C, n_heads * D),
    }
    for proj, shape in shapes.items():
        expect_shape(f"{proj}.weight", params[f"{proj}.weight"], shape)
        if f"{proj}.bias" in params:
            expect_shape(f"{proj}.bias", params[f"{proj}.bias"], (shape[0],))
    for name, value in params.items():
        expect_dtype(name, value, (str(x.dtype),))  # mixed dtypes would silently upcast
    return D


def _linear(x, params, name):
    """x @ W^T (+ b) for the projection ``name``: (..., in) -> (..., out)."""
    y = x @ params[f"{name}.weight"].T
    bias = params.get(f"{name}.bias")
    return y if bias is None else y + bias


def mha_forward(
    x: np.ndarray,
    params: dict,
    n_heads: int,
    n_kv_heads: int | None = None,
    causal: bool = True,
    key_padding_mask: np.ndarray | None = None,
    rope=None,
):
    """Multi-head (grouped-query) self-attention block.

    x: (B, T, C); params: "q_proj.weight" (H*D, C), "k_proj.weight" / "v_proj.weight" (Hkv*D, C),
    "o_proj.weight" (C, H*D), optional "<proj>.bias"; rope: None or (cos, sin), each (T, D),
    applied to q and k -> y: (B, T, C), cache.
    """
    n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
    D = _check_params(x, params, n_heads, n_kv_heads)
    B, T, C = x.shape
    # project, then split the feature axis into heads: (B, T, H*D) -> (B, H, T, D)
    q = _linear(x, params, "q_proj").reshape(B, T, n_heads, D).transpose(0, 2, 1, 3)
    k = _linear(x, params, "k_proj").reshape(B, T, n_kv_heads, D).transpose(0, 2, 1, 3)
    v = _linear(x, params, "v_proj").reshape(B, T, n_kv_heads, D).transpose(0, 2, 1, 3)
    rope_caches = None
    if rope is not None:
        cos, sin = rope
        q, q_rope = rope_forward(q, cos, sin)
        k, k_rope = rope_forward(k, cos, sin)
        rope_caches = (q_rope, k_rope)
    att, att_cache = scaled_dot_product_attention_forward(
        q, k, v, causal=causal, key_padding_mask=key_padding_mask
    )
    merged = att.transpose(0, 2, 1, 3).reshape(B, T, n_heads * D)  # heads back side by side
    y = _linear(merged, params, "o_proj")  # (B, T, C)
    cache = (x, params, merged, att_cache, rope_caches, n_heads, n_kv_heads, D)
    return y, cache


def mha_backward(dy: np.ndarray, cache):
    """dy: (B, T, C) -> (dx (B, T, C), grads: dict with the same keys as params)."""
    x, params, merged, att_cache, rope_caches, n_heads, n_kv_heads, D = cache
    expect_shape("dy", dy, x.shape)
    B, T, C = x.shape
    grads = {}
    # y = merged @ Wo^T + bo
    grads["o_proj.weight"] = dy.reshape(-1, C).T @ merged.reshape(-1, n_heads * D)  # (C, H*D)
    if "o_proj.bias" in params:
        grads["o_proj.bias"] = dy.reshape(-1, C).sum(axis=0)
    dmerged = dy @ params["o_proj.weight"]  # (B, T, H*D)
    datt = dmerged.reshape(B, T, n_heads, D).transpose(0, 2, 1, 3)  # (B, H, T, D)
    dq, dk, dv = scaled_dot_product_attention_backward(datt, att_cache)
    if rope_caches is not None:
        dq, dk = rope_backward(dq, rope_caches[0]), rope_backward(dk, rope_caches[1])

    dx = np.zeros_like(x)
    for name, dh, heads in (
        ("q_proj", dq, n_heads),
        ("k_proj", dk, n_kv_heads),
        ("v_proj", dv, n_kv_heads),
    ):
        dproj = dh.transpose(0, 2, 1, 3).reshape(B * T, heads * D)  # (B*T, heads*D)
        grads[f"{name}.weight"] = dproj.T @ x.reshape(-1, C)  # (heads*D, C)
        if f"{name}.bias" in params:
            grads[f"{name}.bias"] = dproj.sum(axis=0)
        dx += (dproj @ params[f"{name}.weight"]).reshape(B, T, C)
    return dx, {key: grads[key] for key in params}
