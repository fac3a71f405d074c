"""Dropout: reference with a given mask == torch x * mask / (1 - p) and its autograd; statistics
of the fast path's own masks (keep rate, exact scaling, reproducible seeding)."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from myllm101.fast import dropout as fast
from myllm101.reference import dropout as ref
from parity_tests.helpers import (
    TOL,
    assert_close,
    check_finite_differences,
    dtypes,
    rng_array,
    seeds,
    to_torch,
)

shapes = st.lists(st.integers(1, 9), min_size=0, max_size=3)
probs = st.sampled_from([0.0, 0.1, 0.5, 0.9]) | st.floats(0.0, 0.99)


@given(shape=shapes, p=probs, dtype=dtypes, seed=seeds)
def test_forward_backward_match_torch_with_the_same_mask(shape, p, dtype, seed):
    rng = np.random.default_rng(seed)
    x, dy = rng_array(rng, shape, dtype), rng_array(rng, shape, dtype)

    y, cache = ref.dropout_forward(x, p, rng)
    dx = ref.dropout_backward(dy, cache)
    assert y.dtype == dx.dtype == np.dtype(dtype)
    mask = cache.mask if cache.mask is not None else np.ones(np.shape(x), dtype=bool)

    # the torch side: the formula itself, written out, with the reference's mask
    xt = to_torch(x, True)
    yt = xt * torch.from_numpy(mask) / (1 - p)
    (dxt,) = torch.autograd.grad(yt, (xt,), to_torch(dy))
    # and the fast path's own apply step
    xf = to_torch(x, True)
    yf = fast.dropout_with_mask(xf, torch.from_numpy(mask), p)
    (dxf,) = torch.autograd.grad(yf, (xf,), to_torch(dy))

    tol = TOL[dtype]  # one multiply by 0/1 and one division: both sides round identically
    assert_close(y, yt, name="y", **tol)
    assert_close(dx, dxt, name="dx", **tol)
    assert_close(y, yf, name="y (fast)", **tol)
    assert_close(dx, dxf, name="dx (fast)", **tol)


@pytest.mark.parametrize("p", [0.1, 0.5])
@given(seed=seeds)
def test_finite_differences(p, seed):
    rng = np.random.default_rng(seed)
    x, dy = rng_array(rng, (3, 7)), rng_array(rng, (3, 7))
    mask = ref.dropout_mask(x.shape, p, rng)
    _, cache = ref.dropout_forward(x, p, None, mask=mask)
    dx = ref.dropout_backward(dy, cache)
    check_finite_differences(
        lambda: ref.dropout_forward(x, p, None, mask=mask)[0], {"x": x}, {"x": dx}, dy
    )


N = 200_000  # elements per statistical draw


def assert_binomial_keep_rate(kept: int, p: float) -> None:
    # kept ~ Binomial(N, 1 - p): mean N(1-p), std sqrt(N p (1-p)). A 6-sigma band fails by chance
    # with probability < 2e-9, yet catches a swapped p (0.3 vs 0.7 is hundreds of sigmas off)
    mean, std = N * (1 - p), np.sqrt(N * p * (1 - p))
    assert abs(kept - mean) <= 6 * std, f"kept {kept} of {N}, expected {mean:.0f} +- {6 * std:.0f}"


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9])
def test_fast_keep_rate_and_exact_scaling(p):
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(N, generator=g) + 0.5  # no exact zeros, so y != 0 marks the kept elements
    y = fast.dropout(x, p, generator=g)
    kept = y != 0
    assert_binomial_keep_rate(int(kept.sum()), p)
    # kept values are exactly x / (1 - p), bit for bit; dropped ones exactly 0
    assert torch.equal(y[kept], x[kept] / (1 - p))
    assert torch.all(y[~kept] == 0)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9])
def test_reference_keep_rate(p):
    mask = ref.dropout_mask((N,), p, np.random.default_rng(1234))
    assert mask.dtype == np.bool_
    assert_binomial_keep_rate(int(mask.sum()), p)


def test_fast_gradient_routes_through_its_own_mask():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(50, 40, requires_grad=True)
    dy = torch.randn(50, 40)
    y = fast.dropout(x, 0.4, generator=g)
    (dx,) = torch.autograd.grad(y, (x,), dy)
    kept = y.detach() != 0
    assert torch.equal(dx, torch.where(kept, dy / 0.6, 0.0))


def test_seeded_generator_is_reproducible():
    x = torch.randn(64, 64)
    a = fast.dropout(x, 0.5, generator=torch.Generator().manual_seed(3))
    b = fast.dropout(x, 0.5, generator=torch.Generator().manual_seed(3))
    c = fast.dropout(x, 0.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # the reference: an int seed and a Generator with that seed give the same mask
    m1 = ref.dropout_mask((64, 64), 0.5, 3)
    m2 = ref.dropout_mask((64, 64), 0.5, np.random.default_rng(3))
    assert np.array_equal(m1, m2) and not np.array_equal(m1, ref.dropout_mask((64, 64), 0.5, 4))


def test_identity_when_not_training_or_p_zero():
    rng = np.random.default_rng(0)
    x, dy = rng_array(rng, (4, 5)), rng_array(rng, (4, 5))
    for p, training in ((0.5, False), (0.0, True)):
        state = rng.bit_generator.state
        y, cache = ref.dropout_forward(x, p, rng, training=training)
        assert rng.bit_generator.state == state  # nothing drawn
        assert np.array_equal(y, x) and cache.mask is None
        assert np.array_equal(ref.dropout_backward(dy, cache), dy)
        xt = torch.from_numpy(x)
        assert torch.equal(fast.dropout(xt, p, training=training), xt)
    m = fast.Dropout(0.5).eval()
    assert torch.equal(m(torch.from_numpy(x)), torch.from_numpy(x))


def test_module_drops_in_train_mode():
    m = fast.Dropout(0.5, generator=torch.Generator().manual_seed(0))
    x = torch.ones(1000)
    y = m(x)
    assert set(y.unique().tolist()) == {0.0, 2.0}
    assert torch.equal(m.eval()(x), x)


def test_bf16_keeps_dtype_and_scales_within_one_rounding():
    # bf16 division rounds once to 8 significant bits: kept values within 2**-8 relative of x/(1-p)
    x = torch.randn(1000).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fast.dropout(x, 0.3, generator=torch.Generator().manual_seed(0))
    assert y.dtype == torch.bfloat16
    kept = y != 0
    exact = x[kept].double() / 0.7
    assert torch.all((y[kept].double() - exact).abs() <= 2**-8 * exact.abs())


def test_torch_compile_matches_eager():
    # aot_eager traces like inductor but skips C++ codegen, so the test stays fast on CPU
    compiled = torch.compile(fast.dropout_with_mask, backend="aot_eager", fullgraph=True)
    x, mask = torch.randn(6, 8, requires_grad=True), torch.rand(6, 8) > 0.2
    assert torch.equal(compiled(x, mask, 0.2), fast.dropout_with_mask(x, mask, 0.2))
    y = torch.compile(fast.dropout, backend="aot_eager")(x, 0.2)
    kept = y != 0
    assert torch.equal(y[kept], x[kept] / 0.8)


def test_bad_input():
    x = np.ones((2, 4))
    for bad in (1.0, -0.1):
        msg = rf"p: expected a value in \[0.0, 1.0\), got {bad}"
        with pytest.raises(ValueError, match=msg):
            ref.dropout_forward(x, bad, 0)
        with pytest.raises(ValueError, match=msg):
            ref.dropout_mask((2, 4), bad, 0)
        with pytest.raises(ValueError, match=msg):
            fast.dropout(torch.ones(2, 4), bad)
        with pytest.raises(ValueError, match=msg):
            fast.dropout_mask(torch.ones(2, 4), bad)
        with pytest.raises(ValueError, match=msg):
            fast.dropout_with_mask(torch.ones(2, 4), torch.ones(2, 4, dtype=torch.bool), bad)
        with pytest.raises(ValueError, match=msg):
            fast.Dropout(bad)
    with pytest.raises(ValueError, match="x: expected dtype .*, got int64"):
        ref.dropout_forward(np.ones((2, 4), dtype=np.int64), 0.1, 0)
    with pytest.raises(ValueError, match="x: expected dtype .*, got int64"):
        fast.dropout(torch.ones(2, 4, dtype=torch.int64), 0.1)
    with pytest.raises(
        ValueError, match=r"x and mask must have the same shape, got \(2, 4\) and \(4,\)"
    ):
        ref.dropout_forward(x, 0.1, None, mask=np.ones(4, dtype=bool))
    with pytest.raises(
        ValueError, match=r"x and mask must have the same shape, got \(2, 4\) and \(4,\)"
    ):
        fast.dropout_with_mask(torch.ones(2, 4), torch.ones(4, dtype=torch.bool), 0.1)
    with pytest.raises(ValueError, match="mask: expected dtype bool, got float64"):
        ref.dropout_forward(x, 0.1, None, mask=np.ones((2, 4)))
    with pytest.raises(ValueError, match="mask: expected dtype bool, got float32"):
        fast.dropout_with_mask(torch.ones(2, 4), torch.ones(2, 4), 0.1)
    with pytest.raises(
        ValueError, match="rng: expected a np.random.Generator or an int seed, got None"
    ):
        ref.dropout_forward(x, 0.1, None)
    _, cache = ref.dropout_forward(x, 0.1, 0)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 4\), got \(4, 2\)"):
        ref.dropout_backward(np.ones((4, 2)), cache)
