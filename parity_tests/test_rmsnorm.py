"""RMSNorm: reference == fast (forward and every gradient), reference backward == finite differences."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from myllm101.fast import rmsnorm as fast
from myllm101.reference import rmsnorm as ref
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


def error_estimates(x, w, dy, eps, dtype) -> dict[str, np.ndarray]:
    """Rounding-error estimates per element of y, dx, dweight, by the rules in helpers.py."""
    u, C = UNIT_ROUNDOFF[dtype], x.shape[-1]
    x, w, dy = (a.astype(np.float64) for a in (x, w, dy))
    r = 1 / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    x_hat = x * r
    # mean(x**2) sums C positive terms: no cancellation, relative error u sqrt(C) by (S); the
    # square root halves it, the products add a few u (P): x_hat and y carry rel of their size
    rel = u * (np.sqrt(C) + 4)
    est = {"y": rel * np.abs(x_hat * w)}
    # dx = r (g - x_hat mean(g x_hat)), g = w dy: each term carries rel of its size
    g = np.abs(w * dy)
    est["dx"] = rel * r * (g + np.abs(x_hat) * (g * np.abs(x_hat)).mean(-1, keepdims=True))
    # dweight: a sum over every row (S') of dy * x_hat, each term carrying rel of its size (E)
    rows = tuple(range(x.ndim - 1))
    est["dweight"] = reduction_error(dy * x_hat, rows, dtype, rel * np.abs(dy * x_hat))
    return est


def run_both(x, w, dy, eps=1e-6):
    """(reference y, dx, dweight), (fast ...)."""
    y, cache = ref.rmsnorm_forward(x, w, eps)
    dx, dw = ref.rmsnorm_backward(dy, cache)
    assert y.dtype == dx.dtype == dw.dtype == x.dtype
    xt, wt = to_torch(x, True), to_torch(w, True)
    yt = fast.rmsnorm(xt, wt, eps)
    return (y, dx, dw), (yt, *torch.autograd.grad(yt, (xt, wt), to_torch(dy)))


@given(lead=shapes, C=st.integers(1, 40), dtype=dtypes, seed=seeds)
def test_forward_backward_match_torch(lead, C, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng_array(rng, (*lead, C), dtype)
    w = rng_array(rng, (C,), dtype)
    dy = rng_array(rng, (*lead, C), dtype)

    ours, theirs = run_both(x, w, dy)
    est = error_estimates(x, w, dy, 1e-6, dtype)
    for name, a, t in zip(("y", "dx", "dweight"), ours, theirs):
        assert_within(a, t, est[name], name=name)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_realistic_size_and_bounds_catch_a_planted_error(dtype):
    # SmolLM2-135M's width (576) over 4 x 128 positions; each bound passes the true output and
    # rejects the same output with one element off by PLANTED[dtype] (relative)
    rng = np.random.default_rng(0)
    x, w = rng_array(rng, (4, 128, 576), dtype), rng_array(rng, (576,), dtype)
    dy = rng_array(rng, x.shape, dtype)
    ours, theirs = run_both(x, w, dy)
    est = error_estimates(x, w, dy, 1e-6, dtype)
    for name, a, t in zip(("y", "dx", "dweight"), ours, theirs):
        check = lambda v, a=a, name=name: assert_within(a, v, est[name], name=name)
        assert_catches_planted_error(check, t, dtype)


def test_module_matches_function():
    m = fast.RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        m.weight.uniform_()
    x = torch.randn(2, 3, 16)
    assert torch.equal(m(x), fast.rmsnorm(x, m.weight, 1e-5))


@given(seed=seeds)
def test_finite_differences(seed):
    rng = np.random.default_rng(seed)
    x, w, dy = rng_array(rng, (2, 3, 5)), rng_array(rng, (5,)), rng_array(rng, (2, 3, 5))
    _, cache = ref.rmsnorm_forward(x, w)
    dx, dw = ref.rmsnorm_backward(dy, cache)
    check_finite_differences(
        lambda: ref.rmsnorm_forward(x, w)[0], {"x": x, "weight": w}, {"x": dx, "weight": dw}, dy
    )


def test_bf16_autocast_error_no_worse_than_torch():
    # bf16 keeps 8 bits of mantissa (relative step 2**-8 ~ 4e-3): we compute the statistics in fp32,
    # so the result must be within one bf16 rounding of the fp32 answer.
    x = torch.randn(4, 64)
    w = torch.randn(64)
    exact = fast.rmsnorm(x, w)
    got = fast.rmsnorm(x.bfloat16(), w.bfloat16()).float()
    assert got.dtype == torch.float32
    assert_close(got, exact, rtol=2**-7, atol=2**-7, name="bf16 y")


def test_bad_input():
    x = np.ones((2, 4))
    with pytest.raises(ValueError, match=r"weight: expected shape \(4\), got \(3,\)"):
        ref.rmsnorm_forward(x, np.ones(3))
    with pytest.raises(ValueError, match=r"weight: expected shape \(4\), got \(3,\)"):
        fast.rmsnorm(torch.ones(2, 4), torch.ones(3))
    with pytest.raises(ValueError, match="x: expected dtype .*float32.*, got int64"):
        ref.rmsnorm_forward(np.ones((2, 4), dtype=np.int64), np.ones(4))
    with pytest.raises(ValueError, match="x: expected dtype .*, got int64"):
        fast.rmsnorm(torch.ones(2, 4, dtype=torch.int64), torch.ones(4))
    _, cache = ref.rmsnorm_forward(x, np.ones(4))
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 4\), got \(4, 2\)"):
        ref.rmsnorm_backward(np.ones((4, 2)), cache)
    with pytest.raises(ValueError, match="dim: expected a positive value, got 0"):
        fast.RMSNorm(0)
