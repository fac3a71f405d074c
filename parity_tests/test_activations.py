"""Activations: reference erf == math.erf; reference == fast (forward and every gradient) for GELU
(exact and tanh), SiLU and SwiGLU; reference backward == finite differences; the sigmoid form of
the tanh GELU (what torch.compile runs) == torch's tanh GELU to rounding."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from myllm101.fast import activations as fast
from myllm101.reference import activations as ref
from parity_tests.helpers import (
    TOL,
    UNIT_ROUNDOFF,
    assert_catches_planted_error,
    assert_close,
    check_finite_differences,
    dtypes,
    rng_array,
    seeds,
    to_torch,
)

shapes = st.lists(st.integers(1, 9), min_size=1, max_size=3)
# scale 3 puts a good share of x / sqrt(2) beyond 2, where erf switches to the continued fraction
SCALE = 3.0

# name -> (reference forward, reference backward, fast function), all on one input
UNARY = {
    "gelu": (ref.gelu_forward, ref.gelu_backward, fast.gelu),
    "gelu_tanh": (
        lambda x: ref.gelu_forward(x, "tanh"),
        ref.gelu_backward,
        lambda x: fast.gelu(x, "tanh"),
    ),
    "silu": (ref.silu_forward, ref.silu_backward, fast.silu),
}


def test_erf_matches_math_erf():
    x = np.concatenate(
        [
            np.linspace(-7, 7, 20001),  # both sides of the series / continued-fraction split at 2
            np.geomspace(1e-300, 1.0, 500),  # tiny values: erf(x) ~ 2x/sqrt(pi), relative check
            [0.0, -0.0, 1.9999999999, 2.0, 2.0000000001, 30.0, -1e300],
        ]
    )
    expected = np.array([math.erf(v) for v in x])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = ref.erf(x)
    # math.erf is itself within ~1 ulp; 1e-15 is ~5 ulp of 1.0 and ~5 ulp relative near 0
    assert_close(got, expected, rtol=1e-15, atol=1e-15, name="erf")
    assert_close(got[20001:20501], expected[20001:20501], rtol=2e-15, name="erf relative near 0")
    assert np.array_equal(ref.erf(np.array([np.inf, -np.inf])), [1.0, -1.0])
    assert np.isnan(ref.erf(np.array([np.nan]))[0])
    x32 = x[np.abs(x) < 100].astype(np.float32)
    got32 = ref.erf(x32)
    assert got32.dtype == np.float32
    assert_close(got32, [math.erf(v) for v in x32.astype(np.float64)], rtol=1e-6, atol=1e-6)


@given(
    name=st.sampled_from(sorted(UNARY)), lead=shapes, C=st.integers(1, 40), dtype=dtypes, seed=seeds
)
def test_unary_forward_backward_match_torch(name, lead, C, dtype, seed):
    ref_forward, ref_backward, fast_fn = UNARY[name]
    rng = np.random.default_rng(seed)
    x = rng_array(rng, (*lead, C), dtype, scale=SCALE)
    dy = rng_array(rng, (*lead, C), dtype)

    y, cache = ref_forward(x)
    dx = ref_backward(dy, cache)
    assert y.dtype == dx.dtype == np.dtype(dtype)

    xt = to_torch(x, True)
    yt = fast_fn(xt)
    (dxt,) = torch.autograd.grad(yt, xt, to_torch(dy))

    assert_close(y, yt, name=f"{name} y", **TOL[dtype])
    assert_close(dx, dxt, name=f"{name} dx", **TOL[dtype])


@given(lead=shapes, C=st.integers(1, 40), dtype=dtypes, seed=seeds)
def test_swiglu_forward_backward_match_torch(lead, C, dtype, seed):
    rng = np.random.default_rng(seed)
    gate = rng_array(rng, (*lead, C), dtype, scale=SCALE)
    up = rng_array(rng, (*lead, C), dtype)
    dy = rng_array(rng, (*lead, C), dtype)

    y, cache = ref.swiglu_forward(gate, up)
    dgate, dup = ref.swiglu_backward(dy, cache)

    gt, ut = to_torch(gate, True), to_torch(up, True)
    yt = fast.swiglu(gt, ut)
    dgt, dut = torch.autograd.grad(yt, (gt, ut), to_torch(dy))

    tol = TOL[dtype]
    assert_close(y, yt, name="y", **tol)
    assert_close(dgate, dgt, name="dgate", **tol)
    assert_close(dup, dut, name="dup", **tol)


@pytest.mark.parametrize("name", [*sorted(UNARY), "swiglu"])
def test_realistic_size_float32(name):
    # GPT-2 small's MLP activations (4 x 128 positions x 3072): 1.5M elementwise values, so the
    # tails of x (|x| up to ~15 at SCALE 3) and erf's series / continued-fraction split are all hit.
    # Elementwise, a few roundings each: measured at most 0.48 of TOL (gelu_tanh's gradient)
    rng = np.random.default_rng(0)
    x = rng_array(rng, (4, 128, 3072), "float32", scale=SCALE)
    dy = rng_array(rng, x.shape, "float32")
    xt = to_torch(x, True)
    if name == "swiglu":
        up = rng_array(rng, x.shape, "float32")
        y, cache = ref.swiglu_forward(x, up)
        grads = ref.swiglu_backward(dy, cache)
        ut = to_torch(up, True)
        yt = fast.swiglu(xt, ut)
        grads_t = torch.autograd.grad(yt, (xt, ut), to_torch(dy))
    else:
        ref_forward, ref_backward, fast_fn = UNARY[name]
        y, cache = ref_forward(x)
        grads = (ref_backward(dy, cache),)
        yt = fast_fn(xt)
        grads_t = torch.autograd.grad(yt, (xt,), to_torch(dy))
    assert_close(y, yt, name=f"{name} y", **TOL["float32"])
    for i, (g, gt) in enumerate(zip(grads, grads_t)):
        assert_close(g, gt, name=f"{name} grad {i}", **TOL["float32"])


def test_extreme_inputs_stay_finite_and_match_torch():
    # exp(-x) overflows for x = -1000 if sigmoid is written naively; erf must saturate to +-1
    x = np.array([-1e4, -1000.0, -60.0, -8.0, -1e-12, 0.0, 1e-12, 8.0, 60.0, 1000.0, 1e4])
    dy = np.ones_like(x)
    xt = to_torch(x, True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        for name, (ref_forward, ref_backward, fast_fn) in UNARY.items():
            y, cache = ref_forward(x)
            dx = ref_backward(dy, cache)
            yt = fast_fn(xt)
            (dxt,) = torch.autograd.grad(yt, xt, to_torch(dy))
            assert_close(y, yt, name=f"{name} y", **TOL["float64"])
            assert_close(dx, dxt, name=f"{name} dx", **TOL["float64"])


@pytest.mark.parametrize("name", sorted(UNARY))
@given(seed=seeds)
def test_unary_finite_differences(name, seed):
    ref_forward, ref_backward, _ = UNARY[name]
    rng = np.random.default_rng(seed)
    x, dy = rng_array(rng, (3, 5), scale=SCALE), rng_array(rng, (3, 5))
    dx = ref_backward(dy, ref_forward(x)[1])
    check_finite_differences(lambda: ref_forward(x)[0], {"x": x}, {"x": dx}, dy)


@given(seed=seeds)
def test_swiglu_finite_differences(seed):
    rng = np.random.default_rng(seed)
    gate, up, dy = (rng_array(rng, (3, 5), scale=SCALE) for _ in range(3))
    dgate, dup = ref.swiglu_backward(dy, ref.swiglu_forward(gate, up)[1])
    check_finite_differences(
        lambda: ref.swiglu_forward(gate, up)[0],
        {"gate": gate, "up": up},
        {"gate": dgate, "up": dup},
        dy,
    )


def test_fast_matches_torch_functional_and_modules():
    x, u = torch.randn(3, 17), torch.randn(3, 17)
    assert torch.equal(fast.GELU()(x), F.gelu(x))
    assert torch.equal(fast.GELU("tanh")(x), F.gelu(x, approximate="tanh"))
    assert torch.equal(fast.SiLU()(x), F.silu(x))
    assert torch.equal(fast.SwiGLU()(x, u), F.silu(x) * u)
    assert "tanh" in repr(fast.GELU("tanh"))


def test_bf16_autocast_and_compile():
    # bf16 keeps 8 bits of mantissa (relative step 2**-8): one bf16 rounding of the input and one
    # of the output bound the error against the fp32 result at ~2**-7 relative.
    x, u = torch.randn(4, 64), torch.randn(4, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fast.swiglu(x.bfloat16(), u.bfloat16())
        got_gelu = fast.gelu(x.bfloat16())
    assert got.dtype == got_gelu.dtype == torch.bfloat16
    assert_close(got.float(), fast.swiglu(x, u), rtol=2**-7, atol=2**-7, name="bf16 swiglu")
    assert_close(got_gelu.float(), fast.gelu(x), rtol=2**-7, atol=2**-7, name="bf16 gelu")
    # the validation is plain Python on shapes/dtypes, so dynamo traces it without a graph break
    compiled = torch.compile(fast.swiglu, backend="aot_eager", fullgraph=True)
    assert_close(compiled(x, u), fast.swiglu(x, u), **TOL["float32"])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gelu_tanh_sigmoid_form_matches_torch_tanh_gelu(dtype):
    # The form torch.compile runs: x * sigmoid(2z) is 0.5 x (1 + tanh(z)) exactly in math, so
    # the two differ only by their roundings: about six operations each (x^3, the scaled sum,
    # tanh or sigmoid, the products), every one on values bounded by max(|x|, 1) (and their
    # derivatives: sigmoid' <= 1/4, z' = 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2) times a factor
    # that decays faster), so 16 u max(|x|, 1) bounds value and gradient. Measured on this grid:
    # 3.8 u (value) and 12.6 u (gradient), in both dtypes. The far negative tail (x < -10),
    # where 1 + tanh(z) cancels and the sigmoid form is the more accurate, is inside it too.
    x = np.concatenate([np.linspace(-20, 20, 400_001), [-1e4, -60.0, 0.0, 60.0, 1e4]])
    xt, xs = to_torch(x.astype(dtype), True), to_torch(x.astype(dtype), True)
    want = F.gelu(xt, approximate="tanh")
    got = fast.gelu_tanh_sigmoid_form(xs)
    (dwant,) = torch.autograd.grad(want.sum(), xt)
    (dgot,) = torch.autograd.grad(got.sum(), xs)
    bound = 16 * UNIT_ROUNDOFF[dtype] * np.maximum(np.abs(x), 1.0)

    def check(value, expected=want, name="y"):
        assert_close(value, expected, rtol=0.0, atol=bound, name=f"sigmoid-form gelu {name}")

    assert_catches_planted_error(check, got, dtype)
    check(dgot, dwant, "dy/dx")
    assert torch.isfinite(got).all() and torch.isfinite(dgot).all()
    # the bound tells the forms of GELU apart: the exact (erf) one misses it by ~1000x
    with pytest.raises(AssertionError, match="not close"):
        check(F.gelu(xt))


def test_compiled_tanh_gelu_runs_the_sigmoid_form():
    # under torch.compile gelu(x, "tanh") is traced as the sigmoid form (the aot_eager backend
    # runs the traced ops one by one: the same kernels as calling the form eagerly)
    x = torch.randn(4, 64, dtype=torch.float64) * SCALE
    compiled = torch.compile(fast.gelu, backend="aot_eager", fullgraph=True)
    got = compiled(x, "tanh")
    assert torch.equal(got, fast.gelu_tanh_sigmoid_form(x))
    assert not torch.equal(got, F.gelu(x, approximate="tanh"))  # eager: torch's own kernel
    assert torch.equal(fast.gelu(x, "tanh"), F.gelu(x, approximate="tanh"))
    # bf16 is computed in float32 and rounded once, as F.gelu does: at most 1 bf16 ulp apart
    # (2**-7 relative), plus an atol for the negative tail, where F.gelu's float32 1 + tanh(z)
    # cancels (absolute error ~u |x|, e.g. 0 against the sigmoid form's -1.5e-7 at x = -5)
    xb = x.bfloat16()
    got_b = fast.gelu_tanh_sigmoid_form(xb)
    assert got_b.dtype == torch.bfloat16
    want_b = F.gelu(xb, approximate="tanh")
    assert_close(got_b.double(), want_b.double(), rtol=2**-7, atol=1e-6, name="bf16 gelu")


def test_bad_input():
    x = np.ones((2, 4))
    with pytest.raises(ValueError, match="approximate: expected 'none' or 'tanh', got 'fast'"):
        ref.gelu_forward(x, "fast")
    with pytest.raises(ValueError, match="approximate: expected 'none' or 'tanh', got 'fast'"):
        fast.GELU("fast")
    with pytest.raises(ValueError, match="approximate: expected 'none' or 'tanh', got 'erf'"):
        fast.gelu(torch.ones(2, 4), approximate="erf")
    for ref_forward, ref_backward, fast_fn in UNARY.values():
        with pytest.raises(ValueError, match="x: expected dtype .*float32.*, got int64"):
            ref_forward(np.ones((2, 4), dtype=np.int64))
        with pytest.raises(ValueError, match="x: expected dtype .*float32.*, got int64"):
            fast_fn(torch.ones(2, 4, dtype=torch.int64))
        _, cache = ref_forward(x)
        with pytest.raises(ValueError, match=r"dy: expected shape \(2, 4\), got \(4, 2\)"):
            ref_backward(np.ones((4, 2)), cache)
    with pytest.raises(ValueError, match="x: expected dtype .*, got int32"):
        ref.erf(np.ones(3, dtype=np.int32))

    msg = r"gate and up must have the same shape, got \(2, 4\) and \(2, 3\)"
    with pytest.raises(ValueError, match=msg):
        ref.swiglu_forward(x, np.ones((2, 3)))
    with pytest.raises(ValueError, match=msg):
        fast.swiglu(torch.ones(2, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="up: expected dtype float64, got float32"):
        ref.swiglu_forward(x, np.ones((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="up: expected dtype float32, got float64"):
        fast.swiglu(torch.ones(2, 4), torch.ones(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="gate: expected dtype .*, got int64"):
        fast.SwiGLU()(torch.ones(2, 4, dtype=torch.int64), torch.ones(2, 4))
    _, cache = ref.swiglu_forward(x, x)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 4\), got \(2, 5\)"):
        ref.swiglu_backward(np.ones((2, 5)), cache)
