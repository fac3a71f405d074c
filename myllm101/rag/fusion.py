"""Hybrid retrieval: several rankings of the same chunks merged into one.

    fused = reciprocal_rank_fusion([bm25_rows, dense_rows])              # [(row, score), ...]
    fused = weighted_fusion([bm25_scores, dense_scores], weights=[0.3, 0.7])
    reranked = rerank_dense([row for row, _ in fused[:50]], query_vector, chunk_vectors)

- Reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009): each ranking gives a chunk
  at rank r (from 1) the score 1 / (k + r); a chunk's fused score is the sum over the rankings
  that hold it. Only ranks count, so BM25's unbounded scores and cosines in [-1, 1] mix without
  calibration; k (60 in the paper) flattens the gap between the first few ranks.
- Weighted score fusion: each list's scores are min-max normalised to [0, 1] (a list whose
  scores are all equal gives them all 1), then summed with the weights; a chunk missing from a
  list gets 0 from it.
- Dense re-ranking: candidates (e.g. BM25's top 50) re-ordered by their cosine to the query.

Every result is a list of (row, score), best first; equal scores keep the lower row first
(fusion) or the candidates' order (re-ranking), so results never depend on dict order.
"""

from __future__ import annotations

import math

import numpy as np

from myllm101.fast.dense import cosine_top_k


def _check_rows(name: str, rows) -> list[int]:
    if isinstance(rows, (str, bytes)) or not hasattr(rows, "__iter__"):
        raise ValueError(f"{name}: expected a list of int rows, got {type(rows).__name__}")
    out = list(rows.tolist() if hasattr(rows, "tolist") else rows)
    for r in out:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
            raise ValueError(f"{name}: expected int rows, got {type(r).__name__} {r!r}")
    return [int(r) for r in out]


def _ranked(scores: dict[int, float]) -> list[tuple[int, float]]:
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def reciprocal_rank_fusion(rankings: list[list[int]], k: float = 60) -> list[tuple[int, float]]:
    """Rankings (rows, best first) -> [(row, sum of 1 / (k + rank))], best first. A row repeated
    within one ranking counts at its first (best) rank. [[7, 3], [3]], k=60 ->
    [(3, 1/62 + 1/61), (7, 1/61)]."""
    if isinstance(rankings, (str, bytes)) or not isinstance(rankings, (list, tuple)):
        raise ValueError(f"rankings: expected a list of rankings, got {type(rankings).__name__}")
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 <= k < math.inf:
        raise ValueError(f"k: expected a finite number >= 0, got {k!r}")
    fused: dict[int, float] = {}
    for i, ranking in enumerate(rankings):
        seen: set[int] = set()
        for rank, row in enumerate(_check_rows(f"rankings[{i}]", ranking), start=1):
            if row not in seen:
                seen.add(row)
                fused[row] = fused.get(row, 0.0) + 1.0 / (k + rank)
    return _ranked(fused)


def _check_weights(weights, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    weights = list(weights)
    if len(weights) != n:
        raise ValueError(f"weights: expected {n} weights (one per score list), got {len(weights)}")
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < math.inf:
            raise ValueError(f"weights: expected finite numbers >= 0, got {w!r}")
    if n and sum(weights) == 0:
        raise ValueError(f"weights: expected at least one weight > 0, got {weights}")
    return [float(w) for w in weights]


def min_max(scores: dict[int, float]) -> dict[int, float]:
    """Scores scaled to [0, 1]: the lowest -> 0, the highest -> 1; all equal -> all 1.
    {4: 2.0, 9: 6.0, 1: 3.0} -> {4: 0.0, 9: 1.0, 1: 0.25}."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi == lo:
        return {row: 1.0 for row in scores}
    return {row: (s - lo) / (hi - lo) for row, s in scores.items()}


def weighted_fusion(score_lists: list[dict[int, float]], weights: list[float] | None = None
                    ) -> list[tuple[int, float]]:  # fmt: skip
    """Score lists ({row: score}, e.g. BM25's and the dense top-k's) -> [(row, sum of weight *
    min-max normalised score)], best first. weights: one per list (default: equal)."""
    if isinstance(score_lists, dict) or not isinstance(score_lists, (list, tuple)):
        raise ValueError(
            f"score_lists: expected a list of {{row: score}} dicts, got {type(score_lists).__name__}"
        )
    weights = _check_weights(weights, len(score_lists))
    fused: dict[int, float] = {}
    for i, (scores, w) in enumerate(zip(score_lists, weights)):
        if not isinstance(scores, dict):
            raise ValueError(f"score_lists[{i}]: expected a {{row: score}} dict, got {type(scores).__name__}")  # fmt: skip
        rows = _check_rows(f"score_lists[{i}]", scores.keys())
        values = [float(v) for v in scores.values()]
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"score_lists[{i}]: expected finite scores, got NaN or inf")
        for row, s in min_max(dict(zip(rows, values))).items():
            fused[row] = fused.get(row, 0.0) + w * s
    return _ranked(fused)


def rerank_dense(
    candidates: list[int], query: np.ndarray, vectors: np.ndarray, top_n: int | None = None
) -> list[tuple[int, float]]:
    """Candidates (rows of ``vectors``) re-ordered by cosine to ``query``: [(row, cosine)], best
    first, equal cosines in the candidates' order; the first ``top_n`` (default: all).
    query (D,) or (1, D), vectors (N, D)."""
    rows = _check_rows("candidates", candidates)
    query, vectors = np.asarray(query), np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"vectors: expected a 2-D array (rows, dim), got shape {vectors.shape}")
    bad = [r for r in rows if not 0 <= r < len(vectors)]
    if bad:
        raise ValueError(f"candidates: expected rows in [0, {len(vectors)}), got {bad[0]}")
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise ValueError(f"top_n: expected a positive int or None, got {top_n!r}")
    if not rows:
        return []
    # positions into ``rows``: cosine_top_k's tie rule (the lower position) keeps their order
    pos, cos = cosine_top_k(query.reshape(1, -1), vectors[rows], top_n or len(rows))
    return [(rows[p], float(c)) for p, c in zip(pos[0].tolist(), cos[0].tolist())]
