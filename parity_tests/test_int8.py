"""int8: quantized codes and int32 sums equal exactly (reference vs fast), dequantization error
bound, weight-only and W8A8 linear layers, straight-through backward vs finite differences."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from myllm101.fast import int8 as fast
from myllm101.reference import int8 as ref
from parity_tests.helpers import (
    TOL,
    assert_close,
    check_finite_differences,
    dtypes,
    rng_array,
    seeds,
    to_torch,
)

rows = st.integers(1, 9)
cols = st.integers(1, 40)
QUANTIZERS = ("quantize_per_tensor", "quantize_per_channel", "quantize_per_token")


def assert_equal(actual, expected, name):
    assert_close(actual, expected, rtol=0, atol=0, name=name)
    assert str(actual.dtype).removeprefix("torch.") == str(expected.dtype), name


def with_zero_row(rng, n, k, dtype, zero_row):
    w = rng_array(rng, (n, k), dtype, scale=rng.uniform(0.01, 10))
    if zero_row:
        w[rng.integers(n)] = 0  # an all-zero row must get scale 1, not 0 / 0 = NaN
    return w


@given(
    name=st.sampled_from(QUANTIZERS),
    n=rows,
    k=cols,
    zero_row=st.booleans(),
    dtype=dtypes,
    seed=seeds,
)
def test_quantize_exactly_equal_and_error_bound(name, n, k, zero_row, dtype, seed):
    rng = np.random.default_rng(seed)
    w = with_zero_row(rng, n, k, dtype, zero_row)
    q, scale = getattr(ref, name)(w)
    qt, scalet = getattr(fast, name)(to_torch(w))
    # the same IEEE operations (abs-max, divide, round-half-even) on both sides: bit-identical
    assert_equal(qt, q, "q")
    assert_equal(scalet, scale, "scale")
    assert q.dtype == np.int8 and scale.dtype == w.dtype
    assert scale.shape == {"quantize_per_tensor": (), "quantize_per_channel": (n,)}.get(
        name, (n, 1)
    )
    assert np.all(np.abs(q) <= 127) and np.all(np.isfinite(scale)) and np.all(scale > 0)

    deq = ref.dequantize(q, scale)
    assert_equal(fast.dequantize(qt, scalet), deq, "dequantized")
    # documented bound: |w - q * scale| <= scale / 2, plus the float rounding of w / scale and
    # of q * scale (each <= 1 ulp of a value <= 127 * scale, i.e. 127 * eps * scale)
    s = np.broadcast_to(scale if scale.ndim != 1 else scale[:, None], w.shape)
    eps = np.finfo(w.dtype).eps
    assert np.all(np.abs(w - deq) <= s * (0.5 + 2 * 127 * eps))
    # and the largest value of each group hits +-127 exactly (the full range is used)
    assert np.abs(q).max() == (127 if np.any(w != 0) else 0)


def test_rounding_is_to_nearest_and_clipped():
    w = np.array([[127.0, 0.5, 1.5, -0.5, -2.5, 63.4, -63.6]])  # scale = 1
    q, scale = ref.quantize_per_channel(w)
    assert scale.tolist() == [1.0]
    # half to even, like np.round / torch.round
    assert q.tolist() == [[127, 0, 2, 0, -2, 63, -64]]
    qt, _ = fast.quantize_per_channel(torch.from_numpy(w))
    assert qt.tolist() == q.tolist()
    # an all-zero tensor: scale 1, codes 0, dequantizes to exact zeros
    q0, s0 = ref.quantize_per_tensor(np.zeros((3, 2)))
    assert s0 == 1.0 and not q0.any() and not ref.dequantize(q0, s0).any()


@given(m=rows, k=st.integers(1, 300), n=rows, seed=seeds)
def test_int8_matmul_exact(m, k, n, seed):
    rng = np.random.default_rng(seed)
    # include -128: int8_matmul takes any int8, not only what our quantizers produce
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    b = rng.integers(-128, 128, (n, k), dtype=np.int8)
    exact = a.astype(np.int64) @ b.astype(np.int64).T  # no overflow possible in int64
    got_ref = ref.int8_matmul(a, b)
    got_fast = fast.int8_matmul(to_torch(a), to_torch(b))
    assert got_ref.dtype == np.int32 and got_fast.dtype == torch.int32
    assert np.array_equal(got_ref, exact)
    assert np.array_equal(got_fast.numpy(), exact)
    # column-major operands (e.g. a transposed view) and (N, 1) b with degenerate strides
    a_cols = to_torch(np.asfortranarray(a)).t().contiguous().t()
    assert np.array_equal(fast.int8_matmul(a_cols, to_torch(b)).numpy(), exact)


def test_int8_matmul_fallback_is_exact(monkeypatch):
    # the float64 fallback (no torch._int_mm) must give the same int32 sums, at the extreme values
    a = torch.full((3, 1000), -128, dtype=torch.int8)
    b = torch.full((2, 1000), -128, dtype=torch.int8)
    b[1] = 127
    expected = fast.int8_matmul(a, b)
    monkeypatch.setattr(fast, "_int_mm_ok", lambda a, b: False)
    got = fast.int8_matmul(a, b)
    assert got.dtype == torch.int32 and torch.equal(got, expected)
    assert expected[0].tolist() == [128 * 128 * 1000, -128 * 127 * 1000]


@pytest.mark.parametrize("native_int8", ["1", "0"])
@pytest.mark.parametrize("k", [1023, 1024, 1025, 3000])
def test_int8_matmul_backend_follows_the_cpu_and_is_exact(monkeypatch, native_int8, k):
    """VNNI/AMX CPUs use torch._int_mm; others the float32 K-chunked GEMM (device.py). Both are
    exact at the extremes: all -128 makes every 1024-chunk sum exactly 2**24 (float32's limit).
    Forcing _int_mm onto a CPU without int8 dot products checks the dispatch only: there torch's
    result is its own affair (oneDNN's AVX2 kernel saturates int16 pair sums), and device.py never
    picks it."""
    from myllm101.device import INT8_ENV, hardware

    monkeypatch.delenv(INT8_ENV, raising=False)
    really_native = hardware().native_int8
    monkeypatch.setenv(INT8_ENV, native_int8)
    calls = []
    real_int_mm = torch._int_mm
    monkeypatch.setattr(torch, "_int_mm", lambda *a: calls.append(1) or real_int_mm(*a))
    rng = np.random.default_rng(k)
    a = rng.integers(-128, 128, (5, k), dtype=np.int8)
    b = rng.integers(-128, 128, (7, k), dtype=np.int8)
    a[0], b[0], b[1] = -128, -128, 127
    # same-sign rows: sums past 2**24 with random low bits, which one float32 sum would round
    a[1:4], b[2:5] = rng.integers(100, 128, (2, 3, k), dtype=np.int8)
    exact = a.astype(np.int64) @ b.astype(np.int64).T
    got = fast.int8_matmul(to_torch(a), to_torch(b), kernels="off")
    assert got.dtype == torch.int32 and got.shape == (5, 7)
    if native_int8 == "0" or really_native:  # a backend device.py would pick here: exact
        assert np.array_equal(got.numpy(), exact)
    assert exact[0, 0] == 128 * 128 * k
    assert bool(calls) == (native_int8 == "1")  # the backend the capability asks for ran


@given(
    lead=st.lists(st.integers(1, 5), min_size=1, max_size=2),
    d_in=cols,
    d_out=st.integers(1, 20),
    per_channel=st.booleans(),
    bias=st.booleans(),
    dtype=dtypes,
    seed=seeds,
)
def test_int8_linear_matches_torch(lead, d_in, d_out, per_channel, bias, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng_array(rng, (*lead, d_in), dtype)
    w = rng_array(rng, (d_out, d_in), dtype)
    b = rng_array(rng, (d_out,), dtype) if bias else None
    dy = rng_array(rng, (*lead, d_out), dtype)
    w_q, w_scale = ref.quantize_per_channel(w) if per_channel else ref.quantize_per_tensor(w)

    y, cache = ref.int8_linear_forward(x, w_q, w_scale, b)
    dx = ref.int8_linear_backward(dy, cache)
    xt = to_torch(x, True)
    bt = None if b is None else to_torch(b)
    yt = fast.int8_linear(xt, to_torch(w_q), to_torch(w_scale), bt)
    (dxt,) = torch.autograd.grad(yt, (xt,), to_torch(dy))
    # each entry sums d_in (or d_out) products: atol follows the largest value, as for any matmul
    for name, want, got in (("y", y, yt), ("dx", dx, dxt)):
        tol = TOL[dtype]
        atol = tol["atol"] * max(1.0, float(np.abs(want).max()))
        assert_close(got, want, rtol=tol["rtol"], atol=atol, name=name)

    # W8A8: codes and int32 sums are exact, the rescale is the same elementwise float math
    y8 = ref.w8a8_linear_forward(x, w_q, w_scale, b)
    y8t = fast.w8a8_linear(to_torch(x), to_torch(w_q), to_torch(w_scale), bt)
    assert_close(y8t, y8, name="w8a8 y", **TOL[dtype])
    assert y8.dtype == x.dtype and y8.shape == y.shape


def test_w8a8_error_vs_float():
    # quantizing activations adds at most scale/2 per element on both operands; on random data
    # the relative error of the output stays around 1% (a loose, documented-scale sanity bound)
    rng = np.random.default_rng(0)
    x, w = rng_array(rng, (64, 256)), rng_array(rng, (32, 256))
    w_q, w_scale = ref.quantize_per_channel(w)
    exact = x @ w.T
    err_w8a8 = np.abs(ref.w8a8_linear_forward(x, w_q, w_scale) - exact).max() / np.abs(exact).max()
    err_weight_only = (
        np.abs(ref.int8_linear_forward(x, w_q, w_scale)[0] - exact).max() / np.abs(exact).max()
    )
    assert 0 < err_weight_only < err_w8a8 < 0.02


@given(seed=seeds, per_channel=st.booleans())
def test_finite_differences(seed, per_channel):
    rng = np.random.default_rng(seed)
    x, w, b, dy = (
        rng_array(rng, (2, 3, 5)),
        rng_array(rng, (4, 5)),
        rng_array(rng, (4,)),
        rng_array(rng, (2, 3, 4)),
    )
    w_q, w_scale = ref.quantize_per_channel(w) if per_channel else ref.quantize_per_tensor(w)
    _, cache = ref.int8_linear_forward(x, w_q, w_scale, b)
    dx = ref.int8_linear_backward(dy, cache)
    check_finite_differences(
        lambda: ref.int8_linear_forward(x, w_q, w_scale, b)[0], {"x": x}, {"x": dx}, dy
    )


@pytest.mark.parametrize("mode", ["weight_only", "w8a8"])
@pytest.mark.parametrize("per_channel", [True, False])
def test_module_from_linear(mode, per_channel):
    torch.manual_seed(0)
    linear = torch.nn.Linear(24, 10, dtype=torch.float64)
    m = fast.Int8Linear.from_linear(linear, mode=mode, per_channel=per_channel)
    assert m.weight_q.dtype == torch.int8 and m.weight_q.shape == (10, 24)
    assert m.weight_scale.shape == ((10,) if per_channel else ())
    assert set(dict(m.named_buffers())) == {"weight_q", "weight_scale", "bias"}
    assert not list(m.parameters())
    x = torch.randn(3, 5, 24, dtype=torch.float64)
    y = m(x)
    w_q, w_scale, b = (t.numpy() for t in (m.weight_q, m.weight_scale, m.bias))
    if mode == "weight_only":
        want = ref.int8_linear_forward(x.numpy(), w_q, w_scale, b)[0]
    else:
        want = ref.w8a8_linear_forward(x.numpy(), w_q, w_scale, b)
    assert_close(y, want, name="module y", **TOL["float64"])
    # and close to the float layer it replaces (int8 error, ~1% relative, see above)
    exact = linear(x)
    assert (y - exact).abs().max() < 0.02 * exact.abs().max()


def test_bf16_autocast():
    # bf16 carries 8 mantissa bits (relative step 2**-8): a 24-term dot product of bf16-rounded
    # operands with fp32 accumulation lands within ~2**-6 of the fp32 result, relative to its max
    torch.manual_seed(0)
    m = fast.Int8Linear.from_linear(torch.nn.Linear(24, 10))
    x = torch.randn(4, 24)
    exact = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = m(x)
    assert_close(got.float(), exact, rtol=0, atol=2**-6 * exact.abs().max().item(), name="bf16 y")


def test_bad_input():
    a8, b8 = np.ones((2, 4), np.int8), np.ones((3, 4), np.int8)
    with pytest.raises(ValueError, match="a: expected dtype int8, got float32"):
        ref.int8_matmul(a8.astype(np.float32), b8)
    with pytest.raises(ValueError, match="b: expected dtype int8, got int32"):
        fast.int8_matmul(torch.ones(2, 4, dtype=torch.int8), torch.ones(3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"b: expected size 4 in axis 1 .*, got shape \(3, 5\)"):
        ref.int8_matmul(a8, np.ones((3, 5), np.int8))
    with pytest.raises(ValueError, match=r"b: expected size 4 in axis 1 .*, got shape \(3, 5\)"):
        fast.int8_matmul(torch.ones(2, 4, dtype=torch.int8), torch.ones(3, 5, dtype=torch.int8))
    with pytest.raises(ValueError, match=r"w: expected a 2-D array, got shape \(4,\)"):
        ref.quantize_per_channel(np.ones(4))
    with pytest.raises(ValueError, match=r"x: expected a 2-D array, got shape \(2, 3, 4\)"):
        fast.quantize_per_token(torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="w: expected dtype .*float64, got int64"):
        ref.quantize_per_tensor(np.ones(4, np.int64))
    with pytest.raises(ValueError, match="w: expected dtype .*float64, got int64"):
        fast.quantize_per_tensor(torch.ones(4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"scale: expected shape \(3\), got \(4,\)"):
        ref.dequantize(b8, np.ones(4))
    with pytest.raises(ValueError, match=r"scale: expected shape \(3, 1\), got \(3, 2\)"):
        fast.dequantize(torch.ones(3, 4, dtype=torch.int8), torch.ones(3, 2))
    with pytest.raises(ValueError, match="q: expected dtype int8, got float64"):
        ref.dequantize(np.ones((3, 4)), np.ones(3))
    x = np.ones((2, 5))
    for fn in (ref.int8_linear_forward, ref.w8a8_linear_forward):
        with pytest.raises(
            ValueError, match=r"x: expected size 4 in axis -1 .*, got shape \(2, 5\)"
        ):
            fn(x, b8, np.ones(3))
        with pytest.raises(ValueError, match=r"w_scale: expected shape \(3\), got \(2,\)"):
            fn(np.ones((2, 4)), b8, np.ones(2))
    for fn in (fast.int8_linear, fast.w8a8_linear):
        with pytest.raises(ValueError, match=r"b: expected shape \(3\), got \(4,\)"):
            fn(torch.ones(2, 4), torch.ones(3, 4, dtype=torch.int8), torch.ones(3), torch.ones(4))
        with pytest.raises(ValueError, match="w_q: expected dtype int8, got float32"):
            fn(torch.ones(2, 4), torch.ones(3, 4), torch.ones(3))
    _, cache = ref.int8_linear_forward(np.ones((2, 4)), b8, np.ones(3))
    with pytest.raises(ValueError, match=r"dy: expected size 3 in axis -1 .*, got shape \(2, 4\)"):
        ref.int8_linear_backward(np.ones((2, 4)), cache)
    with pytest.raises(ValueError, match=r"mode: expected one of .*, got 'int4'"):
        fast.Int8Linear.from_linear(torch.nn.Linear(4, 3), mode="int4")
