"""Cross-entropy of logits against class indices, with ignore_index and label smoothing.

Same semantics as ``torch.nn.functional.cross_entropy`` with class-index targets. For one row with
logits x (V,) and target t, with log p = log_softmax(x) and smoothing eps:

    loss_row = (1 - eps) * (-log p[t]) + eps * mean_j(-log p[j])

i.e. the cross-entropy against the target distribution q = (1 - eps) * onehot(t) + eps / V.
Rows whose target equals ``ignore_index`` (e.g. padding) contribute nothing. reduction="sum" adds
the rows; reduction="mean" divides by the number of rows that were *not* ignored.

All targets ignored: torch's "mean" returns nan (0 / 0). Here both trees return a loss of 0.0 and
an all-zero gradient instead, so a batch of pure padding cannot poison a training run.

Gradient: d loss_row / d x = softmax(x) - q, times the reduction's scale (1 or 1 / count).
"""

import numpy as np

from myllm101.checks import check_cross_entropy, check_targets, expect_shape


def cross_entropy_forward(
    logits: np.ndarray,
    targets: np.ndarray,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
):
    """logits: (..., V) float, targets: (...) int -> (loss: 0-d array in logits' dtype, cache)."""
    check_cross_entropy(logits, targets, label_smoothing, reduction)
    V = logits.shape[-1]
    x = logits.reshape(-1, V)  # (N, V): every leading axis is just more rows
    t = targets.reshape(-1)  # (N,)
    check_targets(t, V, ignore_index)
    keep = t != ignore_index  # (N,) rows that count
    t_safe = np.where(keep, t, 0)  # (N,) any valid index for the ignored rows; they get masked
    count = int(np.sum(keep))

    # log p = x - m - log(sum(exp(x - m))): log-sum-exp with the max taken out (see softmax.py).
    # Updated in place: at (4096, 32000) every extra (N, V) array is another 0.5 GB of float32.
    logp = x - np.max(x, axis=1, keepdims=True)  # (N, V)
    logp -= np.log(np.sum(np.exp(logp), axis=1, keepdims=True))

    row_loss = -logp[np.arange(len(t)), t_safe]  # (N,) -log p[target]
    if label_smoothing > 0:
        row_loss = (1.0 - label_smoothing) * row_loss - label_smoothing * np.mean(logp, axis=1)
    row_loss = np.where(keep, row_loss, 0.0)

    # mean over the rows that count; max(count, 1) makes "all ignored" give 0 instead of 0/0
    scale = 1.0 / max(count, 1) if reduction == "mean" else 1.0
    loss = np.asarray(np.sum(row_loss) * scale, dtype=logits.dtype)  # 0-d
    return loss, (logp, t_safe, keep, scale, label_smoothing, logits.shape)


def cross_entropy_backward(dloss, cache) -> np.ndarray:
    """dloss: scalar (default 1.0) -> dlogits: (..., V), the shape of the logits."""
    logp, t_safe, keep, scale, label_smoothing, shape = cache
    dloss = np.asarray(dloss)
    expect_shape("dloss", dloss, ())
    N, V = logp.shape
    # softmax - q, with q = (1 - eps) onehot(t) + eps / V, built in place in one (N, V) array
    dlogits = np.exp(logp)  # (N, V) softmax
    if label_smoothing > 0:
        dlogits -= label_smoothing / V
    dlogits[np.arange(N), t_safe] -= 1.0 - label_smoothing
    row_scale = np.where(keep, dloss * scale, 0.0).astype(logp.dtype)  # (N,) 0 for ignored rows
    dlogits *= row_scale[:, None]
    return dlogits.reshape(shape)
