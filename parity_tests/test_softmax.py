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
    assert_close,
    check_finite_differences,
    dtypes,
    rng_array,
    seeds,
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
