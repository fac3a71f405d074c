"""LayerNorm: reference == fast (forward and every gradient), reference backward == finite differences."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from myllm101.fast import layernorm as fast
from myllm101.reference import layernorm as ref
from parity_tests.helpers import (
    UNIT_ROUNDOFF,
    assert_catches_planted_error,
    assert_close,
    assert_within,
    check_finite_differences,
    dtypes,
    reduction_error,
    rng_array,
    seeds,
    to_torch,
)

shapes = st.lists(st.integers(1, 9), min_size=1, max_size=3)


def error_estimates(x, w, b, dy, eps, dtype) -> dict[str, np.ndarray]:
    """First-order rounding-error estimates of y, dx, dweight, dbias, one per element, by the
    rules in parity_tests/helpers.py (all arithmetic in float64 on the float inputs)."""
    u, C = UNIT_ROUNDOFF[dtype], x.shape[-1]
    x, w, dy = (a.astype(np.float64) for a in (x, w, dy))
    mu = x.mean(-1, keepdims=True)
    sigma = np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    x_hat = (x - mu) / sigma
    # (C): this row's condition number; (S) on its mean and variance, (P) for the division:
    # x_hat carries eps_row absolute (the mean's error, in units of sigma) and eps_row relative
    kappa = np.abs(x).mean(-1, keepdims=True) / sigma
    eps_row = u * np.sqrt(C) * (1 + kappa)  # (..., 1)
    e_hat = eps_row * (1 + np.abs(x_hat))
    # y = x_hat * w + b: x_hat's error times |w|, plus each side's final rounding of b (P)
    est = {"y": np.abs(w) * e_hat + (0 if b is None else 2 * u * np.abs(b.astype(np.float64)))}
    # dx = (g - mean(g) - x_hat * mean(g x_hat)) / sigma with g = w dy: each term carries
    # eps_row of its size (the means by (S), x_hat by the above, 1/sigma by (P))
    g = np.abs(w * dy)
    spread = (g * (1 + np.abs(x_hat))).mean(-1, keepdims=True)
    est["dx"] = eps_row / sigma * (g + (1 + np.abs(x_hat)) * spread)
    # dweight, dbias: sums over every row (S'), whose terms dy * x_hat carry dy * e_hat (E)
    rows = tuple(range(x.ndim - 1))
    est["dweight"] = reduction_error(dy * x_hat, rows, dtype, np.abs(dy) * e_hat)
    est["dbias"] = reduction_error(dy, rows, dtype)
    return est


def run_both(x, w, b, dy, eps):
    """(reference y, dx, dweight, dbias), (fast ...): dbias None without a bias."""
    y, cache = ref.layernorm_forward(x, w, b, eps)
    dx, dw, db = ref.layernorm_backward(dy, cache)
    assert y.dtype == dx.dtype == dw.dtype == x.dtype
    xt, wt = to_torch(x, True), to_torch(w, True)
    bt = None if b is None else to_torch(b, True)
    yt = fast.layernorm(xt, wt, bt, eps)
    grads = torch.autograd.grad(yt, (xt, wt) if b is None else (xt, wt, bt), to_torch(dy))
    db_t = None if b is None else grads[2]
    return (y, dx, dw, db), (yt, grads[0], grads[1], db_t)


@given(
    lead=shapes,
    C=st.integers(1, 40),
    bias=st.booleans(),
    eps=st.sampled_from([1e-5, 1e-3]),
    dtype=dtypes,
    seed=seeds,
)
def test_forward_backward_match_torch(lead, C, bias, eps, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (rng_array(rng, (*lead, C), dtype, scale=2.0) + 1.5).astype(dtype)  # non-zero mean
    w = rng_array(rng, (C,), dtype)
    b = rng_array(rng, (C,), dtype) if bias else None
    dy = rng_array(rng, (*lead, C), dtype)

    ours, theirs = run_both(x, w, b, dy, eps)
    est = error_estimates(x, w, b, dy, eps, dtype)
    for name, a, t in zip(("y", "dx", "dweight"), ours, theirs):
        assert_within(a, t, est[name], name=name)
    if bias:
        assert_within(ours[3], theirs[3], est["dbias"], name="dbias")
    else:
        assert ours[3] is None


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_realistic_size_and_bounds_catch_a_planted_error(dtype):
    # GPT-2 small's width over 4 x 128 positions; each bound passes the true output and rejects
    # the same output with one element off by PLANTED[dtype] (relative)
    rng = np.random.default_rng(0)
    x = (rng_array(rng, (4, 128, 768), dtype, scale=2.0) + 1.5).astype(dtype)
    w, b = rng_array(rng, (768,), dtype), rng_array(rng, (768,), dtype)
    dy = rng_array(rng, x.shape, dtype)
    ours, theirs = run_both(x, w, b, dy, 1e-5)
    est = error_estimates(x, w, b, dy, 1e-5, dtype)
    for name, a, t in zip(("y", "dx", "dweight", "dbias"), ours, theirs):
        check = lambda v, a=a, name=name: assert_within(a, v, est[name], name=name)
        assert_catches_planted_error(check, t, dtype)


@pytest.mark.parametrize("bias", [True, False])
@given(seed=seeds)
def test_finite_differences(bias, seed):
    rng = np.random.default_rng(seed)
    x, w, dy = rng_array(rng, (2, 3, 5)), rng_array(rng, (5,)), rng_array(rng, (2, 3, 5))
    b = rng_array(rng, (5,)) if bias else None
    _, cache = ref.layernorm_forward(x, w, b)
    dx, dw, db = ref.layernorm_backward(dy, cache)
    inputs, grads = {"x": x, "weight": w}, {"x": dx, "weight": dw}
    if bias:
        inputs["bias"], grads["bias"] = b, db
    check_finite_differences(lambda: ref.layernorm_forward(x, w, b)[0], inputs, grads, dy)


def test_normalizes_each_row():
    # what LayerNorm is for, independently of torch: unit weight, zero bias -> mean 0, variance 1
    x = rng_array(np.random.default_rng(1), (4, 300), scale=5.0) + 7.0
    y, _ = ref.layernorm_forward(x, np.ones(300), np.zeros(300), eps=1e-12)
    assert_close(y.mean(-1), np.zeros(4), rtol=0, atol=1e-12, name="row mean")
    assert_close(y.var(-1), np.ones(4), rtol=1e-10, name="row variance")


def test_module_loads_nn_layernorm_state_dict():
    torch.manual_seed(0)
    theirs = nn.LayerNorm(12, eps=1e-5)
    with torch.no_grad():
        theirs.weight.normal_()
        theirs.bias.normal_()
    ours = fast.LayerNorm(12)
    ours.load_state_dict(theirs.state_dict())  # same parameter names: weight, bias
    x = torch.randn(2, 3, 12)
    assert torch.equal(ours(x), theirs(x))
    assert fast.LayerNorm(12, bias=False).bias is None


def test_bf16_autocast_error_within_bf16_rounding():
    # x, weight and bias are rounded to bf16 (unit roundoff u = 2**-9), statistics accumulate in
    # fp32: y = x_hat * w + b carries about 3u of |x_hat * w| + |b| (x_hat inherits x's rounding);
    # 2**-6 = 8u of that leaves a 2x margin beyond the final rounding of y itself
    torch.manual_seed(0)
    x, w, b = torch.randn(4, 64), torch.randn(64), torch.randn(64)
    exact = fast.layernorm(x, w, b)
    x_hat = fast.layernorm(x, torch.ones(64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fast.layernorm(x.bfloat16(), w.bfloat16(), b.bfloat16())
    bound = 2**-6 * ((x_hat * w).abs() + b.abs())
    assert torch.all((got.float() - exact).abs() <= bound)


def test_torch_compile_matches_eager():
    # aot_eager traces like inductor but skips C++ codegen, so the test stays fast on CPU
    compiled = torch.compile(fast.layernorm, backend="aot_eager", fullgraph=True)
    x, w, b = torch.randn(3, 8, requires_grad=True), torch.randn(8), torch.randn(8)
    assert torch.equal(compiled(x, w, b), fast.layernorm(x, w, b))


def test_bad_input():
    x = np.ones((2, 4))
    with pytest.raises(ValueError, match=r"weight: expected shape \(4\), got \(3,\)"):
        ref.layernorm_forward(x, np.ones(3))
    with pytest.raises(ValueError, match=r"weight: expected shape \(4\), got \(3,\)"):
        fast.layernorm(torch.ones(2, 4), torch.ones(3))
    with pytest.raises(ValueError, match=r"bias: expected shape \(4\), got \(5,\)"):
        ref.layernorm_forward(x, np.ones(4), np.ones(5))
    with pytest.raises(ValueError, match=r"bias: expected shape \(4\), got \(5,\)"):
        fast.layernorm(torch.ones(2, 4), torch.ones(4), torch.ones(5))
    with pytest.raises(ValueError, match="x: expected dtype .*float32.*, got int64"):
        ref.layernorm_forward(np.ones((2, 4), dtype=np.int64), np.ones(4))
    with pytest.raises(ValueError, match="x: expected dtype .*, got int64"):
        fast.layernorm(torch.ones(2, 4, dtype=torch.int64), torch.ones(4))
    with pytest.raises(ValueError, match="weight: expected dtype float32, got float64"):
        ref.layernorm_forward(x.astype(np.float32), np.ones(4))
    with pytest.raises(ValueError, match="eps: expected a positive value, got 0"):
        ref.layernorm_forward(x, np.ones(4), eps=0)
    with pytest.raises(ValueError, match="eps: expected a positive value, got -1"):
        fast.layernorm(torch.ones(2, 4), torch.ones(4), eps=-1)
    with pytest.raises(ValueError, match="dim: expected a positive value, got 0"):
        fast.LayerNorm(0)
    _, cache = ref.layernorm_forward(x, np.ones(4))
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 4\), got \(4, 2\)"):
        ref.layernorm_backward(np.ones((4, 2)), cache)
