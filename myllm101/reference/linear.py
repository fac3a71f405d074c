"""Linear (fully connected) layer, weight laid out (out, in) like ``nn.Linear``.

    y = x @ w.T + b

Backward, with dy = dL/dy and every leading axis flattened into rows:
    dx = dy @ w          (each input feature collects the weights it fed, scaled by dy)
    dw = dy.T @ x        (outer products of dy and x, summed over rows)
    db = sum(dy, rows)   (the bias is added to every row)
"""

import numpy as np

from myllm101.checks import check_linear_dtypes, check_linear_shapes, expect_shape


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None):
    """x: (..., in), w: (out, in), b: (out,) or None -> y: (..., out), cache."""
    check_linear_shapes(x, w, b)
    check_linear_dtypes(x, w, b)
    out_features, in_features = w.shape
    lead = x.shape[:-1]
    x2 = x.reshape(-1, in_features)  # (N, in): one BLAS call for every row, whatever the batch axes
    y2 = x2 @ w.T  # (N, out)
    if b is not None:
        y2 = y2 + b  # (N, out), broadcast over rows
    return y2.reshape(*lead, out_features), (x, w, b is not None)


def linear_backward(dy: np.ndarray, cache):
    """dy: (..., out) -> (dx: (..., in), dw: (out, in), db: (out,) or None)."""
    x, w, has_bias = cache
    out_features, in_features = w.shape
    expect_shape("dy", dy, (*x.shape[:-1], out_features))
    dy2 = dy.reshape(-1, out_features)  # (N, out)
    x2 = x.reshape(-1, in_features)  # (N, in)
    dx = (dy2 @ w).reshape(x.shape)  # (..., in)
    dw = dy2.T @ x2  # (out, in)
    db = dy2.sum(axis=0) if has_bias else None  # (out,)
    return dx, dw, db
