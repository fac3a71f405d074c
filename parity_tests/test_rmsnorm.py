"""RMSNorm: reference == fast (forward and every gradient), reference backward == finite differences."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from myllm101.fast import rmsnorm as fast
from myllm101.reference import rmsnorm as ref
from parity_tests.helpers import (
    TOL,
    assert_close,
    check_finite_differences,
    dtypes,
    rng_array,
    seeds,
    to_torch,
)

shapes = st.lists(st.integers(1, 9), min_size=1, max_size=3)


@given(lead=shapes, C=st.integers(1, 40), dtype=dtypes, seed=seeds)
def test_forward_backward_match_torch(lead, C, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng_array(rng, (*lead, C), dtype)
    w = rng_array(rng, (C,), dtype)
    dy = rng_array(rng, (*lead, C), dtype)

    y, cache = ref.rmsnorm_forward(x, w)
    dx, dw = ref.rmsnorm_backward(dy, cache)

    xt, wt = to_torch(x, True), to_torch(w, True)
    yt = fast.rmsnorm(xt, wt)
    dxt, dwt = torch.autograd.grad(yt, (xt, wt), to_torch(dy))

    tol = TOL[dtype]
    assert_close(y, yt, name="y", **tol)
    assert_close(dx, dxt, name="dx", **tol)
    # dweight sums over every row: allow the reduction-order error to grow with the row count
    rows = max(1, int(np.prod(lead)))
    assert_close(dw, dwt, name="dweight", rtol=tol["rtol"] * rows, atol=tol["atol"] * rows)


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
