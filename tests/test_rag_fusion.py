"""Hybrid fusion: reciprocal rank fusion and weighted score fusion against the formulas written
out independently, their ordering rules, dense re-ranking against a brute-force cosine sort, and
bad input."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from myllm101.rag.fusion import min_max, reciprocal_rank_fusion, rerank_dense, weighted_fusion

rankings_st = st.lists(st.lists(st.integers(0, 30), max_size=12, unique=True), max_size=4)


def rrf_oracle(rankings, k):
    total = {}
    for ranking in rankings:
        for i in range(len(ranking)):
            total[ranking[i]] = total.get(ranking[i], 0) + 1 / (k + i + 1)
    return total


@given(rankings=rankings_st, k=st.sampled_from([0, 1, 60, 2.5]))
def test_rrf_is_the_formula(rankings, k):
    fused = reciprocal_rank_fusion(rankings, k=k)
    expected = rrf_oracle(rankings, k)
    assert {row for row, _ in fused} == set(expected)
    for row, score in fused:
        assert score == pytest.approx(expected[row], rel=1e-12)
    keys = [(-s, row) for row, s in fused]
    assert keys == sorted(keys)  # best first, equal scores by the lower row
    swapped = dict(reciprocal_rank_fusion(rankings[::-1], k=k))  # the lists' order is moot
    assert swapped == pytest.approx(dict(fused), rel=1e-12)


def test_rrf_examples():
    fused = reciprocal_rank_fusion([[7, 3], [3]], k=60)
    assert [r for r, _ in fused] == [3, 7]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61) and fused[1][1] == pytest.approx(1 / 61)
    assert reciprocal_rank_fusion([[5, 5, 2]]) == [
        (5, 1 / 61),
        (2, 1 / 63),
    ]  # a repeat: its best rank
    assert [r for r, _ in reciprocal_rank_fusion([[1, 2], [2, 1]])] == [1, 2]  # a tie: lower row
    assert reciprocal_rank_fusion([]) == [] and reciprocal_rank_fusion([[]]) == []
    rows = np.array([4, 1])  # NumPy / torch rows are accepted
    assert [r for r, _ in reciprocal_rank_fusion([rows])] == [4, 1]


score_dicts = st.dictionaries(st.integers(0, 20), st.floats(-50, 50), max_size=10)


@given(lists=st.lists(score_dicts, min_size=1, max_size=3), data=st.data())
def test_weighted_fusion_is_the_formula(lists, data):
    weights = data.draw(st.lists(st.floats(0, 5), min_size=len(lists), max_size=len(lists)))
    if sum(weights) == 0:
        weights[0] = 1.0
    fused = weighted_fusion(lists, weights)
    expected = {}
    for scores, w in zip(lists, weights):
        if not scores:
            continue
        lo, hi = min(scores.values()), max(scores.values())
        for row, s in scores.items():
            norm = 1.0 if hi == lo else (s - lo) / (hi - lo)
            expected[row] = expected.get(row, 0.0) + w * norm
    assert dict(fused) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    keys = [(-s, row) for row, s in fused]
    assert keys == sorted(keys)


def test_weighted_fusion_examples():
    assert min_max({4: 2.0, 9: 6.0, 1: 3.0}) == {4: 0.0, 9: 1.0, 1: 0.25}
    assert min_max({3: -1.0}) == {3: 1.0} and min_max({}) == {}
    bm25 = {0: 12.0, 1: 3.0, 2: 0.0}
    dense = {2: 0.9, 3: 0.5, 0: 0.1}
    fused = dict(weighted_fusion([bm25, dense], [0.5, 0.5]))
    assert fused == pytest.approx({0: 0.5, 1: 0.125, 2: 0.5, 3: 0.25})
    halves = {r: s / 2 for r, s in weighted_fusion([bm25, dense], [1, 1])}
    assert dict(weighted_fusion([bm25, dense])) == pytest.approx(halves)  # default: 1/2 each


def test_rerank_dense_orders_by_cosine():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((20, 8)).astype(np.float32)
    query = rng.standard_normal(8).astype(np.float32)
    candidates = [5, 17, 2, 9, 11]
    out = rerank_dense(candidates, query, vectors)
    cos = {r: float(vectors[r] @ query / np.linalg.norm(vectors[r]) / np.linalg.norm(query))
           for r in candidates}  # fmt: skip
    assert [r for r, _ in out] == sorted(candidates, key=lambda r: -cos[r])
    assert [s for _, s in out] == pytest.approx([cos[r] for r, _ in out], abs=1e-6)
    assert rerank_dense(candidates, query, vectors, top_n=2) == out[:2]
    same = np.ones((4, 3), dtype=np.float32)  # all cosines equal: the candidates' order stays
    assert [r for r, _ in rerank_dense([3, 0, 2], np.ones(3), same)] == [3, 0, 2]
    assert rerank_dense([], query, vectors) == []


def test_bad_input():
    with pytest.raises(ValueError, match="k: expected a finite number >= 0, got -1"):
        reciprocal_rank_fusion([[1]], k=-1)
    with pytest.raises(ValueError, match=r"rankings\[1\]: expected int rows, got str 'a'"):
        reciprocal_rank_fusion([[1], ["a"]])
    with pytest.raises(ValueError, match="rankings: expected a list of rankings, got str"):
        reciprocal_rank_fusion("12")
    with pytest.raises(ValueError, match="weights: expected 2 weights .*, got 1"):
        weighted_fusion([{1: 1.0}, {2: 1.0}], [1.0])
    with pytest.raises(
        ValueError, match=r"weights: expected at least one weight > 0, got \[0, 0\]"
    ):
        weighted_fusion([{1: 1.0}, {2: 1.0}], [0, 0])
    with pytest.raises(ValueError, match="weights: expected finite numbers >= 0, got -1"):
        weighted_fusion([{1: 1.0}], [-1])
    with pytest.raises(ValueError, match=r"score_lists\[0\]: expected finite scores, got NaN"):
        weighted_fusion([{1: math.nan}])
    with pytest.raises(ValueError, match=r"candidates: expected rows in \[0, 4\), got 4"):
        rerank_dense([4], np.ones(3), np.ones((4, 3)))
    with pytest.raises(ValueError, match="top_n: expected a positive int or None, got 0"):
        rerank_dense([1], np.ones(3), np.ones((4, 3)), top_n=0)
