"""LoRA: low-rank adaptation of a frozen linear layer (Hu et al., 2021).

    y = x W^T + b + (alpha / r) * (x A^T) B^T

W (out, in) and b (out,) are the pretrained layer and stay frozen; only A (r, in) and B (out, r)
are trained, so a layer with in*out weights learns through r*(in + out) numbers. B starts at zero,
so a fresh adapter leaves the model unchanged. ``alpha / r`` keeps the update's size roughly
independent of r. After training the update can be folded into the weight,
``W' = W + (alpha / r) B A`` (``lora_merge``), so inference costs exactly one matmul again.
"""

import numpy as np

from myllm101.checks import check_lora_adapter, check_lora_linear, expect_shape, lora_scale


def lora_linear_forward(
    x: np.ndarray, w: np.ndarray, b, A: np.ndarray, B: np.ndarray, alpha: float
):
    """x: (..., in), w: (out, in), b: (out,) or None, A: (r, in), B: (out, r) -> y: (..., out), cache."""
    check_lora_linear(x, w, b, A, B)
    scale = lora_scale(A, alpha)
    h = x @ A.T  # (..., r): the input projected onto the adapter's r directions
    y = x @ w.T + scale * (h @ B.T)  # (..., out)
    if b is not None:
        y = y + b
    return y, (x, w, A, B, h, scale)


def lora_linear_backward(dy: np.ndarray, cache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dy: (..., out) -> (dx: (..., in), dA: (r, in), dB: (out, r)). W and b are frozen: no dW, db."""
    x, w, A, B, h, scale = cache
    expect_shape("dy", dy, (*x.shape[:-1], w.shape[0]))
    x2 = x.reshape(-1, x.shape[-1])  # (N, in)
    dy2 = dy.reshape(-1, dy.shape[-1])  # (N, out)
    h2 = h.reshape(-1, h.shape[-1])  # (N, r)
    dB = scale * (dy2.T @ h2)  # (out, r): y gets scale * h B^T
    dh = scale * (dy2 @ B)  # (N, r)
    dA = dh.T @ x2  # (r, in): h = x A^T
    # x reaches y along two paths: the frozen weight and the adapter
    dx = dy2 @ w + dh @ A  # (N, in)
    return dx.reshape(x.shape), dA, dB


def lora_merge(w: np.ndarray, A: np.ndarray, B: np.ndarray, alpha: float) -> np.ndarray:
    """W' = W + (alpha / r) B A: one (out, in) weight that computes the adapted layer."""
    check_lora_adapter(w, A, B)
    return w + lora_scale(A, alpha) * (B @ A)


def lora_unmerge(w_merged: np.ndarray, A: np.ndarray, B: np.ndarray, alpha: float) -> np.ndarray:
    """W = W' - (alpha / r) B A: undo ``lora_merge`` (exact up to one rounding per element)."""
    check_lora_adapter(w_merged, A, B)
    return w_merged - lora_scale(A, alpha) * (B @ A)
