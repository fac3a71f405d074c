"""Softmax and log-softmax along one axis, numerically stable.

    softmax(x)_i     = exp(x_i - m) / sum_j exp(x_j - m)
    log_softmax(x)_i = (x_i - m) - log(sum_j exp(x_j - m)),   m = max_j x_j

Subtracting the max changes nothing mathematically (it cancels) but keeps every exponent <= 0,
so exp never overflows: inputs like 1e4 are fine, and the largest term is exactly exp(0) = 1,
so the sum never underflows to 0 either.
"""

import numpy as np

from myllm101.checks import expect_float, expect_in_range, expect_shape


def _check_axis(x: np.ndarray, axis: int) -> None:
    expect_in_range("axis", axis, -x.ndim, x.ndim)


def softmax_forward(x: np.ndarray, axis: int = -1):
    """x: (..., K, ...) -> y: same shape, each slice along ``axis`` sums to 1; cache."""
    expect_float("x", x)
    _check_axis(x, axis)
    y = np.exp(x - np.max(x, axis=axis, keepdims=True))  # every exponent <= 0
    y /= np.sum(y, axis=axis, keepdims=True)
    return y, (y, axis)


def softmax_backward(dy: np.ndarray, cache) -> np.ndarray:
    """dy: same shape as x -> dx."""
    y, axis = cache
    expect_shape("dy", dy, y.shape)
    # Jacobian dy_i/dx_j = y_i (delta_ij - y_j), so dx_j = y_j (dy_j - sum_i dy_i y_i)
    return y * (dy - np.sum(dy * y, axis=axis, keepdims=True))


def log_softmax_forward(x: np.ndarray, axis: int = -1):
    """x: (..., K, ...) -> out = log(softmax(x)): same shape; cache."""
    expect_float("x", x)
    _check_axis(x, axis)
    out = x - np.max(x, axis=axis, keepdims=True)  # z = x - m, every entry <= 0
    out -= np.log(np.sum(np.exp(out), axis=axis, keepdims=True))  # z - log sum exp z
    return out, (out, axis)


def log_softmax_backward(dy: np.ndarray, cache) -> np.ndarray:
    """dy: same shape as x -> dx."""
    out, axis = cache
    expect_shape("dy", dy, out.shape)
    # d out_i / d x_j = delta_ij - softmax_j, so dx_j = dy_j - softmax_j * sum_i dy_i
    return dy - np.exp(out) * np.sum(dy, axis=axis, keepdims=True)
