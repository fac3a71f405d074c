"""Exact dense retrieval: for each query, the k keys of highest cosine similarity (NumPy).

    rows, scores = cosine_top_k(queries, keys, k=5)             # (Q, D), (N, D) -> (Q, 5), (Q, 5)
    rows, scores = cosine_top_k(q, keys, 5, normalized=True)    # unit vectors already (embed())

cos(q, x) = q . x / (|q| |x|). With every vector scaled to unit length first, the scores of a
block of keys are one matrix product, ``q_hat @ x_hat.T``. The keys are scored ``block_size`` rows
at a time, so the (Q, N) score matrix of a large collection never exists: each block's best k
are merged into a running best k.

Ties: equal scores are ordered by the lower row, everywhere (``top_k``). That makes the result a
function of the scores alone: the blocks, the fast twin (fast/dense.py) and a brute-force sort
of the full score matrix all return the same rows when they compute the same scores.
"""

from __future__ import annotations

import numpy as np

from myllm101.checks.retrieval import check_cosine_top_k


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k largest values, largest first; equal values in ascending column order.

    scores (Q, N) -> (cols (Q, k') int64, values (Q, k')), k' = min(k, N). [[1, 3, 3, 0]], 2 ->
    ([[1, 2]], [[3, 3]]); [[5, 7, 7, 7]], 2 -> ([[1, 2]], [[7, 7]]) (the lower columns of a tie)."""
    Q, N = scores.shape
    k = min(k, N)
    if k == 0:
        return np.zeros((Q, 0), dtype=np.int64), scores[:, :0].copy()
    cols = np.broadcast_to(np.arange(N), (Q, N))
    tied = np.zeros(Q, dtype=bool)
    if k < N:
        cols = np.argpartition(scores, N - k, axis=1)[:, N - k :]  # the k largest, in any order
        kth = np.take_along_axis(scores, cols, 1).min(1, keepdims=True)  # (Q, 1)
        # more than k values >= the k-th: argpartition picked an arbitrary few of a tie at the cut
        tied = (scores >= kth).sum(1) > k
    values = np.take_along_axis(scores, cols, 1)
    order = np.lexsort((cols, -values), axis=1)  # by value descending, then column ascending
    cols, values = np.take_along_axis(cols, order, 1), np.take_along_axis(values, order, 1)
    if tied.any():  # those rows: one full sort (rare: exact ties at the k-th value)
        sub = scores[tied]
        full = np.lexsort((np.broadcast_to(np.arange(N), sub.shape), -sub), axis=1)[:, :k]
        cols[tied], values[tied] = full, np.take_along_axis(sub, full, 1)
    return cols.astype(np.int64), values


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """x / |x| per row: (M, D) -> (M, D). An all-zero row stays zero (its cosines are 0)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)  # (M, 1)
    return x / np.maximum(norm, np.finfo(x.dtype).tiny)


def cosine_top_k(
    queries: np.ndarray,
    keys: np.ndarray,
    k: int,
    block_size: int = 65536,
    normalized: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The k keys most similar to each query, exactly (every key is scored).

    queries (Q, D), keys (N, D) float -> rows (Q, k') int64, scores (Q, k') in the keys' dtype,
    k' = min(k, N); best first, equal scores by the lower row. ``normalized=True``: the inputs
    already have unit length (``hub.embed.embed``'s vectors), so the scores are plain dot
    products and the keys are not copied. Queries are cast to the keys' dtype. Keys must be
    finite (not checked: that is a pass over the whole collection)."""
    check_cosine_top_k(queries, keys, k, block_size)
    queries = np.asarray(queries, dtype=keys.dtype)
    if not np.isfinite(queries).all():
        raise ValueError("queries: expected finite values, got NaN or inf")
    Q, N = queries.shape[0], keys.shape[0]
    k = min(k, N)
    q = queries if normalized else normalize_rows(queries)  # (Q, D)
    best_rows = np.zeros((Q, 0), dtype=np.int64)
    best = np.zeros((Q, 0), dtype=keys.dtype)
    for start in range(0, N, block_size):
        block = keys[start : start + block_size]  # (B, D)
        if not normalized:
            block = normalize_rows(block)
        cols, vals = top_k(q @ block.T, k)  # (Q, B) scores -> this block's best (Q, k)
        # running best first: its rows are all lower, so position order is row order on ties
        merged_rows = np.concatenate([best_rows, cols + start], axis=1)  # (Q, <= 2k)
        merged = np.concatenate([best, vals], axis=1)
        pick, best = top_k(merged, k)
        best_rows = np.take_along_axis(merged_rows, pick, 1)
    return best_rows, best
