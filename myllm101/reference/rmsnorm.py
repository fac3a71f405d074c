"""RMSNorm (Zhang & Sennrich, 2019), as used by LLaMA.

    y = x / sqrt(mean(x**2, -1) + eps) * weight

Unlike LayerNorm there is no mean subtraction and no bias: only the scale is normalized.
"""

import numpy as np

from myllm101.checks import check_rmsnorm, expect_shape


def rmsnorm_forward(x: np.ndarray, weight: np.ndarray, eps: float = 1e-6):
    """x: (..., C), weight: (C,) -> y: (..., C), cache."""
    check_rmsnorm(x, weight, eps)
    inv_rms = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)  # (..., 1)
    x_hat = x * inv_rms  # (..., C)
    y = x_hat * weight  # (..., C)
    return y, (x_hat, inv_rms, weight)


def rmsnorm_backward(dy: np.ndarray, cache) -> tuple[np.ndarray, np.ndarray]:
    """dy: (..., C) -> (dx: (..., C), dweight: (C,))."""
    x_hat, inv_rms, weight = cache
    expect_shape("dy", dy, x_hat.shape)
    C = x_hat.shape[-1]
    dweight = (dy * x_hat).reshape(-1, C).sum(axis=0)  # (C,)
    dx_hat = dy * weight  # (..., C)
    # d x_hat / d x = inv_rms * (I - x_hat x_hat^T / C): remove the component of dx_hat along x_hat
    dx = inv_rms * (dx_hat - x_hat * np.mean(dx_hat * x_hat, axis=-1, keepdims=True))
    return dx, dweight
