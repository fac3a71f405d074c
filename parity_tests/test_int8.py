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


# ---- Int8Linear's CPU kernels (device.int8_linear_kernel), each forced ----

from myllm101 import device  # noqa: E402

WEIGHT_ONLY_KERNELS, W8A8_KERNELS = device.INT8_KERNELS["weight_only"], device.INT8_KERNELS["w8a8"]


def _module(d_in, d_out, mode, per_channel, bias, seed):
    g = torch.Generator().manual_seed(seed)
    linear = torch.nn.Linear(d_in, d_out, bias=bias)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(d_out, d_in, generator=g) * 0.05)
    return fast.Int8Linear.from_linear(linear, mode=mode, per_channel=per_channel)


@pytest.mark.parametrize("kernel", WEIGHT_ONLY_KERNELS + W8A8_KERNELS)
@given(
    m=st.integers(1, 9),
    # K past 1024 and 2048: the exact kernels' K-chunks (fbgemm_fp16_exact, fp32_exact)
    d_in=st.sampled_from([1, 7, 64, 576, 1025, 2100]),
    d_out=st.integers(1, 40),
    per_channel=st.booleans(),
    bias=st.booleans(),
    seed=seeds,
)
def test_int8_linear_kernels_match_the_reference(kernel, m, d_in, d_out, per_channel, bias, seed):
    """Every kernel, forced by MYLLM101_INT8_KERNEL, on this CPU: w8a8 kernels give bit-identical
    outputs (the same int8 codes, the same exact int32 sums, the same float rescale); weight-only
    kernels sum in float32 in their own order (fbgemm's fp16 GEMM, _weight_int8pack_mm apply the
    scale after the sum): each element within float32 rounding of the reference, bounded per
    element as every matmul parity test here (helpers.py (S')), shown to reject a planted error."""
    mode = "weight_only" if kernel in WEIGHT_ONLY_KERNELS else "w8a8"
    if kernel == "fbgemm_int8" and not device._fbgemm_int8_exact():
        pytest.skip("fbgemm's int8 GEMM saturates int16 pair sums on this CPU (no VNNI)")
    layer = _module(d_in, d_out, mode, per_channel, bias, seed)
    x = torch.randn(m, 3, d_in, generator=torch.Generator().manual_seed(seed + 1))
    with pytest.MonkeyPatch.context() as mp, torch.no_grad():
        mp.setenv(device.KERNEL_ENV, kernel)
        assert layer.cpu_kernel(x) == (None if kernel == "dequantize" else kernel)
        got = layer(x)
    x64 = x.double().numpy()
    w_q, w_scale = layer.weight_q.numpy(), layer.weight_scale.numpy()
    b = None if layer.bias is None else layer.bias.numpy()
    assert got.dtype == torch.float32 and got.shape == (m, 3, d_out)
    if mode == "w8a8":
        want = fast.w8a8_linear(x, layer.weight_q, layer.weight_scale, layer.bias, kernels="off")
        assert torch.equal(got, want), f"{kernel}: not bit-identical to w8a8_linear"
        # and the fast twin of the NumPy reference (float32 throughout): same element-wise math
        want_ref = ref.w8a8_linear_forward(x.numpy(), w_q, w_scale, b)
        assert_close(got, want_ref, rtol=4 * 2**-24, atol=0, name=f"{kernel} vs reference")
        return
    want = ref.int8_linear_forward(x64, w_q, w_scale.astype(np.float64), b)[0]
    check = _weight_only_check(x64, w_q, w_scale, b, got.numpy(), kernel)
    check(want)
    assert_catches_planted_error(check, want, "float32")


def _weight_only_check(x64, w_q, w_scale, b, got, name):
    """helpers.py's per-element bound for a float32 dot product of d_in terms x * (q * scale), each
    term carrying two more roundings (q * scale, or the scale applied after the sum)."""
    w = ref.dequantize(w_q, w_scale.astype(np.float64))  # (out, in)
    terms = x64[..., None, :] * w  # (..., out, in)
    est = reduction_error(terms, -1, "float32", term_errors=2 * 2.0**-24 * np.abs(terms))
    if b is not None:
        est = est + 2.0**-24 * np.abs(b)
    return lambda want: assert_within(got, want, est, name=f"{name} y")


@pytest.mark.parametrize("native_int8", ["1", "0"])
@pytest.mark.parametrize("mode", ["weight_only", "w8a8"])
def test_int8_linear_dispatch_follows_device(monkeypatch, mode, native_int8):
    """MYLLM101_NATIVE_INT8 picks the w8a8 family (int8 dot products or exact float chunks);
    the weight-only kernel does not depend on it. The module runs what device.py says."""
    monkeypatch.delenv(device.KERNEL_ENV, raising=False)
    monkeypatch.setenv(device.INT8_ENV, native_int8)
    choice = device.int8_linear_kernel(mode).value
    fbgemm = device._fbgemm_available()
    if mode == "weight_only":
        assert choice == ("fbgemm_fp16" if fbgemm else "dequantize")
    elif native_int8 == "1":
        assert choice == ("fbgemm_int8" if device._fbgemm_int8_exact() else "int_mm")
    else:
        assert choice == ("fbgemm_fp16_exact" if fbgemm else "fp32_exact")
    layer = _module(16, 4, mode, True, True, 0)
    x = torch.randn(2, 16)
    assert layer.cpu_kernel(x) == (None if choice == "dequantize" else choice)
    # float64, autograd (weight-only) and empty inputs take the generic path of the mode
    assert layer.cpu_kernel(x.double()) is None and layer.cpu_kernel(x[:0]) is None
    if mode == "weight_only":
        assert layer.cpu_kernel(x.requires_grad_()) is None
        with torch.no_grad():
            assert layer.cpu_kernel(x) == (None if choice == "dequantize" else choice)


def test_int8_kernel_override_is_checked(monkeypatch):
    monkeypatch.setenv(device.KERNEL_ENV, "int_mm")  # a w8a8 name: weight-only keeps its choice
    monkeypatch.setenv(device.INT8_ENV, "0")
    assert device.int8_linear_kernel("w8a8").value == "int_mm"
    assert device.int8_linear_kernel("weight_only").reason.startswith("fbgemm") or (
        device.int8_linear_kernel("weight_only").value == "dequantize"
    )
    monkeypatch.setenv(device.KERNEL_ENV, "int3")
    with pytest.raises(ValueError, match="MYLLM101_INT8_KERNEL: expected one of .*, got 'int3'"):
        device.int8_linear_kernel("w8a8")
    with pytest.raises(ValueError, match=r"mode: expected one of .*, got 'int4'"):
        device.int8_linear_kernel("int4")


@pytest.mark.slow
def test_fbgemm_int8_probe_sees_saturation():
    """The probe device.py asks before trusting fbgemm's int8 GEMM: with fbgemm capped to AVX2 in
    a fresh process it reports saturation; here it agrees with the CPU's VNNI flag."""
    import subprocess
    import sys

    if not device._fbgemm_available():
        pytest.skip("no fbgemm engine in this torch build")
    code = "from myllm101 import device; print(device._fbgemm_int8_exact())"
    env = {**__import__("os").environ, "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    flags = device._static_facts()[0]
    assert device._fbgemm_int8_exact() == bool(flags.get("avx512_vnni"))


@pytest.mark.parametrize("mode", ["weight_only", "w8a8"])
def test_packed_weight_is_derived_not_saved(mode):
    """state_dict keeps weight_q / weight_scale / bias only; the packed layout is rebuilt after
    load_state_dict (and after an in-place edit), and survives deepcopy / torch.save by rebuilding."""
    import copy
    import io

    layer, other = _module(64, 8, mode, True, True, 0), _module(64, 8, mode, True, True, 1)
    x = torch.randn(3, 64)
    kernel = layer.cpu_kernel(x)
    if kernel is None:
        pytest.skip("this CPU runs the generic path for this mode (no packed layout)")
    with torch.no_grad():
        before = layer(x)
    assert set(layer.state_dict()) == {"weight_q", "weight_scale", "bias"}
    packed = layer.packed_weight(kernel)
    assert layer.packed_weight(kernel) is packed  # cached, not rebuilt per call
    layer.load_state_dict(other.state_dict())
    with torch.no_grad():
        after, want = layer(x), other(x)
    assert torch.equal(after, want) and not torch.equal(after, before)
    assert layer.packed_weight(kernel) is not packed
    with torch.no_grad():
        layer.weight_q.mul_(-1)  # an in-place edit bumps the version: rebuilt again
        assert torch.allclose(layer(x) - layer.bias, -(want - other.bias), rtol=1e-5, atol=1e-6)
    for clone in (copy.deepcopy(layer), _roundtrip(layer, io)):
        with torch.no_grad():
            assert torch.equal(clone(x), layer(x))


def _roundtrip(module, io):
    buf = io.BytesIO()
    torch.save(module, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)
