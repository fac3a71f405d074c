"""Pruning: importance scores for the weights of a linear layer, and the keep-masks they give.

A linear layer y = x @ W.T has W (out, in), like ``nn.Linear``. Pruning sets some weights to 0;
which ones is decided by a score per weight (or per neuron, per head), the lowest going first.

Scores
    magnitude        |W_ij|                                  (the classic baseline)
    Wanda            |W_ij| * ||X_j||_2                      (Sun et al. 2023, "A Simple and
                                                              Effective Pruning Approach for LLMs")
  where X (N, in) holds the layer's inputs over N calibration tokens and ||X_j||_2 =
  sqrt(sum_t X_tj^2) is input feature j's L2 norm (``input_norms``). Why the norm: removing W_ij
  changes output i by -W_ij * x_j, whose size over the calibration set is |W_ij| * ||X_j||_2; a
  small weight on a feature with huge activations (LLMs have a few such outlier features) matters
  more than a larger weight on a feature that is always near 0, and magnitude alone misses that.

Masks (True = keep). A sparsity s prunes exactly k = round(s * n) of n candidates
(``checks.prune_count``: Python's round, half to even):
    unstructured_mask(scores, s)                 n = every entry of the matrix
    unstructured_mask(scores, s, per_row=True)   n = each row's entries (Wanda compares the weights
                                                 of one output row with each other)
    global_masks({name: scores}, s)              n = every entry of every matrix together
    nm_mask(scores, n=2, m=4)                    in each row, every group of m consecutive input
                                                 columns keeps its n largest (2:4 sparsity: the
                                                 pattern sparse tensor cores run)
Ties are broken by position: among equal scores the one with the smaller flat index (row-major;
for ``global_masks`` the matrices in the dict's order) is pruned first. That is the order of a
stable sort by (score, index), computed here without a full sort: the k-th smallest score t is
found by a partial sort, every score < t is pruned, and the first (k - #{score < t}) entries equal
to t in index order. fast/prune.py does the same steps, so both trees give identical masks.

Structured scores (which whole parts to remove; myllm101/prune's structured pruning uses them)
    neuron_scores    SwiGLU hidden neuron j (row j of gate/up_proj, column j of down_proj):
                     ||H_j||_2 * ||down_proj.W[:, j]||_2, with H (N, I) down_proj's inputs
    head_scores      per GQA group (one kv head and the query heads that read it), Wanda-style on
                     o_proj: s_d = ||O_d||_2 * ||o_proj.W[:, d]||_2 per input feature d of o_proj
                     (O: its inputs, the heads' outputs side by side), summed over the group's
                     query heads' head_dim features each
The structured scores are Wanda's |W| * ||X|| taken over a whole column: removing neuron j (or
head feature d) removes column j of the next projection, whose effect on the output over the
calibration set is at most ||X_j||_2 * ||W[:, j]||_2. Removing a whole group (its kv head with all
of its query heads) keeps grouped-query attention intact: every remaining query head still reads
the kv head it read before.
"""

from __future__ import annotations

import numpy as np

from myllm101.checks import expect_float
from myllm101.checks.prune import (
    check_head_scores,
    check_nm,
    check_norms_for,
    check_score_dict,
    check_scores,
    prune_count,
)

# --------------------------------------------------------------------------------------------------
# scores


def magnitude_scores(weight: np.ndarray) -> np.ndarray:
    """|W|: weight (out, in) -> (out, in)."""
    expect_float("weight", weight)
    return np.abs(weight)


def input_norms(x: np.ndarray) -> np.ndarray:
    """||X_j||_2 = sqrt(sum over every token t of x_tj^2): x (..., in) -> (in,).

    In float64 for float64 input, else float32 (a sum of squares over many tokens in float16 would
    overflow). Over several calibration batches add the sums of squares, then take the root:
    sqrt(sum_b input_norms(x_b)**2)."""
    expect_float("x", x)
    if x.ndim == 0:
        raise ValueError(f"x: expected shape (..., in), got {x.shape}")
    x2 = x.reshape(-1, x.shape[-1]).astype(np.result_type(x.dtype, np.float32))  # (N, in)
    return np.sqrt(np.sum(x2 * x2, axis=0))


def wanda_scores(weight: np.ndarray, in_norms: np.ndarray) -> np.ndarray:
    """|W_ij| * ||X_j||_2: weight (out, in), in_norms (in,) -> (out, in)."""
    check_norms_for("weight", weight, "in_norms", in_norms)
    return np.abs(weight) * in_norms[None, :]


def column_norms(weight: np.ndarray) -> np.ndarray:
    """||W[:, j]||_2 for every input column j: (out, in) -> (in,), in float32 at least."""
    w = weight.astype(np.result_type(weight.dtype, np.float32))
    return np.sqrt(np.sum(w * w, axis=0))


def neuron_scores(down_weight: np.ndarray, hidden_norms: np.ndarray) -> np.ndarray:
    """SwiGLU hidden neuron j's importance: hidden_norms[j] * ||down_weight[:, j]||_2.

    down_weight: down_proj's (C, I), hidden_norms: (I,) ``input_norms`` of down_proj's input
    silu(gate(x)) * up(x) -> (I,)."""
    check_norms_for("down_weight", down_weight, "hidden_norms", hidden_norms)
    return hidden_norms * column_norms(down_weight)


def head_scores(
    o_weight: np.ndarray, o_in_norms: np.ndarray, n_head: int, n_kv_head: int
) -> np.ndarray:
    """One score per GQA group (kv head g and query heads g*G .. g*G + G - 1, G = n_head //
    n_kv_head: query head h reads kv head h // G): o_weight (C, n_head * D), o_in_norms (n_head *
    D,) -> (n_kv_head,).

    s_d = o_in_norms[d] * ||o_weight[:, d]||_2 for each feature d of o_proj's input; query head h
    owns features h*D .. h*D + D - 1, so its score is the sum of its D features' s_d, and a
    group's score the sum of its G query heads' scores: the group's features are contiguous,
    g*G*D .. (g+1)*G*D - 1."""
    check_head_scores(o_weight, o_in_norms, n_head, n_kv_head)
    s = o_in_norms * column_norms(o_weight)  # (n_head * D,)
    per_head = s.reshape(n_head, -1).sum(axis=1)  # (n_head,)
    return per_head.reshape(n_kv_head, n_head // n_kv_head).sum(axis=1)  # (n_kv_head,)


# --------------------------------------------------------------------------------------------------
# masks


def prune_lowest(scores: np.ndarray, k: int) -> np.ndarray:
    """Keep-mask of each row of ``scores`` (R, n) with its k lowest entries pruned (0 <= k <= n),
    ties pruned in column order: the mask a stable sort of each row by score would give.

    t = the k-th smallest score of the row; prune every score < t, then the first
    k - #{score < t} scores equal to t (a running count along the row)."""
    R, n = scores.shape
    if k == 0 or n == 0:
        return np.ones((R, n), dtype=bool)
    t = np.partition(scores, k - 1, axis=1)[:, k - 1 : k]  # (R, 1) the k-th smallest
    below = scores < t  # (R, n)
    at = scores == t  # -0.0 == +0.0: zeros of either sign tie
    room = k - below.sum(axis=1, keepdims=True)  # (R, 1) how many of the ties go
    prune = below | (at & (np.cumsum(at, axis=1) <= room))
    return ~prune


def unstructured_mask(scores: np.ndarray, sparsity: float, per_row: bool = False) -> np.ndarray:
    """scores (out, in) -> keep-mask (out, in) bool with exactly round(sparsity * out * in) entries
    False (per_row: exactly round(sparsity * in) in every row): the lowest scores, ties by
    flat index."""
    check_scores(scores)
    out_f, in_f = scores.shape
    if per_row:
        return prune_lowest(scores, prune_count(sparsity, in_f))
    flat = scores.reshape(1, -1)  # (1, out * in), row-major: the flat index order
    return prune_lowest(flat, prune_count(sparsity, flat.shape[1])).reshape(out_f, in_f)


def global_masks(scores: dict[str, np.ndarray], sparsity: float) -> dict[str, np.ndarray]:
    """{name: scores (out, in)} -> {name: keep-mask (out, in)}: exactly round(sparsity * total)
    entries False over all matrices together (total = all their entries), the lowest scores;
    ties go in the dict's order, then row-major."""
    check_score_dict(scores)
    k = prune_count(sparsity, sum(s.size for s in scores.values()))
    dtype = np.result_type(*scores.values())  # compared in one common dtype
    flat = np.concatenate([s.astype(dtype).reshape(-1) for s in scores.values()])[None, :]
    keep = prune_lowest(flat, k)[0]
    masks, start = {}, 0
    for name, s in scores.items():
        masks[name] = keep[start : start + s.size].reshape(s.shape)
        start += s.size
    return masks


def nm_mask(scores: np.ndarray, n: int = 2, m: int = 4) -> np.ndarray:
    """scores (out, in) -> keep-mask (out, in): in each row, every group of m consecutive input
    columns (0..m-1, m..2m-1, ...) keeps its n largest scores; ties pruned in column order.
    2:4 (n=2, m=4) prunes exactly half."""
    check_scores(scores)
    out_f, in_f = scores.shape
    check_nm(n, m, in_f)
    groups = scores.reshape(-1, m)  # (out * in / m, m): one row per group
    return prune_lowest(groups, m - n).reshape(out_f, in_f)
