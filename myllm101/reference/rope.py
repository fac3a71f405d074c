"""Rotary position embedding, RoPE (Su et al., 2021), in the rotate-half layout of LLaMA / HF.

Split each head vector into halves x = [x1, x2] (D/2 each) and pair x1[i] with x2[i]. Pair i at
position p is rotated by the angle p * theta**(-2i/D):

    y = x * cos + rotate_half(x) * sin,    rotate_half([x1, x2]) = [-x2, x1]

where cos/sin are (T, D) tables whose two halves repeat the same D/2 angles. A rotation never changes
a vector's length, and q_p . k_s depends only on p - s: attention sees relative positions.
"""

import numpy as np

from myllm101.checks import (
    check_rope,
    check_rope_frequencies,
    expect_shape,
)


def rope_frequencies(head_dim: int, seq_len: int, theta: float = 10000.0, offset: int = 0):
    """(cos, sin), each (seq_len, head_dim) float64, for positions offset .. offset + seq_len - 1.

    offset > 0 is for KV-cache decoding: the new tokens sit after the ones already cached.
    """
    check_rope_frequencies(head_dim, seq_len, theta, offset)
    inv_freq = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # (D/2,)
    positions = np.arange(offset, offset + seq_len, dtype=np.float64)  # (T,)
    angles = positions[:, None] * inv_freq[None, :]  # (T, D/2)
    angles = np.concatenate([angles, angles], axis=-1)  # (T, D): both halves share the angles
    return np.cos(angles), np.sin(angles)


def rotate_half(x: np.ndarray) -> np.ndarray:
    """[x1, x2] -> [-x2, x1] over the last axis: a 90-degree turn of every (x1[i], x2[i]) pair."""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def rope_forward(x: np.ndarray, cos: np.ndarray, sin: np.ndarray):
    """x: (B, H, T, D), cos/sin: (T, D) -> y: (B, H, T, D) in x's dtype, cache."""
    check_rope(x, cos, sin)
    cos, sin = cos.astype(x.dtype, copy=False), sin.astype(x.dtype, copy=False)  # keep x's dtype
    y = x * cos + rotate_half(x) * sin  # (B, H, T, D); cos/sin broadcast over B, H
    return y, (cos, sin, x.shape)


def rope_backward(dy: np.ndarray, cache) -> np.ndarray:
    """dy: (B, H, T, D) -> dx: (B, H, T, D).

    y = cos * x + sin * R x with R = rotate_half, a linear map R = [[0, -I], [I, 0]].
    So dx = cos * dy + R^T (sin * dy), and R^T = -R (a rotation by -90 degrees).
    """
    cos, sin, x_shape = cache
    expect_shape("dy", dy, x_shape)
    return dy * cos - rotate_half(dy * sin)
