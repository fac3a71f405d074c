"""Group-wise symmetric int4 quantization of weights (weight-only), and the linear layer using it.

Format. A weight w (out, in) is cut along its input axis into groups of g consecutive columns
(g even and dividing in; 32, 64 or 128 in practice). Each group of one row has its own scale:

    scale[o, j] = max_{k in group j} |w[o, k]| / 7         (1 where the group is all zeros)
    q[o, k]     = clip(round(w[o, k] / scale[o, k // g]), -8, 7)      int4, held as int8 here
    w[o, k]    ~= q[o, k] * scale[o, k // g]                           (dequantize)

    w (out, in) float -> q (out, in) int8 in [-8, 7], scale (out, in // g) in w's dtype

Error bound. |w / scale| <= 7 inside every group (scale is its absmax / 7), so the clip never
bites and round-to-nearest moves w / scale by at most 1/2:
    |w - q * scale| = scale * |w / scale - round(w / scale)| <= scale / 2 = absmax(group) / 14
(plus the float rounding of w / scale and of q * scale). Round-to-nearest never yields -8: it
only appears in codes made elsewhere (GPTQ), which this format also stores.

Packing. Two codes per byte, each stored as q + 8 in 0..15: byte j of a row holds column 2j in
its LOW nibble and column 2j + 1 in its HIGH nibble:

    packed[o, j] = (q[o, 2j] + 8) | (q[o, 2j + 1] + 8) << 4        packed (out, in // 2) uint8

So the weight takes in/2 bytes per row plus one scale per g columns: at g = 64, 4.5 bits per
weight with float32 scales (4.25 with float16 ones), ~7x smaller than float32.

``int4_linear_forward`` expands the weight to float and multiplies, y = x @ dequantize(...).T + b.
Its backward gives dx only (the codes are frozen; rounding is treated as the identity, the
straight-through estimator), exactly as for an ordinary linear layer with the dequantized weight.
"""

import numpy as np

from myllm101.checks import expect_dim, expect_dtype, expect_ndim
from myllm101.checks.quant import (
    INT4_MAX,
    INT4_MIN,
    check_int4_codes,
    check_int4_linear,
    check_int4_packed,
    check_int4_weight,
)

ZERO_POINT = 8  # a code q is stored as the nibble q + 8 (0..15)


def quantize_int4(w: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """w: (out, in) float -> (q: (out, in) int8 in [-7, 7], scale: (out, in // g) in w's dtype).

    One scale per row and group of ``group_size`` input columns: scale = absmax / 7 (1 if 0).
    """
    check_int4_weight(w, group_size)
    out_f, in_f = w.shape
    groups = w.reshape(out_f, in_f // group_size, group_size)  # (out, G, g)
    absmax = np.max(np.abs(groups), axis=2, initial=0)  # (out, G)
    scale = np.where(absmax > 0, absmax / INT4_MAX, 1).astype(w.dtype)  # (out, G)
    q = np.round(groups / scale[:, :, None])  # (out, G, g), half to even like torch.round
    q = np.clip(q, INT4_MIN, INT4_MAX).astype(np.int8)
    return q.reshape(out_f, in_f), scale


def pack_int4(q: np.ndarray) -> np.ndarray:
    """q: (out, in) int8 in [-8, 7], in even -> packed: (out, in // 2) uint8.

    [[-8, 7, 0, -1]] -> nibbles [[0, 15, 8, 7]] -> bytes [[0 | 15 << 4, 8 | 7 << 4]] = [[240, 120]]
    """
    check_int4_codes(q)
    u = (q.astype(np.int16) + ZERO_POINT).astype(np.uint8)  # (out, in) in 0..15
    low, high = u[:, 0::2], u[:, 1::2]  # columns 2j and 2j + 1: (out, in // 2) each
    return low | (high << 4)


def unpack_int4(packed: np.ndarray) -> np.ndarray:
    """packed: (out, in // 2) uint8 -> q: (out, in) int8 in [-8, 7] (the inverse of pack_int4)."""
    expect_dtype("packed", packed, ("uint8",))
    expect_ndim("packed", packed, 2)
    out_f, half = packed.shape
    q = np.empty((out_f, 2 * half), dtype=np.int8)  # (out, in)
    q[:, 0::2] = (packed & 0x0F).astype(np.int8) - ZERO_POINT  # low nibble: even columns
    q[:, 1::2] = (packed >> 4).astype(np.int8) - ZERO_POINT  # high nibble: odd columns
    return q


def dequantize_int4(packed: np.ndarray, scale: np.ndarray, group_size: int) -> np.ndarray:
    """packed (out, in // 2) uint8, scale (out, in // g) -> w = q * scale: (out, in), scale's dtype."""
    check_int4_packed(packed, scale, group_size)
    q = unpack_int4(packed)  # (out, in) int8
    out_f, in_f = q.shape
    groups = q.reshape(out_f, in_f // group_size, group_size).astype(scale.dtype)  # (out, G, g)
    return (groups * scale[:, :, None]).reshape(out_f, in_f)


def int4_linear_forward(
    x: np.ndarray, packed: np.ndarray, scale: np.ndarray, group_size: int, b=None
):
    """y = x @ dequantize_int4(packed, scale, g).T + b.

    x: (..., in) float, packed: (out, in // 2) uint8, scale: (out, in // g), b: (out,) or None
    -> y: (..., out) in x's dtype, cache (the dequantized weight, for the backward).
    """
    check_int4_linear(x, packed, scale, group_size, b)
    w = dequantize_int4(packed, scale, group_size).astype(x.dtype)  # (out, in)
    y = x @ w.T  # (..., out)
    if b is not None:
        y = y + b.astype(x.dtype)
    return y, (w,)


def int4_linear_backward(dy: np.ndarray, cache) -> np.ndarray:
    """dy: (..., out) -> dx = dy @ w: (..., in). Straight-through: the codes are frozen, so there
    is no weight gradient and the rounding counts as the identity."""
    (w,) = cache
    expect_dim("dy", dy, -1, w.shape[0], "out features")
    return dy @ w  # (..., in)


def int4_linear(x: np.ndarray, packed: np.ndarray, scale: np.ndarray, group_size: int, b=None):
    """The forward alone: x (..., in) -> (..., out) (see ``int4_linear_forward``)."""
    return int4_linear_forward(x, packed, scale, group_size, b)[0]
