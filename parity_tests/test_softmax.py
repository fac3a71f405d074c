"""Softmax and log-softmax: reference == fast (forward and gradient) along any axis, stable for huge
inputs; reference backward == finite differences."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from myllm101.fast import softmax as fast
from myllm101.reference import softmax as ref
from parity_tests.helpers import (
    TOL,
    UNIT_ROUNDOFF,
    assert_close,
    assert_within,
    check_finite_differences,
    dtypes,
    rng_array,
    seeds,
    softmax_error_terms,
    sum_error,
    to_torch,
)

# name -> (reference forward, reference backward, fast function)
FUNCS = {
    "softmax": (ref.softmax_forward, ref.softmax_backward, fast.softmax),
    "log_softmax": (ref.log_softmax_forward, ref.log_softmax_backward, fast.log_softmax),
}
shapes = st.lists(st.integers(1, 9), min_size=1, max_size=4)


@given(
    name=st.sampled_from(sorted(FUNCS)),
    shape=shapes,
    axis_pick=st.integers(0, 7),
    dtype=dtypes,
    scale=st.sampled_from([1.0, 30.0]),
    seed=seeds,
)
def test_forward_backward_match_torch(name, shape, axis_pick, dtype, scale, seed):
    ref_forward, ref_backward, fast_fn = FUNCS[name]
    axis = axis_pick % len(shape) - (len(shape) if axis_pick >= 4 else 0)  # positive and negative
    rng = np.random.default_rng(seed)
    x = rng_array(rng, shape, dtype, scale=scale)
    dy = rng_array(rng, shape, dtype)

    y, cache = ref_forward(x, axis=axis)
    dx = ref_backward(dy, cache)
    assert y.dtype == dx.dtype == np.dtype(dtype)

    xt = to_torch(x, True)
    yt = fast_fn(xt, dim=axis)
    (dxt,) = torch.autograd.grad(yt, xt, to_torch(dy))

    tol = TOL[dtype]
    assert_close(y, yt, name=f"{name} y", **tol)
    assert_close(dx, dxt, name=f"{name} dx", **tol)


def error_estimates(name, x, dy, dtype) -> dict[str, np.ndarray]:
    """Rounding-error estimates per element along the last axis, by the rules in helpers.py."""
    u, V = UNIT_ROUNDOFF[dtype], x.shape[-1]
    p, z, rel_sum = softmax_error_terms(x, -1, dtype)
    rel_p = u * (np.abs(z) + 2) + rel_sum
    dy = dy.astype(np.float64)
    if name == "softmax":
        # dx = p * (dy - c), c = sum p dy: c carries (S') plus its terms' rel_p (E)
        c = (p * dy).sum(-1, keepdims=True)
        pd2 = ((p * dy) ** 2).sum(-1, keepdims=True)
        terms_err = np.sqrt(((rel_p * p * dy) ** 2).sum(-1, keepdims=True))
        err_c = sum_error(c, pd2, V, dtype) + terms_err
        dx = p * (dy - c)
        dx_est = rel_p * p * (np.abs(dy) + np.abs(c)) + p * err_c + 2 * u * np.abs(dx)
        return {"y": rel_p * p, "dx": dx_est}
    # log_softmax: y = z - log S carries u (|z| + |log S| + |y|) + rel_sum; dx = dy - p * s with
    # s = sum dy by (S'). 2u |dx|: each side rounds its own final subtraction
    y = z - np.log(np.exp(z).sum(-1, keepdims=True))
    s = dy.sum(-1, keepdims=True)
    err_s = sum_error(s, (dy * dy).sum(-1, keepdims=True), V, dtype)
    return {
        "y": u * (np.abs(z) + np.abs(y - z) + np.abs(y)) + rel_sum,
        "dx": p * err_s + rel_p * p * np.abs(s) + 2 * u * np.abs(dy - p * s),
    }


@pytest.mark.parametrize("name", sorted(FUNCS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_realistic_size(name, dtype):
    # 4 rows over GPT-2's 50257-token vocabulary, logits of spread ~3. Probabilities are ~2e-5, so
    # TOL's atol 1e-5 would compare nothing, and log_softmax's dx = dy - p * sum(dy) carries the
    # float32 error of a 50257-term sum (measured 7e-5, over TOL): each element gets its own bound
    ref_forward, ref_backward, fast_fn = FUNCS[name]
    rng = np.random.default_rng(0)
    x = rng_array(rng, (4, 50257), dtype, scale=3.0)
    dy = rng_array(rng, x.shape, dtype)
    y, cache = ref_forward(x, axis=-1)
    xt = to_torch(x, True)
    yt = fast_fn(xt, dim=-1)
    (dxt,) = torch.autograd.grad(yt, xt, to_torch(dy))
    est = error_estimates(name, x, dy, dtype)
    assert_within(y, yt, est["y"], name=f"{name} y")
    assert_within(ref_backward(dy, cache), dxt, est["dx"], name=f"{name} dx")


def test_softmax_is_a_distribution_and_log_softmax_its_log():
    x = np.random.default_rng(0).standard_normal((5, 7, 3))
    for axis in (0, 1, -1):
        y, _ = ref.softmax_forward(x, axis)
        logy, _ = ref.log_softmax_forward(x, axis)
        assert np.all(y > 0)
        assert_close(np.sum(y, axis=axis), np.ones(np.delete(x.shape, axis)), rtol=1e-15)
        assert_close(logy, np.log(y), rtol=1e-14, atol=1e-14, name="log_softmax vs log(softmax)")


def test_huge_inputs_are_stable():
    # without the max subtraction exp(1e4) overflows to inf and the result is nan
    x = np.array([[1e4, 1e4 - 1.0, -1e4, 0.0], [-1e4, -1e4, -1e4 + 3.0, -1e4]])
    dy = np.array([[1.0, -2.0, 0.5, 3.0], [0.0, 1.0, -1.0, 2.0]])
    xt = to_torch(x, True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        for name, (ref_forward, ref_backward, fast_fn) in FUNCS.items():
            y, cache = ref_forward(x)
            dx = ref_backward(dy, cache)
            yt = fast_fn(xt)
            (dxt,) = torch.autograd.grad(yt, xt, to_torch(dy))
            assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
            assert_close(y, yt, name=f"{name} y", **TOL["float64"])
            assert_close(dx, dxt, name=f"{name} dx", **TOL["float64"])


@pytest.mark.parametrize("name", sorted(FUNCS))
@pytest.mark.parametrize("axis", [0, -1])
@given(seed=seeds)
def test_finite_differences(name, axis, seed):
    ref_forward, ref_backward, _ = FUNCS[name]
    rng = np.random.default_rng(seed)
    x, dy = rng_array(rng, (3, 5), scale=2.0), rng_array(rng, (3, 5))
    dx = ref_backward(dy, ref_forward(x, axis)[1])
    check_finite_differences(lambda: ref_forward(x, axis)[0], {"x": x}, {"x": dx}, dy)


def test_bf16_and_compile():
    # bf16 keeps 8 bits of mantissa: the input rounding shifts a logit by up to |x| * 2**-9 and the
    # output rounding adds 2**-9 relative, so 2**-6 bounds the error for logits of size ~2
    x = torch.randn(4, 64) * 2
    for name, (_, _, fast_fn) in FUNCS.items():
        got = fast_fn(x.bfloat16())
        assert got.dtype == torch.bfloat16
        assert_close(got.float(), fast_fn(x), rtol=2**-6, atol=2**-6, name=f"bf16 {name}")
        compiled = torch.compile(fast_fn, backend="aot_eager", fullgraph=True)
        assert_close(compiled(x, dim=0), fast_fn(x, dim=0), **TOL["float32"])


def test_bad_input():
    x = np.ones((2, 4))
    for ref_forward, ref_backward, fast_fn in FUNCS.values():
        with pytest.raises(ValueError, match=r"axis: expected a value in \[-2, 2\), got 2"):
            ref_forward(x, axis=2)
        with pytest.raises(ValueError, match=r"axis: expected a value in \[-2, 2\), got -3"):
            ref_forward(x, axis=-3)
        with pytest.raises(ValueError, match=r"dim: expected a value in \[-2, 2\), got 5"):
            fast_fn(torch.ones(2, 4), dim=5)
        with pytest.raises(ValueError, match="x: expected dtype .*float32.*, got int64"):
            ref_forward(np.ones((2, 4), dtype=np.int64))
        with pytest.raises(ValueError, match="x: expected dtype .*float32.*, got int64"):
            fast_fn(torch.ones(2, 4, dtype=torch.int64))
        _, cache = ref_forward(x)
        with pytest.raises(ValueError, match=r"dy: expected shape \(2, 4\), got \(4, 2\)"):
            ref_backward(np.ones((4, 2)), cache)
