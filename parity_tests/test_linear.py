"""Linear: reference == fast (forward and every gradient), reference backward == finite differences."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from myllm101.fast import linear as fast
from myllm101.reference import linear as ref
from parity_tests.helpers import (
    TOL,
    assert_close,
    check_finite_differences,
    dtypes,
    rng_array,
    seeds,
    to_torch,
)

leads = st.lists(st.integers(1, 7), min_size=0, max_size=3)  # min_size=0: a single 1-D vector


@given(
    lead=leads,
    n_in=st.integers(1, 33),
    n_out=st.integers(1, 33),
    bias=st.booleans(),
    dtype=dtypes,
    seed=seeds,
)
def test_forward_backward_match_torch(lead, n_in, n_out, bias, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng_array(rng, (*lead, n_in), dtype)
    w = rng_array(rng, (n_out, n_in), dtype)
    b = rng_array(rng, (n_out,), dtype) if bias else None
    dy = rng_array(rng, (*lead, n_out), dtype)

    y, cache = ref.linear_forward(x, w, b)
    dx, dw, db = ref.linear_backward(dy, cache)
    assert y.dtype == dx.dtype == dw.dtype == np.dtype(dtype)

    xt, wt = to_torch(x, True), to_torch(w, True)
    bt = to_torch(b, True) if bias else None
    yt = fast.linear(xt, wt, bt)
    grads = torch.autograd.grad(yt, (xt, wt, bt) if bias else (xt, wt), to_torch(dy))

    tol = TOL[dtype]
    # y and dx sum n_in / n_out products of N(0, 1) numbers: values ~sqrt(n), so the base tolerance
    # holds; dw and db also sum over every row, so their rounding error grows with the row count
    rows = max(1, int(np.prod(lead)))
    row_tol = dict(rtol=tol["rtol"] * rows, atol=tol["atol"] * rows)
    assert_close(y, yt, name="y", **tol)
    assert_close(dx, grads[0], name="dx", **tol)
    assert_close(dw, grads[1], name="dw", **row_tol)
    if bias:
        assert_close(db, grads[2], name="db", **row_tol)
    else:
        assert db is None


@pytest.mark.parametrize("bias", [True, False])
@given(seed=seeds)
def test_finite_differences(bias, seed):
    rng = np.random.default_rng(seed)
    x, w, dy = rng_array(rng, (2, 3, 4)), rng_array(rng, (5, 4)), rng_array(rng, (2, 3, 5))
    b = rng_array(rng, (5,)) if bias else None
    _, cache = ref.linear_forward(x, w, b)
    dx, dw, db = ref.linear_backward(dy, cache)
    inputs, grads = {"x": x, "w": w}, {"x": dx, "w": dw}
    if bias:
        inputs["b"], grads["b"] = b, db
    check_finite_differences(lambda: ref.linear_forward(x, w, b)[0], inputs, grads, dy)


def test_module_is_nn_linear_with_the_same_output():
    torch.manual_seed(0)
    theirs = nn.Linear(7, 5)
    ours = fast.Linear(7, 5)
    ours.load_state_dict(theirs.state_dict())  # same parameter names and shapes
    x = torch.randn(3, 2, 7)
    assert torch.equal(ours(x), theirs(x))
    assert fast.Linear(7, 5, bias=False).bias is None


def test_bf16_autocast_error_within_bf16_rounding():
    # autocast runs the GEMM on bf16 copies of x and w (unit roundoff u = 2**-9 each) with fp32
    # accumulation, then rounds y to bf16: |err| <= 2u * sum_i |x_i w_i| + u |y|, so 2**-7 of the
    # sum of absolute products plus 2**-8 of |y| is a bound with 2x margin
    torch.manual_seed(0)
    x, w, b = torch.randn(4, 9, 64), torch.randn(32, 64), torch.randn(32)
    exact = fast.linear(x, w, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fast.linear(x, w, b)
    assert got.dtype == torch.bfloat16
    bound = 2**-7 * (x.abs() @ w.abs().T + b.abs()) + 2**-8 * exact.abs()
    assert torch.all((got.float() - exact).abs() <= bound)
    # a float32 residual meeting bf16 weights (a model cast to bf16): x is cast down, the same
    # GEMM as on bf16 inputs, bit for bit
    wb, bb = w.bfloat16(), b.bfloat16()
    mixed = fast.linear(x, wb, bb)
    assert mixed.dtype == torch.bfloat16 and torch.equal(mixed, F.linear(x.bfloat16(), wb, bb))
    with pytest.raises(ValueError, match="w: expected dtype float64, got bfloat16"):
        fast.linear(x.double(), wb)  # only float32 activations are cast down


def test_torch_compile_matches_eager():
    # aot_eager traces forward and backward through dynamo and AOTAutograd, like inductor, but
    # skips C++ codegen so the test stays fast on CPU
    compiled = torch.compile(fast.linear, backend="aot_eager", fullgraph=True)
    x, w, b = torch.randn(3, 8, requires_grad=True), torch.randn(4, 8), torch.randn(4)
    assert torch.equal(compiled(x, w, b), fast.linear(x, w, b))


def test_bad_input():
    x, w = np.ones((2, 4)), np.ones((3, 4))
    with pytest.raises(
        ValueError, match=r"x: expected size 4 in axis -1 \(in_features of w\), got shape \(2, 5\)"
    ):
        ref.linear_forward(np.ones((2, 5)), w)
    with pytest.raises(ValueError, match=r"x: expected size 4 in axis -1 .*, got shape \(2, 5\)"):
        fast.linear(torch.ones(2, 5), torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"w: expected a 2-D array, got shape \(4,\)"):
        ref.linear_forward(x, np.ones(4))
    with pytest.raises(ValueError, match=r"w: expected a 2-D array, got shape \(4,\)"):
        fast.linear(torch.ones(2, 4), torch.ones(4))
    with pytest.raises(ValueError, match=r"b: expected shape \(3\), got \(4,\)"):
        ref.linear_forward(x, w, np.ones(4))
    with pytest.raises(ValueError, match=r"b: expected shape \(3\), got \(4,\)"):
        fast.linear(torch.ones(2, 4), torch.ones(3, 4), torch.ones(4))
    with pytest.raises(ValueError, match="x: expected dtype .*float64.*, got int64"):
        ref.linear_forward(np.ones((2, 4), dtype=np.int64), w)
    with pytest.raises(ValueError, match="x: expected dtype .*float64.*, got int64"):
        fast.linear(torch.ones(2, 4, dtype=torch.int64), torch.ones(3, 4))
    with pytest.raises(ValueError, match="w: expected dtype float32, got float64"):
        ref.linear_forward(x.astype(np.float32), w)
    with pytest.raises(ValueError, match="w: expected dtype float32, got float64"):
        fast.linear(torch.ones(2, 4), torch.ones(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x: expected size 7 in axis -1 .*, got shape \(2, 4\)"):
        fast.Linear(7, 3)(torch.ones(2, 4))
    _, cache = ref.linear_forward(x, w)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 3\), got \(3, 2\)"):
        ref.linear_backward(np.ones((3, 2)), cache)
