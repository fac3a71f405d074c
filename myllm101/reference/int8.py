"""Symmetric int8 quantization of weights and activations, and the int8 matmul that uses it.

Format (symmetric, no zero point):

    scale = max|v| / 127            over the group of values v that share one scale
    q     = clip(round(v / scale), -127, 127)   stored as int8 (-128 is never produced)
    v    ~= q * scale                            (dequantize)

A group with max|v| == 0 gets scale 1 (its q are all 0), so no division by zero and no NaN.
Groups (the shape of ``scale``):
- per tensor:          one scale, shape ()
- per output channel:  one per row of a weight w (out, in), shape (out,)
- per token:           one per row of activations x (N, K), shape (N, 1)

Error bound: round-to-nearest moves each value by at most half a step and |v / scale| <= 127 so the
clip never bites, hence |v - q * scale| <= scale / 2 elementwise (plus one float rounding).

``int8_matmul`` sums int8 * int8 products in int32, which is exact while K * 127 * 127 < 2**31
(K < 133,000). ``w8a8_linear_forward`` quantizes both operands and rescales the exact integer sum:

    y[n, o] = (sum_k qx[n, k] * qw[o, k]) * sx[n] * sw[o] + b[o]
"""

import numpy as np

from myllm101.checks import (
    QMAX,
    check_ids,
    check_int8_linear,
    check_int8_operands,
    check_int8_scale,
    expect_dim,
    expect_dtype,
    expect_float,
    expect_ndim,
)
from myllm101.checks.quant import check_int8_table


def _quantize(v: np.ndarray, absmax: np.ndarray):
    """q = clip(round(v / scale), -127, 127) with scale = absmax / 127 (1 where absmax is 0)."""
    scale = np.where(absmax > 0, absmax / QMAX, 1).astype(v.dtype)
    q = np.clip(np.round(v / scale), -QMAX, QMAX).astype(np.int8)
    return q, scale


def quantize_per_tensor(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w: any float array -> (q: int8 like w, scale: () in w's dtype)."""
    expect_float("w", w)
    return _quantize(w, np.max(np.abs(w), initial=0))


def quantize_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w: (out, in) -> (q: (out, in) int8, scale: (out,)): one scale per output channel (row)."""
    expect_float("w", w)
    expect_ndim("w", w, 2)
    absmax = np.max(np.abs(w), axis=1, keepdims=True, initial=0)  # (out, 1)
    q, scale = _quantize(w, absmax)
    return q, scale[:, 0]


def quantize_per_token(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x: (N, K) -> (q: (N, K) int8, scale: (N, 1)): one scale per token (row)."""
    expect_float("x", x)
    expect_ndim("x", x, 2)
    return _quantize(x, np.max(np.abs(x), axis=1, keepdims=True, initial=0))


def dequantize(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """q: int8 (rows, ...) with scale (), (rows,) or (rows, 1) -> q * scale in scale's dtype."""
    expect_dtype("q", q, ("int8",))
    check_int8_scale(q, scale)
    scale = scale[:, None] if scale.ndim == 1 else scale  # per row: (rows,) -> (rows, 1)
    return q.astype(scale.dtype) * scale


def int8_embedding_forward(ids: np.ndarray, q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Lookup in an int8 table: ids (...) -> dequantize(q, scale)[ids]: (..., C) in scale's dtype.

    q: (V, C) int8, scale: (V,), one per row (``quantize_per_channel`` of the float table). A tied
    LM head quantized per output channel has exactly these codes: the head's row o is token o's
    embedding, so one int8 copy serves both. Only the looked-up rows are expanded to float.
    Inference only (the codes have no gradient).
    """
    check_int8_table(q, scale)
    check_ids(ids, q.shape[0])
    return q[ids].astype(scale.dtype) * scale[ids][..., None]  # (..., C)


def int8_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a: (M, K) int8, b: (N, K) int8 -> a @ b.T: (M, N) int32, exact.

    Cast to int32 *before* multiplying: an int8 product (up to 127 * 127) and its sum overflow int8.
    """
    check_int8_operands(a, b)
    return a.astype(np.int32) @ b.astype(np.int32).T  # (M, N)


def int8_linear_forward(x: np.ndarray, w_q: np.ndarray, w_scale: np.ndarray, b=None):
    """Weight-only int8: y = x @ dequantize(w_q, w_scale).T + b.

    x: (..., in) float, w_q: (out, in) int8, w_scale: () or (out,), b: (out,) or None
    -> y: (..., out) in x's dtype, cache. The weight is stored in int8 (4x smaller than float32)
    and expanded just before the matmul, which runs in float.
    """
    check_int8_linear(x, w_q, w_scale, b)
    w = dequantize(w_q, w_scale).astype(x.dtype)  # (out, in)
    y = x @ w.T  # (..., out)
    if b is not None:
        y = y + b
    return y, (w,)


def int8_linear_backward(dy: np.ndarray, cache) -> np.ndarray:
    """dy: (..., out) -> dx: (..., in).

    Straight-through: the weight is frozen and rounding is treated as the identity, so the
    gradient flows through the dequantized weight exactly like an ordinary linear layer.
    """
    (w,) = cache
    expect_dim("dy", dy, -1, w.shape[0], "out features")
    return dy @ w  # (..., in)


def w8a8_linear_forward(x: np.ndarray, w_q: np.ndarray, w_scale: np.ndarray, b=None) -> np.ndarray:
    """Weights and activations in int8: y = (qx @ qw.T) * sx * sw + b, the matmul in int32.

    x: (..., in) float, w_q: (out, in) int8, w_scale: () or (out,), b: (out,) or None
    -> y: (..., out) in x's dtype. Inference only (round has no useful gradient).
    """
    check_int8_linear(x, w_q, w_scale, b)
    x2 = x.reshape(-1, x.shape[-1])  # (N, in)
    x_q, x_scale = quantize_per_token(x2)  # (N, in) int8, (N, 1)
    acc = int8_matmul(x_q, w_q)  # (N, out) int32, exact
    # rescale: the per-token scale runs down the rows, the per-channel scale across the columns
    y = acc.astype(x.dtype) * (x_scale * w_scale.astype(x.dtype))  # (N, out)
    if b is not None:
        y = y + b
    return y.reshape(*x.shape[:-1], w_q.shape[0])
