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
    assert_catches_planted_error,
    assert_within,
    check_finite_differences,
    dtypes,
    rng_array,
    seeds,
    sum_error,
    to_torch,
)

leads = st.lists(st.integers(1, 7), min_size=0, max_size=3)  # min_size=0: a single 1-D vector


def error_estimates(x, w, b, dy, dtype) -> dict[str, np.ndarray]:
    """Rounding-error estimates per element, by rule (S') of parity_tests/helpers.py: every output
    is a sum of products (a product is exact to u, which the sum's own estimate already covers).
    Sums of squares come from the squared operands, so no (rows, n_out, n_in) array is formed."""
    x, w, dy = (a.astype(np.float64).reshape(-1, a.shape[-1]) for a in (x, w, dy))
    b = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
    n_in, n_out, rows = w.shape[1], w.shape[0], x.shape[0]
    x2, w2, dy2 = x * x, w * w, dy * dy
    return {
        # y_ij = sum_k x_ik w_jk + b_j, dx_ik = sum_j dy_ij w_jk, dw_jk = sum_rows dy_ij x_ik
        "y": sum_error(x @ w.T + b, x2 @ w2.T + b * b, n_in + 1, dtype),
        "dx": sum_error(dy @ w, dy2 @ w2, n_out, dtype),
        "dw": sum_error(dy.T @ x, dy2.T @ x2, rows, dtype),
        "db": sum_error(dy.sum(0), dy2.sum(0), rows, dtype),
    }


def run_both(x, w, b, dy):
    """(reference y, dx, dw, db), (fast ...): db None without a bias."""
    y, cache = ref.linear_forward(x, w, b)
    dx, dw, db = ref.linear_backward(dy, cache)
    assert y.dtype == dx.dtype == dw.dtype == x.dtype
    xt, wt = to_torch(x, True), to_torch(w, True)
    bt = None if b is None else to_torch(b, True)
    yt = fast.linear(xt, wt, bt)
    grads = torch.autograd.grad(yt, (xt, wt) if b is None else (xt, wt, bt), to_torch(dy))
    return (y, dx, dw, db), (yt, grads[0], grads[1], None if b is None else grads[2])


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

    ours, theirs = run_both(x, w, b, dy)
    est = error_estimates(x, w, b, dy, dtype)
    assert_within(ours[0], theirs[0], est["y"].reshape(ours[0].shape), name="y")
    assert_within(ours[1], theirs[1], est["dx"].reshape(ours[1].shape), name="dx")
    assert_within(ours[2], theirs[2], est["dw"], name="dw")
    if bias:
        assert_within(ours[3], theirs[3], est["db"], name="db")
    else:
        assert ours[3] is None


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_realistic_size_and_bounds_catch_a_planted_error(dtype):
    # a GPT-2 small projection (768 -> 768) over 4 x 128 positions; each bound passes the true
    # output and rejects the same output with one element off by PLANTED[dtype] (relative)
    rng = np.random.default_rng(0)
    x = rng_array(rng, (4, 128, 768), dtype)
    w = rng_array(rng, (768, 768), dtype, scale=768**-0.5)
    b, dy = rng_array(rng, (768,), dtype), rng_array(rng, (4, 128, 768), dtype)
    ours, theirs = run_both(x, w, b, dy)
    est = error_estimates(x, w, b, dy, dtype)
    for name, a, t in zip(("y", "dx", "dw", "db"), ours, theirs):
        e = est[name].reshape(a.shape)
        check = lambda v, a=a, e=e, name=name: assert_within(a, v, e, name=name)
        assert_catches_planted_error(check, t, dtype)


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
