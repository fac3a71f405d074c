"""Exact dense top-k: reference (NumPy) == fast (torch) == a brute-force sort of the full score
matrix, across block boundaries, with the tie rule (equal scores: the lower row first).

Exactness first: integer-valued vectors with ``normalized=True`` make every score an exact
integer in both float32 and float64 (|score| <= D * 3 * 3 << 2**24), so all three must return
the same rows and the same scores bit for bit, ties (frequent with small integers) included.
Then continuous random vectors (``normalized=False``, so both trees normalise): the scores are
sums of D products, computed in another order per tree and per block shape, so they agree to
~sqrt(D) * u; rows are compared where the brute-force scores are not within 1e-9 (float64) of
their neighbour, since a closer pair may legitimately swap.

The embeddings themselves (our BERT's MiniLM vectors == sentence-transformers', cosine >=
0.99999 and every component within 1e-5) are proven in parity_tests/test_minilm.py, not here.
"""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from myllm101.fast import dense as fast
from myllm101.reference import dense as ref
from parity_tests.helpers import assert_close, seeds


def brute_force(queries: np.ndarray, keys: np.ndarray, k: int):
    """Every score at once, in float64, then a full sort by (score descending, row ascending)."""
    s = queries.astype(np.float64) @ keys.astype(np.float64).T  # (Q, N)
    rows = np.broadcast_to(np.arange(keys.shape[0]), s.shape)
    order = np.lexsort((rows, -s), axis=1)[:, : min(k, keys.shape[0])]
    return order, np.take_along_axis(s, order, 1)


def both(queries, keys, k, block_size, normalized, layout="rows"):
    """The reference's and the fast result; the fast one given the keys row-major ("rows"), in
    ``scoring_layout`` ("scoring"), or as a column-major NumPy array ("numpy-F")."""
    r = ref.cosine_top_k(queries, keys, k, block_size=block_size, normalized=normalized)
    fast_keys = {"rows": lambda: torch.from_numpy(keys), "scoring": lambda: fast.scoring_layout(keys),
                 "numpy-F": lambda: np.asfortranarray(keys)}[layout]()  # fmt: skip
    f = fast.cosine_top_k(torch.from_numpy(queries), fast_keys, k,
                          block_size=block_size, normalized=normalized)  # fmt: skip
    return r, (f[0].numpy(), f[1].numpy())


LAYOUTS = st.sampled_from(["rows", "scoring", "numpy-F"])


def test_scoring_layout_holds_the_same_values_column_major():
    keys = np.arange(12.0).reshape(4, 3)
    laid = fast.scoring_layout(keys)
    assert laid.shape == (4, 3) and laid.stride() == (1, 4) and laid.T.is_contiguous()
    np.testing.assert_array_equal(laid.numpy(), keys)
    with pytest.raises(ValueError, match=r"keys: expected a 2-D \(N, D\) array, got shape \(3,\)"):
        fast.scoring_layout(np.zeros(3))


@given(
    seed=seeds,
    Q=st.integers(1, 4),
    N=st.integers(0, 40),
    D=st.integers(1, 6),
    k=st.integers(1, 12),
    block_size=st.integers(1, 16),
    dtype=st.sampled_from(["float64", "float32"]),
    layout=LAYOUTS,
)
def test_integer_scores_exact_with_ties(seed, Q, N, D, k, block_size, dtype, layout):
    rng = np.random.default_rng(seed)
    queries = rng.integers(-3, 4, (Q, D)).astype(dtype)
    keys = rng.integers(-3, 4, (N, D)).astype(dtype)
    (r_rows, r_s), (f_rows, f_s) = both(queries, keys, k, block_size, True, layout)
    b_rows, b_s = brute_force(queries, keys, k)
    assert r_rows.dtype == f_rows.dtype == np.int64 and r_s.dtype == f_s.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(r_rows, b_rows)
    np.testing.assert_array_equal(f_rows, b_rows)
    np.testing.assert_array_equal(r_s, b_s.astype(dtype))
    np.testing.assert_array_equal(f_s, b_s.astype(dtype))


def _separated(scores: np.ndarray, gap: float) -> np.ndarray:
    """(Q, k) mask of ranks whose score differs from both neighbours in the ranking by > gap."""
    d = np.abs(np.diff(scores, axis=1)) > gap
    ok = np.ones(scores.shape, dtype=bool)
    ok[:, 1:] &= d
    ok[:, :-1] &= d
    return ok


@given(seed=seeds, Q=st.integers(1, 3), N=st.integers(1, 50), D=st.integers(1, 24),
       k=st.integers(1, 8), block_size=st.integers(1, 20), layout=LAYOUTS)  # fmt: skip
def test_random_vectors_normalised_inside(seed, Q, N, D, k, block_size, layout):
    rng = np.random.default_rng(seed)
    queries = rng.standard_normal((Q, D)) * rng.uniform(0.1, 10)  # any length: cosine ignores it
    keys = rng.standard_normal((N, D)) * rng.uniform(0.1, 10, (N, 1))
    (r_rows, r_s), (f_rows, f_s) = both(queries, keys, k, block_size, False, layout)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    b_rows, b_s = brute_force(unit(queries), unit(keys), k)
    # cosines in [-1, 1], each a sum of D float64 products after a division: error ~ D * 1e-16
    assert_close(r_s, b_s, rtol=0, atol=1e-12, name="reference scores")
    assert_close(f_s, b_s, rtol=0, atol=1e-12, name="fast scores")
    ok = _separated(b_s, 1e-9)
    np.testing.assert_array_equal(r_rows[ok], b_rows[ok])
    np.testing.assert_array_equal(f_rows[ok], b_rows[ok])


@pytest.mark.parametrize("layout", ["rows", "scoring"])
@pytest.mark.parametrize("block_size", [65536, 4096, 1000, 999])
def test_realistic_size_float32(block_size, layout):
    """MiniLM's width, 5000 keys, float32: block boundaries at 999 / 1000 / 4096 / none."""
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((5000, 384)).astype(np.float32)
    queries = (keys[[3, 999, 1000, 4999]] + 0.5 * rng.standard_normal((4, 384))).astype(np.float32)
    (r_rows, r_s), (f_rows, f_s) = both(queries, keys, 10, block_size, False, layout)
    unit = lambda x: x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)  # noqa: E731
    b_rows, b_s = brute_force(unit(queries), unit(keys), 10)
    # float32 cosines: 384 products of numbers <= 1 summed, ~sqrt(384) * 6e-8 ~ 1e-6; 1e-5 bound
    assert_close(r_s, b_s, rtol=0, atol=1e-5, name="reference scores")
    assert_close(f_s, b_s, rtol=0, atol=1e-5, name="fast scores")
    ok = _separated(b_s, 1e-5)
    assert ok.mean() > 0.9  # the comparison below is not vacuous
    np.testing.assert_array_equal(r_rows[ok], b_rows[ok])
    np.testing.assert_array_equal(f_rows[ok], b_rows[ok])
    assert b_rows[0, 0] == 3 and b_rows[3, 0] == 4999  # each noisy copy finds its original


@given(seed=seeds, Q=st.integers(1, 4), N=st.integers(1, 30), k=st.integers(1, 35))
def test_top_k_tie_rule(seed, Q, N, k):
    """Scores from {0, 1, 2} and -0.0 (mostly ties): both top_k == a full lexsort."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 3, (Q, N)).astype(np.float64)
    s = np.where(rng.random((Q, N)) < 0.3, -s, s)
    order = np.lexsort((np.broadcast_to(np.arange(N), s.shape), -s), axis=1)[:, :k]
    r_cols, r_vals = ref.top_k(s, k)
    f_cols, f_vals = fast.top_k(torch.from_numpy(s), k)
    np.testing.assert_array_equal(r_cols, order)
    np.testing.assert_array_equal(f_cols.numpy(), order)
    np.testing.assert_array_equal(r_vals, np.take_along_axis(s, order, 1))
    np.testing.assert_array_equal(f_vals.numpy(), np.take_along_axis(s, order, 1))


def test_top_k_examples():
    for impl, wrap in ((ref, np.asarray), (fast, torch.tensor)):
        cols, vals = impl.top_k(wrap([[1.0, 3.0, 3.0, 0.0]]), 2)
        assert np.asarray(cols).tolist() == [[1, 2]] and np.asarray(vals).tolist() == [[3.0, 3.0]]
        cols, _ = impl.top_k(wrap([[5.0, 7.0, 7.0, 7.0]]), 2)  # the lower columns of a tie
        assert np.asarray(cols).tolist() == [[1, 2]]


def test_edge_cases():
    q = np.ones((2, 3))
    for impl in (ref, fast):
        rows, s = impl.cosine_top_k(q, np.zeros((0, 3)), 5)  # no keys
        assert tuple(rows.shape) == (2, 0) and tuple(s.shape) == (2, 0)
        rows, s = impl.cosine_top_k(q, np.eye(3), 10)  # k > N: all N
        assert tuple(rows.shape) == (2, 3)
        rows, s = impl.cosine_top_k(np.zeros((1, 3)), np.eye(3), 2)  # zero query: cosines 0
        assert np.asarray(s).tolist() == [[0.0, 0.0]] and np.asarray(rows).tolist() == [[0, 1]]
    rows, _ = fast.cosine_top_k(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), 1)
    assert isinstance(rows, torch.Tensor) and rows.flatten().tolist() == [0, 1, 2]  # NumPy in


@pytest.mark.parametrize("impl", [ref, fast], ids=["reference", "fast"])
def test_bad_input(impl):
    keys = np.ones((4, 3))
    with pytest.raises(
        ValueError, match=r"queries: expected a 2-D array \(rows, dim\), got shape \(3,\)"
    ):
        impl.cosine_top_k(np.ones(3), keys, 2)
    with pytest.raises(ValueError, match="queries: expected dim 3 .*, got 5"):
        impl.cosine_top_k(np.ones((1, 5)), keys, 2)
    with pytest.raises(ValueError, match="keys: expected a float dtype, got int64"):
        impl.cosine_top_k(np.ones((1, 3)), np.ones((4, 3), dtype=np.int64), 2)
    with pytest.raises(ValueError, match="k: expected a positive int, got 0"):
        impl.cosine_top_k(np.ones((1, 3)), keys, 0)
    with pytest.raises(ValueError, match="block_size: expected a positive int, got 0"):
        impl.cosine_top_k(np.ones((1, 3)), keys, 1, block_size=0)
    with pytest.raises(ValueError, match="queries: expected finite values, got NaN or inf"):
        impl.cosine_top_k(np.full((1, 3), np.nan), keys, 1)
