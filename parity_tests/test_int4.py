"""int4 (group-wise, symmetric, weight-only): packing is lossless, quantization stays within its
bound, reference == fast (codes and scales bit for bit), and every CPU kernel of ``Int4Linear``
(forced one by one) computes the dequantized float matmul within its stated rounding."""

import io

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from myllm101 import device
from myllm101.fast import int4 as fast
from myllm101.reference import int4 as ref
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


@st.composite
def in_and_group(draw, max_groups: int = 5):
    """(in_features, group_size): g even, in a multiple of g."""
    g = draw(st.sampled_from([2, 4, 6, 8, 32]))
    return g * draw(st.integers(1, max_groups)), g


def assert_equal(actual, expected, name):
    assert_close(actual, expected, rtol=0, atol=0, name=name)
    assert str(actual.dtype).removeprefix("torch.") == str(expected.dtype), name


@given(n=rows, half=st.integers(0, 20), seed=seeds)
def test_pack_unpack_round_trip(n, half, seed):
    rng = np.random.default_rng(seed)
    q = rng.integers(-8, 8, (n, 2 * half), dtype=np.int8)  # -8 included: GPTQ may produce it
    packed = ref.pack_int4(q)
    assert packed.dtype == np.uint8 and packed.shape == (n, half)
    # the layout: column 2j in the low nibble, 2j + 1 in the high one, each as q + 8
    assert np.array_equal(packed & 0x0F, q[:, 0::2] + 8)
    assert np.array_equal(packed >> 4, q[:, 1::2] + 8)
    assert np.array_equal(ref.unpack_int4(packed), q)
    assert_equal(fast.pack_int4(to_torch(q)), packed, "fast packed")
    assert_equal(fast.unpack_int4(to_torch(packed)), q, "fast unpacked")


def test_pack_layout_example():
    q = np.array([[-8, 7, 0, -1]], dtype=np.int8)  # nibbles 0, 15, 8, 7
    assert ref.pack_int4(q).tolist() == [[0 | 15 << 4, 8 | 7 << 4]] == [[240, 120]]
    assert fast.pack_int4(torch.from_numpy(q)).tolist() == [[240, 120]]


@given(n=rows, shape=in_and_group(), zero_group=st.booleans(), dtype=dtypes, seed=seeds)
def test_quantize_exactly_equal_and_error_bound(n, shape, zero_group, dtype, seed):
    in_f, g = shape
    rng = np.random.default_rng(seed)
    w = rng_array(rng, (n, in_f), dtype, scale=rng.uniform(0.01, 10))
    if zero_group:  # an all-zero group must get scale 1, not 0 / 0 = NaN
        r, j = rng.integers(n), rng.integers(in_f // g)
        w[r, j * g : (j + 1) * g] = 0
    q, scale = ref.quantize_int4(w, g)
    qt, scalet = fast.quantize_int4(to_torch(w), g)
    # the same IEEE operations (abs-max, divide, round-half-even) on both sides: bit-identical
    assert_equal(qt, q, "q")
    assert_equal(scalet, scale, "scale")
    assert q.shape == w.shape and scale.shape == (n, in_f // g) and scale.dtype == w.dtype
    assert q.min() >= -7 and q.max() <= 7  # round-to-nearest never reaches -8
    assert np.all(np.isfinite(scale)) and np.all(scale > 0)
    packed = ref.pack_int4(q)
    deq = ref.dequantize_int4(packed, scale, g)
    assert_equal(fast.dequantize_int4(to_torch(packed), to_torch(scale), g), deq, "dequantized")
    # documented bound |w - q * scale| <= scale / 2, plus the float rounding of w / scale and of
    # q * scale (each <= 1 ulp of a value <= 7 * scale, i.e. 7 * eps * scale)
    s = np.repeat(scale, g, axis=1)  # (n, in): each column's group scale
    eps = np.finfo(w.dtype).eps
    assert np.all(np.abs(w - deq) <= s * (0.5 + 2 * 7 * eps))
    # and each non-zero group uses the full range: its largest |value| maps to +-7
    groups = np.abs(q).reshape(n, in_f // g, g).max(axis=2)
    nonzero = np.abs(w).reshape(n, in_f // g, g).max(axis=2) > 0
    assert np.all(groups[nonzero] == 7) and np.all(groups[~nonzero] == 0)


def test_rounding_is_to_nearest():
    # one group of 4 with absmax 7: scale 1, so the codes are round-half-even of the values
    w = np.array([[7.0, 0.5, 1.5, -2.5], [-7.0, 3.49, -3.51, 0.0]])
    q, scale = ref.quantize_int4(w, 4)
    assert scale.tolist() == [[1.0], [1.0]]
    assert q.tolist() == [[7, 0, 2, -2], [-7, 3, -4, 0]]
    assert fast.quantize_int4(torch.from_numpy(w), 4)[0].tolist() == q.tolist()


def _linear_case(rng, lead, n_out, in_f, g, dtype, bias):
    x = rng_array(rng, (*lead, in_f), dtype)
    q, scale = ref.quantize_int4(rng_array(rng, (n_out, in_f), dtype), g)
    b = rng_array(rng, (n_out,), dtype) if bias else None
    return x, ref.pack_int4(q), scale, b


@given(
    lead=st.lists(st.integers(1, 5), min_size=1, max_size=2),
    n_out=st.integers(1, 20),
    shape=in_and_group(),
    bias=st.booleans(),
    dtype=dtypes,
    seed=seeds,
)
def test_int4_linear_reference_vs_fast(lead, n_out, shape, bias, dtype, seed):
    in_f, g = shape
    rng = np.random.default_rng(seed)
    x, packed, scale, b = _linear_case(rng, lead, n_out, in_f, g, dtype, bias)
    dy = rng_array(rng, (*lead, n_out), dtype)
    y, cache = ref.int4_linear_forward(x, packed, scale, g, b)
    assert np.array_equal(ref.int4_linear(x, packed, scale, g, b), y)
    dx = ref.int4_linear_backward(dy, cache)
    xt = to_torch(x, True)
    bt = None if b is None else to_torch(b)
    yt = fast.int4_linear(xt, to_torch(packed), to_torch(scale), g, bt, kernels="off")
    (dxt,) = torch.autograd.grad(yt, (xt,), to_torch(dy))
    # the same dequantized weight on both sides (exactly equal, tested above); only the matmul's
    # summation order differs: float64 rtol 1e-12, float32 1e-5, atol relative to the largest value
    rtol = 1e-12 if dtype == "float64" else TOL["float32"]["rtol"]
    for name, want, got in (("y", y, yt), ("dx", dx, dxt)):
        atol = rtol * max(1.0, float(np.abs(want).max()))
        assert_close(got, want, rtol=rtol, atol=atol, name=name)


@given(seed=seeds)
def test_finite_differences(seed):
    rng = np.random.default_rng(seed)
    x, packed, scale, b = _linear_case(rng, (2, 3), 4, 8, 4, "float64", True)
    dy = rng_array(rng, (2, 3, 4))
    _, cache = ref.int4_linear_forward(x, packed, scale, 4, b)
    dx = ref.int4_linear_backward(dy, cache)
    check_finite_differences(
        lambda: ref.int4_linear_forward(x, packed, scale, 4, b)[0], {"x": x}, {"x": dx}, dy
    )


# ---- Int4Linear and its CPU kernels --------------------------------------------------------------


def _exact_and_terms(x, m):
    """float64 x @ w.T + b for the module's dequantized weight, and sum_k |x_k w_k| per output."""
    w = fast.dequantize_int4(m.weight_packed, m.weight_scale, m.group_size).double()
    x64 = x.double()
    exact = x64 @ w.t() + (0 if m.bias is None else m.bias.double())
    return exact, x64.abs() @ w.abs().t()


def _int4pack_bound(exact, terms, bias, out_dtype=torch.float32):
    """int4pack rounds x and the scales to bf16 (2**-9 relative each: <= 2**-8 per product
    x_k * q_k * s, first order), sums in float32 (<= 1e-5 of the terms at these sizes), and rounds
    y to bf16 (2**-9 of |y| before the bias) -> elementwise atol. Adding the bias rounds once more
    in the output dtype (2**-9 of |y| in bf16, 2**-24 in float32)."""
    y0 = (exact - (0 if bias is None else bias.double())).abs()
    last = 2**-9 if out_dtype == torch.bfloat16 else 2**-24
    return (2**-8 * 1.01 + 1e-5) * terms + 2**-9 * (y0 + 2**-8 * terms) + last * exact.abs()


@pytest.mark.parametrize("kernel", device.INT4_KERNELS)
@pytest.mark.parametrize("M,N,K,g", [(1, 48, 128, 32), (8, 32, 256, 64), (33, 16, 256, 128)])
@pytest.mark.parametrize("xdtype", [torch.float32, torch.bfloat16])
def test_forced_cpu_kernel_matches_dequantized_matmul(monkeypatch, kernel, M, N, K, g, xdtype):
    monkeypatch.setenv(device.INT4_KERNEL_ENV, kernel)
    monkeypatch.setenv("MYLLM101_KERNELS", "off")
    torch.manual_seed(M + N + K)
    linear = torch.nn.Linear(K, N)
    m = fast.Int4Linear.from_linear(linear, group_size=g)
    x = torch.randn(M, K).to(xdtype)
    calls = []
    real = fast.int4pack_linear
    monkeypatch.setattr(fast, "int4pack_linear", lambda *a: calls.append(1) or real(*a))
    assert m.cpu_kernel(x) == kernel
    with torch.no_grad():
        y = m(x)
        y_float = linear(x.float()).double()  # the layer before quantization
    assert bool(calls) == (kernel == "int4pack") and y.dtype == xdtype and y.shape == (M, N)
    exact, terms = _exact_and_terms(x, m)
    if kernel == "int4pack" or xdtype == torch.bfloat16:
        # bf16 output (and for bf16 x on the dequantize path, a bf16 weight and GEMM): the bound
        # derived for int4pack covers both (the dequantize path rounds the weight, not the scale)
        atol = _int4pack_bound(exact, terms, m.bias, xdtype)
        assert_close(y.double(), exact, rtol=0, atol=atol.numpy(), name=f"{kernel} y")
        # not vacuous: the unquantized layer differs from the int4 one by int4's own error
        assert ((y_float - exact).abs() > atol).any()
    else:  # float32 dequantize + F.linear: summation order only
        assert_close(y, exact, rtol=0, atol=(1e-5 * terms).numpy(), name="dequantize y")


def test_int4pack_equals_dequantize_fallback(monkeypatch):
    """The two CPU kernels on the same module agree within the int4pack bound (bf16 activations;
    the fallback's float32 summation order adds ~1e-6 of the terms)."""
    monkeypatch.setenv("MYLLM101_KERNELS", "off")
    torch.manual_seed(1)
    m = fast.Int4Linear.from_linear(torch.nn.Linear(576, 192), group_size=64)
    x = torch.randn(4, 576)
    out = {}
    for kernel in device.INT4_KERNELS:
        monkeypatch.setenv(device.INT4_KERNEL_ENV, kernel)
        with torch.no_grad():
            out[kernel] = m(x)
    exact, terms = _exact_and_terms(x, m)
    atol = _int4pack_bound(exact, terms, m.bias) + 1e-5 * terms
    assert_close(out["int4pack"], out["dequantize"], rtol=0, atol=atol.numpy(), name="y")


def test_int4pack_falls_back_where_torch_refuses(monkeypatch):
    monkeypatch.setenv(device.INT4_KERNEL_ENV, "int4pack")
    monkeypatch.setenv("MYLLM101_KERNELS", "off")
    x = torch.randn(2, 64)
    for n, g in ((40, 32), (48, 16)):  # N % 16 != 0; a group size torch's kernel lacks
        m = fast.Int4Linear.from_linear(torch.nn.Linear(64, n), group_size=g)
        assert m.cpu_kernel(x) == "dequantize"
        exact, terms = _exact_and_terms(x, m)
        with torch.no_grad():
            assert_close(m(x), exact, rtol=0, atol=(1e-5 * terms).numpy(), name="y")
    m = fast.Int4Linear.from_linear(torch.nn.Linear(64, 48), group_size=32)
    assert m.cpu_kernel(x) == "int4pack"
    assert m.cpu_kernel(x.double()) == "dequantize"  # no float64 kernel
    assert m.cpu_kernel(x.requires_grad_()) == "dequantize"  # autograd: straight-through dx


@pytest.mark.parametrize(
    "capability,rows,expected",
    [
        ("AVX512", 1, "int4pack"),
        ("AVX512", 128, "int4pack"),
        ("AVX2", 1, "int4pack"),
        ("AVX2", 128, "int4pack"),
        ("DEFAULT", 1, "dequantize"),
    ],
)
def test_backend_follows_the_cpu(monkeypatch, capability, rows, expected):
    monkeypatch.delenv(device.INT4_KERNEL_ENV, raising=False)
    flags, _, name, bf16 = device._static_facts()
    monkeypatch.setattr(device, "_static_facts", lambda: (flags, capability, name, bf16))
    assert device.int4_matmul_backend("cpu", rows=rows) == expected
    assert device.int4_matmul_backend("cuda") == "dequantize"
    monkeypatch.setenv(device.INT4_KERNEL_ENV, "Dequantize")
    assert device.int4_matmul_backend("cpu") == "dequantize"
    monkeypatch.setenv(device.INT4_KERNEL_ENV, "fast")
    with pytest.raises(ValueError, match=r"MYLLM101_INT4_KERNEL: expected one of .*, got 'fast'"):
        device.int4_matmul_backend("cpu")


def test_autograd_through_module_is_straight_through():
    torch.manual_seed(2)
    m = fast.Int4Linear.from_linear(torch.nn.Linear(64, 48, dtype=torch.float64), group_size=32)
    x = torch.randn(3, 64, dtype=torch.float64, requires_grad=True)
    y = m(x)
    dy = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, (x,), dy)
    args = (m.weight_packed.numpy(), m.weight_scale.numpy(), 32, m.bias.numpy())
    y_ref, cache = ref.int4_linear_forward(x.detach().numpy(), *args)
    assert_close(y, y_ref, name="y", rtol=1e-12, atol=1e-12)
    assert_close(dx, ref.int4_linear_backward(dy.numpy(), cache), name="dx", rtol=1e-12, atol=1e-12)
    assert not list(m.parameters())


@pytest.mark.parametrize("g", [32, 64, 128])
def test_from_linear_and_from_quantized_round_trip(g):
    torch.manual_seed(g)
    linear = torch.nn.Linear(256, 48)
    m = fast.Int4Linear.from_linear(linear, group_size=g)
    q, scale = fast.quantize_int4(linear.weight.detach(), g)
    assert m.weight_packed.dtype == torch.uint8 and m.weight_packed.shape == (48, 128)
    assert m.weight_scale.shape == (48, 256 // g) and m.weight_scale.dtype == torch.float32
    assert (m.in_features, m.out_features, m.group_size) == (256, 48, g)
    assert torch.equal(fast.unpack_int4(m.weight_packed), q) and torch.equal(m.weight_scale, scale)
    assert set(dict(m.named_buffers())) == {"weight_packed", "weight_scale", "bias"}
    # from_quantized takes GPTQ-style codes, -8 included, and stores exactly them
    q[0, :4] = -8
    m2 = fast.Int4Linear.from_quantized(q, scale, g, linear.bias.detach())
    assert torch.equal(fast.unpack_int4(m2.weight_packed), q)
    assert torch.equal(m2.weight_scale, scale) and torch.equal(m2.bias, linear.bias)
    m3 = fast.Int4Linear.from_quantized(q, scale, g)
    assert m3.bias is None
    # close to the float layer: per-element error <= scale / 2, so y is off by at most
    # sum_k |x_k| * scale_k / 2 (plus the int4pack bf16 rounding, far smaller)
    x = torch.randn(5, 256)
    with torch.no_grad():
        err = (m(x) - linear(x)).abs()
        half_step = x.abs() @ (scale.repeat_interleave(g, 1) / 2).t()
    assert torch.all(err <= 1.02 * half_step + 1e-4)


@pytest.mark.parametrize("kernel", device.INT4_KERNELS)
def test_state_dict_round_trip(monkeypatch, kernel):
    monkeypatch.setenv(device.INT4_KERNEL_ENV, kernel)
    monkeypatch.setenv("MYLLM101_KERNELS", "off")
    torch.manual_seed(3)
    m = fast.Int4Linear.from_linear(torch.nn.Linear(128, 32), group_size=64)
    x = torch.randn(2, 7, 128)
    with torch.no_grad():
        y = m(x)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()))
    assert set(state) == {"weight_packed", "weight_scale", "bias"}
    blank = fast.Int4Linear.from_quantized(
        torch.zeros(32, 128, dtype=torch.int8), torch.ones(32, 2), 64, torch.zeros(32)
    )
    with torch.no_grad():
        assert not blank(x).any()  # builds the int4pack cache of the zero weight first
        blank.load_state_dict(state)
        assert torch.equal(blank(x), y)  # the cache was rebuilt from the loaded buffers


def test_bad_input():
    w = np.ones((3, 12))
    for mod, t in ((ref, np.asarray), (fast, torch.from_numpy)):
        with pytest.raises(ValueError, match=r"group_size=5 must be .* divides in_features=12"):
            mod.quantize_int4(t(w), 5)
        with pytest.raises(ValueError, match=r"group_size=3 must be an even .*in_features=12"):
            mod.quantize_int4(t(w), 3)
        with pytest.raises(ValueError, match=r"group_size=8 must be .* in_features=12"):
            mod.quantize_int4(t(w), 8)
        with pytest.raises(ValueError, match="w: expected dtype .*float64, got int64"):
            mod.quantize_int4(t(np.ones((3, 12), np.int64)), 4)
        with pytest.raises(ValueError, match=r"w: expected a 2-D array, got shape \(12,\)"):
            mod.quantize_int4(t(np.ones(12)), 4)
        with pytest.raises(ValueError, match="q: expected dtype int8, got float64"):
            mod.pack_int4(t(w))
        with pytest.raises(ValueError, match=r"q: expected an even number of columns .*\(3, 5\)"):
            mod.pack_int4(t(np.zeros((3, 5), np.int8)))
        with pytest.raises(ValueError, match=r"q: expected int4 codes in \[-8, 7\], got 9"):
            mod.pack_int4(t(np.full((2, 4), 9, np.int8)))
        with pytest.raises(ValueError, match="packed: expected dtype uint8, got int8"):
            mod.unpack_int4(t(np.zeros((3, 6), np.int8)))
        packed, scale = t(np.zeros((3, 6), np.uint8)), t(np.ones((3, 3)))
        with pytest.raises(ValueError, match=r"scale: expected shape \(3, 2\), got \(3, 3\)"):
            mod.dequantize_int4(packed, scale, 6)
        with pytest.raises(ValueError, match=r"group_size=24 must be .* in_features=12"):
            mod.dequantize_int4(packed, scale, 24)
        with pytest.raises(ValueError, match=r"x: expected size 12 in axis -1 .*, got shape"):
            mod.int4_linear(t(np.ones((2, 10))), packed, scale, 4)
        with pytest.raises(ValueError, match=r"b: expected shape \(3\), got \(4,\)"):
            mod.int4_linear(t(np.ones((2, 12))), packed, scale, 4, t(np.ones(4)))
        with pytest.raises(ValueError, match="x: expected dtype .*, got int64"):
            mod.int4_linear(t(np.ones((2, 12), np.int64)), packed, scale, 4)
    with pytest.raises(ValueError, match=r"dy: expected size 3 in axis -1 .*, got shape \(2, 4\)"):
        _, cache = ref.int4_linear_forward(
            np.ones((2, 12)), np.zeros((3, 6), np.uint8), np.ones((3, 3)), 4
        )
        ref.int4_linear_backward(np.ones((2, 4)), cache)
    with pytest.raises(ValueError, match=r"group_size=48 must be .* in_features=32"):
        fast.Int4Linear.from_linear(torch.nn.Linear(32, 16), group_size=48)
