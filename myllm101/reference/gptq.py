"""GPTQ: one-shot int4 weight quantization that hands each rounding error on to the columns not yet
quantized (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers"), in the group-wise int4 format of ``int4.py``.

Objective. A linear layer y = x @ w.T sees calibration rows X (N, in). With H = 2/N * X.T @ X
(in, in), quantizing w (out, in) to wq costs

    ||X w.T - X wq.T||^2 / N = 1/2 * sum_r (w_r - wq_r) H (w_r - wq_r).T      (rows r independent)

so every row is its own problem, and all rows share one H.

The OBS step (Optimal Brain Surgeon). Fix one weight of a row to its quantized value and move the
weights F not yet fixed to minimise the cost again; with D = H_F^-1 (the inverse of H restricted
to F) and e = w_i - quant(w_i):

    w_F  -=  e / D[i, i] * D[i, F]        the best correction of the remaining weights
    D    <-  D - D[:, i] D[i, :] / D[i, i]   (then drop i: the inverse of H_(F - i))

GPTQ fixes the columns in one order, 0, 1, ..., in - 1, for every row at once. Then the sequence of
D's is the same for every row, and all of it sits in one matrix: the upper Cholesky factor U of
H^-1 (H^-1 = U.T @ U). Its row i is the elimination step above, U[i, i:] = D[i, i:] / sqrt(D[i, i])
with F = {i, ..., in - 1}, so the update of column i is, for all rows at once,

    err          = (w[:, i] - q[:, i] * s) / U[i, i]          (out,)
    w[:, i+1:]  -= err[:, None] * U[i, i+1:]                   (out, in - i - 1)

Why block updates are exact. Column j receives sum_{i < j} err_i * U[i, j]: independent terms
that may be added in any order, as long as all of them have arrived before column j is quantized.
So the columns go in blocks of ``block_size``: inside a block every error is applied at once (the
next column needs it), while the errors bound for later blocks are stored (Err, (out, B)) and
applied in one matrix product when the block ends, W[:, end:] -= Err @ U[block, end:]. Same sums in
another order: the result differs only by float rounding, and the many thin rank-1 updates become
one GEMM.

Groups (the int4 format: one scale per row and ``group_size`` input columns). The scale of a group
is computed when its first column is reached, from the weights at that moment (every earlier error
applied): s = absmax / 7 (1 where absmax == 0). Blocks are rounded up to a multiple of group_size,
so a group never straddles two blocks and every column of it is up to date then. The group's later
columns still change after s is fixed and may leave [-7 s, 7 s]: q = clip(round(w / s), -8, 7) is
how GPTQ, unlike round-to-nearest, can produce -8.

Conditioning. ``damp * mean(diag H)`` is added to the diagonal (H from few rows can be singular).
An input that is always 0 (H[i, i] == 0) carries no information: its H[i, i] becomes 1 and its
weights 0.

act_order: quantize the columns in descending diag(H) (largest input energy first, while many
columns remain to absorb their errors). A group's columns are then spread over the whole order, so
its scale cannot come from "the weights when the group starts"; here the scales are fixed up front
from the original weights (round-to-nearest scales, "static groups") and each column uses its own
group's scale, which keeps the (out, in // g) format.
"""

import numpy as np

from myllm101.checks.quant import (
    INT4_MAX,
    INT4_MIN,
    check_gptq,
    check_hessian_update,
    gptq_not_positive_definite,
)
from myllm101.reference.int4 import quantize_int4


def hessian_update(H: np.ndarray | None, n: int, x: np.ndarray) -> tuple[np.ndarray, int]:
    """Add N calibration rows to H = 2/n * sum_rows x.T x (the running mean keeps H's size).

    H: (in, in) or None (no rows yet), n: rows so far, x: (..., in) -> (H (in, in), n + N).
    """
    check_hessian_update(H, n, x)
    x2 = x.reshape(-1, x.shape[-1])  # (N, in)
    if H is None:
        H = np.zeros((x2.shape[1], x2.shape[1]), np.result_type(x.dtype, np.float32))
    total = n + x2.shape[0]
    if total == 0:
        return H, 0
    x2 = x2.astype(H.dtype)
    # the old mean weighs n / total, the new rows 2 / total each
    return H * (n / total) + (2.0 / total) * (x2.T @ x2), total


def rtn_scales(w: np.ndarray, group_size: int, dtype: np.dtype) -> np.ndarray:
    """w: (out, k * g) -> the scales round-to-nearest gives it, (out, k): absmax / 7 (1 where
    absmax == 0), from ``quantize_int4``; rounded to ``dtype`` (the dtype they are stored in) and
    back, so the codes are computed with the stored scales."""
    _, scale = quantize_int4(w, group_size)  # (out, k) in w's dtype
    return scale.astype(dtype).astype(w.dtype)


def inverse_cholesky(H: np.ndarray, damp: float) -> np.ndarray:
    """H: (in, in) -> U (in, in) upper triangular with U.T @ U = (H + damp * mean(diag H) I)^-1."""
    n = H.shape[0]
    H = H + damp * np.mean(np.diag(H)) * np.eye(n, dtype=H.dtype)
    try:
        np.linalg.cholesky(H)  # succeeds iff H is (numerically) positive definite
        Hinv = np.linalg.inv(H)  # (in, in)
        return np.linalg.cholesky(Hinv).T  # lower L with Hinv = L L.T, so U = L.T
    except np.linalg.LinAlgError:
        raise gptq_not_positive_definite(damp) from None


def gptq_quantize(
    w: np.ndarray,
    H: np.ndarray,
    group_size: int,
    damp: float = 0.01,
    block_size: int = 128,
    act_order: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """w: (out, in) float, H: (in, in) -> (q (out, in) int8 in [-8, 7], scale (out, in // g)).

    q * scale (each scale repeated over its group's g columns) approximates w; the steps are in the
    module docstring. Computes in float64 if w or H is float64, else float32; scale in w's dtype.
    """
    check_gptq(w, H, group_size, damp, block_size)
    out_f, in_f = w.shape
    g = group_size
    work = np.result_type(w.dtype, H.dtype, np.float32)
    W = w.astype(work)  # (out, in), a copy: updated in place below
    H = H.astype(work)  # (in, in), a copy

    dead = np.diag(H) == 0  # (in,) inputs that were always 0
    H[dead, dead] = 1
    W[:, dead] = 0

    scale = np.empty((out_f, in_f // g), work)  # (out, in // g)
    order = np.arange(in_f)  # order[i]: the original column quantized i-th
    if act_order:
        scale[:] = rtn_scales(W, g, w.dtype)  # static groups: round-to-nearest scales
        order = np.argsort(-np.diag(H), kind="stable")  # largest diag(H) first
        W, H = W[:, order], H[order][:, order]  # now column i of W is original column order[i]

    U = inverse_cholesky(H, damp)  # (in, in) upper, rows = the OBS steps in this order
    q = np.zeros((out_f, in_f), np.int8)
    block = -(-block_size // g) * g  # rounded up to whole groups
    for b0 in range(0, in_f, block):
        b1 = min(b0 + block, in_f)
        Err = np.zeros((out_f, b1 - b0), work)  # (out, B) errors still owed to columns >= b1
        for i in range(b0, b1):
            col = order[i]  # == i without act_order
            if not act_order and i % g == 0:  # a group starts: its scale from today's weights
                scale[:, i // g] = rtn_scales(W[:, i : i + g], g, w.dtype)[:, 0]
            s = scale[:, col // g]  # (out,)
            q_i = np.clip(np.round(W[:, i] / s), INT4_MIN, INT4_MAX)  # (out,)
            err = (W[:, i] - q_i * s) / U[i, i]  # (out,)
            W[:, i + 1 : b1] -= np.outer(err, U[i, i + 1 : b1])  # this block: now
            Err[:, i - b0] = err
            q[:, col] = q_i
        W[:, b1:] -= Err @ U[b0:b1, b1:]  # later blocks: in one product (lazy batch update)
    return q, scale.astype(w.dtype)
