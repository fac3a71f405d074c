"""Embedding: reference == fast (lookup and table gradient), scatter-add of repeated ids, id checks."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from myllm101.fast import embedding as fast
from myllm101.reference import embedding as ref
from parity_tests.helpers import (
    assert_catches_planted_error,
    assert_close,
    assert_within,
    check_finite_differences,
    dtypes,
    rng_array,
    seeds,
    sum_error,
    to_torch,
)

leads = st.lists(st.integers(1, 7), min_size=0, max_size=3)  # min_size=0: a single id
id_dtypes = st.sampled_from(["int64", "int32", "int16", "uint8"])


def dtable_error(ids, dout, V, dtype) -> np.ndarray:
    """Rounding-error estimate per element of dtable: row v sums the dout rows of the n_v
    positions holding id v, in an order that may differ between np.add.at and torch's scatter;
    rule (S') of parity_tests/helpers.py with n = n_v (0 for a row never looked up: exact zeros)."""
    flat_ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    d = dout.astype(np.float64).reshape(flat_ids.size, -1)
    total, sum_sq = np.zeros((V, d.shape[1])), np.zeros((V, d.shape[1]))
    np.add.at(total, flat_ids, d)
    np.add.at(sum_sq, flat_ids, d * d)
    n = np.bincount(flat_ids, minlength=V)[:, None]
    return sum_error(total, sum_sq, n, dtype)


def run_both(ids, table, dout):
    """(reference out, dtable), (fast ...)."""
    out, cache = ref.embedding_forward(ids, table)
    dtable = ref.embedding_backward(dout, cache)
    assert out.dtype == dtable.dtype == table.dtype
    tablet = to_torch(table, True)
    outt = fast.embedding(to_torch(ids), tablet)
    (dtablet,) = torch.autograd.grad(outt, (tablet,), to_torch(dout))
    return (out, dtable), (outt, dtablet)


@given(
    lead=leads,
    V=st.integers(1, 20),
    C=st.integers(1, 17),
    dtype=dtypes,
    id_dtype=id_dtypes,
    seed=seeds,
)
def test_forward_backward_match_torch(lead, V, C, dtype, id_dtype, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, size=lead).astype(id_dtype)  # small V: ids repeat often
    table = rng_array(rng, (V, C), dtype)
    dout = rng_array(rng, (*lead, C), dtype)

    (out, dtable), (outt, dtablet) = run_both(ids, table, dout)
    assert_close(out, outt, rtol=0, atol=0, name="out")  # a lookup copies rows: bit-exact
    assert_within(dtable, dtablet, dtable_error(ids, dout, V, dtype), name="dtable")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_realistic_size_and_bound_catches_a_planted_error(dtype):
    # the demo tokenizer's 4096 ids x GPT-2 small's width, looked up at 4 x 128 positions drawn
    # from 300 ids so that rows repeat ~7 times; the bound passes the true dtable and rejects it
    # with one element off by PLANTED[dtype] (relative)
    rng = np.random.default_rng(0)
    V = 4096
    ids = rng.integers(0, 300, size=(4, 128))
    table = rng_array(rng, (V, 768), dtype)
    dout = rng_array(rng, (4, 128, 768), dtype)
    (out, dtable), (outt, dtablet) = run_both(ids, table, dout)
    assert_close(out, outt, rtol=0, atol=0, name="out")
    # rows never looked up are exact zeros on both sides; plant among the rows that were
    used = np.unique(ids)
    est = dtable_error(ids, dout, V, dtype)[used]
    assert not dtable[np.setdiff1d(np.arange(V), used)].any()
    assert not dtablet.numpy()[np.setdiff1d(np.arange(V), used)].any()
    check = lambda v: assert_within(dtable[used], v, est, name="dtable")
    assert_catches_planted_error(check, dtablet.numpy()[used], dtype)


def test_repeated_ids_add_up():
    # an independent oracle: a plain Python loop over positions
    rng = np.random.default_rng(0)
    ids = np.array([[3, 1, 3], [3, 0, 1]])
    dout = rng_array(rng, (2, 3, 4))
    _, cache = ref.embedding_forward(ids, rng_array(rng, (5, 4)))
    expected = np.zeros((5, 4))
    for pos in np.ndindex(ids.shape):
        expected[ids[pos]] += dout[pos]
    dtable = ref.embedding_backward(dout, cache)
    assert_close(dtable, expected, rtol=1e-15, atol=0, name="dtable")
    assert np.all(dtable[2] == 0) and np.all(dtable[4] == 0)  # never looked up


@given(seed=seeds)
def test_finite_differences(seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 4, size=(2, 5))  # 10 lookups into 4 rows: repeats guaranteed
    table, dout = rng_array(rng, (4, 3)), rng_array(rng, (2, 5, 3))
    _, cache = ref.embedding_forward(ids, table)
    dtable = ref.embedding_backward(dout, cache)
    check_finite_differences(
        lambda: ref.embedding_forward(ids, table)[0], {"table": table}, {"table": dtable}, dout
    )


def test_module_is_nn_embedding_with_the_same_output():
    torch.manual_seed(0)
    theirs = nn.Embedding(11, 6)
    ours = fast.Embedding(11, 6)
    ours.load_state_dict(theirs.state_dict())
    ids = torch.tensor([[0, 10, 3], [3, 3, 7]])
    assert torch.equal(ours(ids), theirs(ids))


def test_bf16_table_and_autocast_keep_exact_rows():
    # a lookup does no arithmetic: bf16 rows come back bit-exact, and autocast leaves it alone
    table = torch.randn(9, 8, dtype=torch.bfloat16)
    ids = torch.tensor([1, 8, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fast.embedding(ids, table)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, table[ids])


def test_torch_compile_fullgraph():
    # fullgraph=True proves the id check does not split the graph (it is skipped while tracing);
    # aot_eager traces like inductor but skips C++ codegen, so the test stays fast on CPU
    compiled = torch.compile(fast.embedding, backend="aot_eager", fullgraph=True)
    table, ids = torch.randn(10, 4), torch.tensor([[0, 9], [9, 2]])
    assert torch.equal(compiled(ids, table), fast.embedding(ids, table))


def test_bad_input():
    table = np.ones((10, 4))
    for bad, where in ((10, r"\(1,\)"), (-1, r"\(1,\)")):
        ids = np.array([2, bad, 3])
        msg = rf"ids: expected every id in \[0, 10\) \(V=10 table rows\), got id {bad} at index {where}"
        with pytest.raises(ValueError, match=msg):
            ref.embedding_forward(ids, table)
        with pytest.raises(ValueError, match=msg):
            fast.embedding(torch.from_numpy(ids), torch.ones(10, 4))
    with pytest.raises(ValueError, match=r"got id 12 at index \(1, 0\)"):
        fast.Embedding(10, 4)(torch.tensor([[0, 1], [12, 11]]))  # the first bad id, row-major
    with pytest.raises(ValueError, match="ids: expected dtype int8 or .*, got float64"):
        ref.embedding_forward(np.array([1.0, 2.0]), table)
    with pytest.raises(ValueError, match="ids: expected dtype int8 or .*, got float32"):
        fast.embedding(torch.tensor([1.0, 2.0]), torch.ones(10, 4))
    with pytest.raises(ValueError, match=r"table: expected a 2-D array, got shape \(10,\)"):
        ref.embedding_forward(np.array([1]), np.ones(10))
    with pytest.raises(ValueError, match=r"table: expected a 2-D array, got shape \(10,\)"):
        fast.embedding(torch.tensor([1]), torch.ones(10))
    with pytest.raises(ValueError, match="table: expected dtype .*, got int64"):
        ref.embedding_forward(np.array([1]), np.ones((10, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="table: expected dtype .*, got int64"):
        fast.embedding(torch.tensor([1]), torch.ones(10, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="num_embeddings: expected a positive value, got 0"):
        fast.Embedding(0, 4)
    _, cache = ref.embedding_forward(np.array([[1, 2, 3]]), table)
    with pytest.raises(ValueError, match=r"dout: expected shape \(1, 3, 4\), got \(3, 4\)"):
        ref.embedding_backward(np.ones((3, 4)), cache)
