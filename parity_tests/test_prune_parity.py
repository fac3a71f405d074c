"""Pruning: reference == fast for every score function (float64, rtol 1e-12) and identical keep-
masks, both equal to an independent oracle of the rule (a stable sort by (score, index) that
prunes the k lowest), on continuous random scores, on scores full of ties, and at SmolLM2's
layer shapes."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from myllm101.checks.prune import prune_count
from myllm101.fast import prune as fast
from myllm101.reference import prune as ref
from parity_tests.helpers import assert_close, rng_array, seeds, to_torch

# Scores are elementwise products, or sums of at most a few hundred float64 terms (column norms,
# head sums): the two trees may add in another order, an error of ~sqrt(n) * 1e-16 relative to
# the terms (all >= 0 here, so also relative to the result), far below 1e-12.
RTOL = 1e-12

sparsities = st.floats(0.0, 1.0, exclude_max=True)
float_dtypes = st.sampled_from(["float64", "float32"])


def oracle(scores: np.ndarray, k: int) -> np.ndarray:
    """Keep-mask of each row of ``scores`` (R, n) with its k lowest pruned, ties by column:
    written with a full stable sort, independently of ``prune_lowest``'s k-th value and counts."""
    order = np.argsort(scores, axis=1, kind="stable")  # equal scores keep their index order
    keep = np.ones(scores.shape, dtype=bool)
    np.put_along_axis(keep, order[:, :k], False, axis=1)
    return keep


def score_matrix(rng, shape, dtype, ties: bool) -> np.ndarray:
    """Continuous random scores (ties have probability ~0), or values from {0, 1, 2} (mostly ties,
    with -0.0 among the zeros: equal to +0.0, so it must not sort apart)."""
    if not ties:
        return rng_array(rng, shape, dtype)
    s = rng.integers(0, 3, shape).astype(dtype)
    return np.where(rng.random(shape) < 0.3, -s, s)  # -0.0 for some zeros


def both_masks(fn, scores: np.ndarray, *args) -> tuple[np.ndarray, np.ndarray]:
    """fn's reference mask and its fast twin's (on a torch copy), as NumPy."""
    mask_ref = getattr(ref, fn)(scores, *args)
    mask_fast = getattr(fast, fn)(to_torch(scores), *args).numpy()
    assert mask_ref.dtype == bool and mask_fast.dtype == bool
    return mask_ref, mask_fast


# ---- scores ----------------------------------------------------------------------------------


@given(out_f=st.integers(1, 12), in_f=st.integers(1, 40), seed=seeds)
def test_magnitude_and_wanda_scores(out_f, in_f, seed):
    rng = np.random.default_rng(seed)
    w = rng_array(rng, (out_f, in_f))
    norms = np.abs(rng_array(rng, (in_f,))) * np.exp(rng.uniform(-3, 3, in_f))
    assert_close(fast.magnitude_scores(to_torch(w)), ref.magnitude_scores(w), RTOL, name="|W|")
    got = fast.wanda_scores(to_torch(w), to_torch(norms))
    assert_close(got, ref.wanda_scores(w, norms), RTOL, name="wanda")
    assert_close(ref.wanda_scores(w, norms), np.abs(w) * norms, RTOL, name="wanda, written out")


@given(
    lead=st.lists(st.integers(1, 5), min_size=0, max_size=2),
    in_f=st.integers(1, 24),
    n_batches=st.integers(1, 4),
    seed=seeds,
)
def test_input_norms_and_their_accumulator(lead, in_f, n_batches, seed):
    """input_norms of x (..., in) in both trees; the fast accumulator over several batches equals
    the norms of all their rows at once (the sums of squares add)."""
    rng = np.random.default_rng(seed)
    xs = [rng_array(rng, (*lead, rng.integers(1, 6), in_f)) for _ in range(n_batches)]
    every_row = np.concatenate([x.reshape(-1, in_f) for x in xs])
    expected = ref.input_norms(every_row)
    assert_close(expected, np.sqrt((every_row**2).sum(0)), RTOL, name="written out")
    assert_close(fast.input_norms(to_torch(xs[0])), ref.input_norms(xs[0]), RTOL, name="norms")
    acc = fast.InputNormAccumulator()
    for x in xs:
        acc.update(to_torch(x))
    assert acc.rows == every_row.shape[0]
    assert_close(acc.norms(), expected, RTOL, name="accumulated norms")


@given(c=st.integers(1, 16), hidden=st.integers(1, 40), seed=seeds)
def test_neuron_scores(c, hidden, seed):
    rng = np.random.default_rng(seed)
    down = rng_array(rng, (c, hidden))
    norms = np.abs(rng_array(rng, (hidden,)))
    expected = ref.neuron_scores(down, norms)
    assert expected.shape == (hidden,)
    assert_close(fast.neuron_scores(to_torch(down), to_torch(norms)), expected, RTOL, name="neuron")
    loop = [norms[j] * np.linalg.norm(down[:, j]) for j in range(hidden)]
    assert_close(expected, np.array(loop), RTOL, name="neuron, one column at a time")


@given(
    n_kv_head=st.integers(1, 4),
    group=st.integers(1, 4),
    head_dim=st.integers(1, 8),
    c=st.integers(1, 16),
    seed=seeds,
)
def test_head_scores(n_kv_head, group, head_dim, c, seed):
    """Both trees, and a loop over query heads that uses GQA's rule (query head h reads kv head
    h // group) to add each head's features into its group."""
    rng = np.random.default_rng(seed)
    n_head = n_kv_head * group
    o_w = rng_array(rng, (c, n_head * head_dim))
    norms = np.abs(rng_array(rng, (n_head * head_dim,)))
    expected = ref.head_scores(o_w, norms, n_head, n_kv_head)
    got = fast.head_scores(to_torch(o_w), to_torch(norms), n_head, n_kv_head)
    assert_close(got, expected, RTOL, name="head scores")
    loop = np.zeros(n_kv_head)
    for h in range(n_head):
        cols = slice(h * head_dim, (h + 1) * head_dim)
        loop[h // group] += np.sum(norms[cols] * np.linalg.norm(o_w[:, cols], axis=0))
    assert_close(expected, loop, RTOL, name="head scores, one head at a time")


# ---- masks -----------------------------------------------------------------------------------


@given(
    out_f=st.integers(1, 12),
    in_f=st.integers(1, 40),
    sparsity=sparsities,
    per_row=st.booleans(),
    ties=st.booleans(),
    dtype=float_dtypes,
    seed=seeds,
)
def test_unstructured_mask(out_f, in_f, sparsity, per_row, ties, dtype, seed):
    scores = score_matrix(np.random.default_rng(seed), (out_f, in_f), dtype, ties)
    mask_ref, mask_fast = both_masks("unstructured_mask", scores, sparsity, per_row)
    if per_row:
        expected = oracle(scores, prune_count(sparsity, in_f))
    else:
        expected = oracle(scores.reshape(1, -1), prune_count(sparsity, scores.size))
    np.testing.assert_array_equal(mask_ref, expected.reshape(out_f, in_f))
    np.testing.assert_array_equal(mask_fast, mask_ref)


@given(
    shapes=st.lists(st.tuples(st.integers(1, 8), st.integers(1, 12)), min_size=1, max_size=4),
    sparsity=sparsities,
    ties=st.booleans(),
    seed=seeds,
)
def test_global_masks(shapes, sparsity, ties, seed):
    """The oracle sorts all matrices' entries as one row: dict order, then row-major."""
    rng = np.random.default_rng(seed)
    scores = {f"m{i}": score_matrix(rng, shape, "float64", ties) for i, shape in enumerate(shapes)}
    masks_ref = ref.global_masks(scores, sparsity)
    masks_fast = fast.global_masks({k: to_torch(v) for k, v in scores.items()}, sparsity)
    flat = np.concatenate([s.reshape(-1) for s in scores.values()])[None, :]
    expected = oracle(flat, prune_count(sparsity, flat.size))[0]
    got = np.concatenate([m.reshape(-1) for m in masks_ref.values()])
    np.testing.assert_array_equal(got, expected)
    assert list(masks_fast) == list(scores)
    for name, mask in masks_ref.items():
        assert mask.shape == scores[name].shape
        np.testing.assert_array_equal(masks_fast[name].numpy(), mask)


@given(
    out_f=st.integers(1, 10),
    n_groups=st.integers(1, 8),
    nm=st.sampled_from([(2, 4), (1, 4), (3, 4), (1, 2), (4, 8)]),
    ties=st.booleans(),
    dtype=float_dtypes,
    seed=seeds,
)
def test_nm_mask(out_f, n_groups, nm, ties, dtype, seed):
    """Each group of m consecutive inputs keeps its n largest: the oracle on (groups, m)."""
    n, m = nm
    scores = score_matrix(np.random.default_rng(seed), (out_f, n_groups * m), dtype, ties)
    mask_ref, mask_fast = both_masks("nm_mask", scores, n, m)
    expected = oracle(scores.reshape(-1, m), m - n).reshape(scores.shape)
    np.testing.assert_array_equal(mask_ref, expected)
    np.testing.assert_array_equal(mask_fast, mask_ref)
    assert (mask_ref.reshape(-1, m).sum(axis=1) == n).all()


def test_ties_are_broken_by_position_in_both_trees():
    """All scores equal: the first k entries in row-major order go (per row: each row's first k
    columns; 2:4: each group's first two), the same in both trees; -0.0 ties with +0.0."""
    scores = np.ones((3, 8))
    scores[1, ::2] = -0.0  # equal to the zeros below, so position decides among them
    scores[1, 1::2] = 0.0
    mask_ref, mask_fast = both_masks("unstructured_mask", np.ones((3, 8)), 0.25)
    np.testing.assert_array_equal(mask_ref.reshape(-1), np.arange(24) >= 6)
    np.testing.assert_array_equal(mask_fast, mask_ref)
    mask_ref, mask_fast = both_masks("unstructured_mask", scores, 0.5, True)
    expected = np.tile(np.arange(8) >= 4, (3, 1))
    np.testing.assert_array_equal(mask_ref, expected)
    np.testing.assert_array_equal(mask_fast, mask_ref)
    mask_ref, mask_fast = both_masks("nm_mask", scores, 2, 4)
    np.testing.assert_array_equal(mask_ref, np.tile([False, False, True, True], (3, 2)))
    np.testing.assert_array_equal(mask_fast, mask_ref)


@pytest.mark.parametrize("shape", [(576, 1536), (1536, 576)])  # SmolLM2's up_proj, down_proj
def test_masks_at_a_realistic_size(shape):
    """Wanda scores of a float32 layer (the norms spread over 3 decades like real activations) give
    the same masks in both trees: per row at 50%, per matrix at 25%, and 2:4."""
    rng = np.random.default_rng(5)
    w = rng_array(rng, shape, "float32", 0.02)
    norms = np.exp(rng.uniform(-3, 4, shape[1])).astype(np.float32)
    scores = ref.wanda_scores(w, norms)
    scores_fast = fast.wanda_scores(to_torch(w), to_torch(norms))
    np.testing.assert_array_equal(scores_fast.numpy(), scores)  # one float32 product each
    cases = [
        ((0.5, True), shape[0] * prune_count(0.5, shape[1])),  # per row
        ((0.25,), prune_count(0.25, w.size)),  # per matrix
    ]
    for args, n_pruned in cases:
        mask_ref, mask_fast = both_masks("unstructured_mask", scores, *args)
        np.testing.assert_array_equal(mask_fast, mask_ref)
        assert (~mask_ref).sum() == n_pruned
    mask_ref, mask_fast = both_masks("nm_mask", scores, 2, 4)
    np.testing.assert_array_equal(mask_fast, mask_ref)


def test_fast_masks_follow_the_device_and_need_no_grad():
    """A Parameter's scores carry no autograd graph, and masks are bool on the scores' device."""
    w = torch.nn.Parameter(torch.randn(4, 8, dtype=torch.float64))
    scores = fast.wanda_scores(w, torch.ones(8, dtype=torch.float64))
    assert not scores.requires_grad
    mask = fast.unstructured_mask(scores, 0.5)
    assert mask.dtype == torch.bool and mask.device == w.device
