"""LayerNorm (Ba, Kiros & Hinton, 2016), as used by GPT-2.

    mean = mean(x, -1), var = mean((x - mean)**2, -1)      (biased variance, like torch)
    x_hat = (x - mean) / sqrt(var + eps)
    y = x_hat * weight + bias

Each row is centred and scaled to unit variance, then an affine map per feature is applied.
"""

import numpy as np

from myllm101.checks import dtype_name, expect_dtype, expect_float, expect_positive, expect_shape


def layernorm_forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, eps: float = 1e-5
):
    """x: (..., C), weight: (C,), bias: (C,) or None -> y: (..., C), cache."""
    expect_float("x", x)
    expect_shape("weight", weight, (x.shape[-1],))
    expect_dtype("weight", weight, (dtype_name(x),))
    if bias is not None:
        expect_shape("bias", bias, (x.shape[-1],))
        expect_dtype("bias", bias, (dtype_name(x),))
    expect_positive("eps", eps)
    xc = x - np.mean(x, axis=-1, keepdims=True)  # (..., C) centred
    var = np.mean(xc * xc, axis=-1, keepdims=True)  # (..., 1) biased variance
    rstd = 1.0 / np.sqrt(var + eps)  # (..., 1)
    x_hat = xc * rstd  # (..., C) zero mean, unit variance per row
    y = x_hat * weight  # (..., C)
    if bias is not None:
        y = y + bias
    return y, (x_hat, rstd, weight, bias is not None)


def layernorm_backward(dy: np.ndarray, cache):
    """dy: (..., C) -> (dx: (..., C), dweight: (C,), dbias: (C,) or None)."""
    x_hat, rstd, weight, has_bias = cache
    expect_shape("dy", dy, x_hat.shape)
    C = x_hat.shape[-1]
    dweight = (dy * x_hat).reshape(-1, C).sum(axis=0)  # (C,)
    dbias = dy.reshape(-1, C).sum(axis=0) if has_bias else None  # (C,)
    g = dy * weight  # (..., C) gradient w.r.t. x_hat
    # d x_hat / d x = rstd * (I - 1/C - x_hat x_hat^T / C): subtracting the mean removes the
    # constant component of g, dividing by the std removes its component along x_hat
    dx = rstd * (
        g - np.mean(g, axis=-1, keepdims=True) - x_hat * np.mean(g * x_hat, axis=-1, keepdims=True)
    )
    return dx, dweight, dbias
