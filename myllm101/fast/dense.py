"""Exact dense retrieval in PyTorch: for each query, the k keys of highest cosine similarity.

    rows, scores = cosine_top_k(queries, keys, k=5)             # (Q, D), (N, D) -> (Q, 5), (Q, 5)
    rows, scores = cosine_top_k(q, keys, 5, normalized=True)    # unit vectors already (embed())

The same computation as reference/dense.py (the math and the tie rule are explained there): one
matrix product per block of ``block_size`` keys, ``torch.topk`` for each block's best k, merged
into a running best k. Inputs may be tensors or NumPy arrays (shared without a copy); the results
are tensors on the keys' device.

Keys for repeated searches: ``scoring_layout(keys)`` once, then pass its result as ``keys``. It
holds the same (N, D) values stored column by column (the transpose of a contiguous (D, N)
buffer), so one query's N scores are a matrix-vector product that reads the keys in storage order.
On row-major keys torch's float32 GEMV took 2.3x as long for one query here (10k x 384: 1.5 ms
against 0.65 ms on this layout, NumPy 0.6-0.7, faiss IndexFlatIP 0.65; 100k: 17 ms against 7.5);
64 queries at once are ~1.3-1.5x slower on it (a GEMM either way), which is the price.

``torch.topk`` does not promise which of several equal values it returns, so ``top_k`` puts its
values in (value descending, column ascending) order and, in the rare rows where a tie straddles
the k-th value, takes the tied values by lowest column: the result equals the reference's
exactly. Every op over all N columns in the common case is the matrix product and ``topk``.
"""

from __future__ import annotations

import numpy as np
import torch

from myllm101.checks.retrieval import check_cosine_top_k


def _tensor(x) -> torch.Tensor:
    if not isinstance(x, np.ndarray):
        return x
    # a column-major array (scoring_layout's, as NumPy) is shared as it is, not copied row-major
    return torch.from_numpy(x if x.flags.f_contiguous else np.ascontiguousarray(x))


SPARE = 32  # top_k's extra candidates: ties at the k-th value shorter than this cost nothing


def _ties_at_the_cut(sub: torch.Tensor, kth: torch.Tensor, k: int):
    """Rows whose k-th largest value ``kth`` (T, 1) occurs more often than the top k can hold:
    everything above it, then the lowest columns equal to it. sub (T, N) -> (cols, values)."""
    above = sub > kth  # (T, N): all of these are in
    equal = sub == kth
    need = k - above.sum(1, keepdim=True)  # (T, 1) >= 1 columns still to take, from the ties
    take = above | (equal & (torch.cumsum(equal, 1) <= need))  # exactly k per row
    cols = torch.nonzero(take)[:, 1].reshape(-1, k)  # ascending columns per row
    values, order = sub.gather(1, cols).sort(dim=1, descending=True, stable=True)
    return cols.gather(1, order), values


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the k largest values, largest first; equal values in ascending column order.

    scores (Q, N) -> (cols (Q, k') int64, values (Q, k')), k' = min(k, N); as reference.top_k.
    ``torch.topk`` takes ``SPARE`` values more than asked, and only a row whose k-th value is
    also its (k + SPARE)-th (a tie longer than the spare) needs a pass over all N."""
    Q, N = scores.shape
    k = min(k, N)
    if k == 0:
        return torch.zeros(Q, 0, dtype=torch.int64, device=scores.device), scores[:, :0].clone()
    m = min(k + SPARE, N)
    values, cols = torch.topk(scores, m, dim=1, sorted=False)  # ties picked arbitrarily
    cols, perm = cols.sort(dim=1)  # column ascending, then a stable sort by value descending
    values = values.gather(1, perm).sort(dim=1, descending=True, stable=True)
    values, cols = values.values, cols.gather(1, values.indices)
    if m == k:
        return cols, values
    # the m taken hold every value > the m-th; if the k-th is larger than that, all its ties
    # are among them and the first k are exact. Else the tie may run past m: a pass over N.
    tied = torch.nonzero(values[:, k - 1] == values[:, m - 1]).squeeze(1)  # row numbers
    cols, values = cols[:, :k].contiguous(), values[:, :k].contiguous()
    if len(tied):
        # index_select / index_copy_: advanced indexing was ~100x slower on CPU threads here
        kth = values.index_select(0, tied)[:, -1:]
        tied_cols, tied_values = _ties_at_the_cut(scores.index_select(0, tied), kth, k)
        cols.index_copy_(0, tied, tied_cols)
        values.index_copy_(0, tied, tied_values)
    return cols, values


def scoring_layout(keys) -> torch.Tensor:
    """keys (N, D) tensor or array -> the same values as an (N, D) view of a contiguous (D, N)
    copy: the layout single-query scoring reads fastest (see the module docstring). A copy, made
    once per collection; ``cosine_top_k`` takes either layout and gives the same results."""
    keys = _tensor(keys)
    if keys.dim() != 2:
        raise ValueError(f"keys: expected a 2-D (N, D) array, got shape {tuple(keys.shape)}")
    return keys.T.contiguous().T


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """x / |x| per row: (M, D) -> (M, D). An all-zero row stays zero (its cosines are 0)."""
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)  # (M, 1)
    return x / norm.clamp_min(torch.finfo(x.dtype).tiny)


@torch.inference_mode()
def cosine_top_k(
    queries,
    keys,
    k: int,
    block_size: int = 65536,
    normalized: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k keys most similar to each query, exactly (every key is scored).

    queries (Q, D), keys (N, D) float tensors or arrays -> rows (Q, k') int64, scores (Q, k') in
    the keys' dtype, k' = min(k, N); best first, equal scores by the lower row.
    ``normalized=True``: the inputs already have unit length, so the keys are used as they are.
    Queries are cast to the keys' dtype and device. Keys must be finite (not checked)."""
    queries, keys = _tensor(queries), _tensor(keys)
    check_cosine_top_k(queries, keys, k, block_size)
    queries = queries.to(dtype=keys.dtype, device=keys.device)
    if not torch.isfinite(queries).all():
        raise ValueError("queries: expected finite values, got NaN or inf")
    Q, N = queries.shape[0], keys.shape[0]
    q = queries if normalized else normalize_rows(queries)  # (Q, D)
    if N <= block_size:  # one block: no merge
        return top_k(q @ (keys if normalized else normalize_rows(keys)).T, k)
    best_rows = torch.zeros(Q, 0, dtype=torch.int64, device=keys.device)
    best = torch.zeros(Q, 0, dtype=keys.dtype, device=keys.device)
    for start in range(0, N, block_size):
        block = keys[start : start + block_size]  # (B, D)
        if not normalized:
            block = normalize_rows(block)
        cols, vals = top_k(q @ block.T, k)  # (Q, B) scores -> this block's best (Q, k)
        # running best first: its rows are all lower, so position order is row order on ties
        merged_rows = torch.cat([best_rows, cols + start], dim=1)  # (Q, <= 2k)
        pick, best = top_k(torch.cat([best, vals], dim=1), k)
        best_rows = merged_rows.gather(1, pick)
    return best_rows, best
