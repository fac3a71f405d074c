"""int8 GEMM kernel == reference == fast, bit for bit; the fused W8A8 rescale within float rounding."""

import numpy as np
import pytest
import torch

from myllm101.fast import int8 as fast
from myllm101.reference import int8 as ref
from parity_tests.helpers import assert_close, rng_array
from parity_tests.kernels import DEVICE, assert_within_2x_eager, requires_kernels

pytestmark = requires_kernels
kern = pytest.importorskip("myllm101.kernels.int8_matmul")

SHAPES = [(1, 1, 1), (5, 7, 33), (33, 17, 123), (130, 5, 200), (16, 16, 16), (3, 129, 65)]


def _int8(rng, shape):
    return torch.from_numpy(rng.integers(-127, 128, size=shape, dtype=np.int8)).to(DEVICE)


@pytest.mark.parametrize("M,N,K", SHAPES)
def test_int8_matmul_exact(M, N, K):
    rng = np.random.default_rng(M * 1000 + N + K)
    a, b = _int8(rng, (M, K)), _int8(rng, (N, K))
    c = kern.int8_matmul(a, b)
    assert c.dtype == torch.int32 and c.shape == (M, N)
    expected = ref.int8_matmul(a.cpu().numpy(), b.cpu().numpy())
    np.testing.assert_array_equal(c.cpu().numpy(), expected)  # integers: no tolerance
    np.testing.assert_array_equal(c.cpu().numpy(), fast.int8_matmul(a.cpu(), b.cpu(), "off"))


def test_int8_matmul_extremes_and_strides():
    # all products +-127*127 summed over K = 1000: |c| = 16,129,000, far past int16 / float16
    a = torch.full((3, 1000), 127, dtype=torch.int8, device=DEVICE)
    b = torch.full((5, 1000), -127, dtype=torch.int8, device=DEVICE)
    b[1] = 127
    c = kern.int8_matmul(a, b)
    np.testing.assert_array_equal(
        c.cpu().numpy(), ref.int8_matmul(a.cpu().numpy(), b.cpu().numpy())
    )
    assert c[0, 0].item() == -127 * 127 * 1000
    # a transposed view for b (strides (1, N)): strides are passed, no copy needed
    rng = np.random.default_rng(7)
    a, bt = _int8(rng, (9, 37)), _int8(rng, (37, 11))
    c = kern.int8_matmul(a, bt.t())
    expected = ref.int8_matmul(a.cpu().numpy(), bt.cpu().numpy().T.copy())
    np.testing.assert_array_equal(c.cpu().numpy(), expected)


@pytest.mark.parametrize("per_tensor", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("M,N,K", [(5, 7, 33), (33, 17, 123)])
def test_linear_rescale_matches_reference(M, N, K, bias, per_tensor):
    rng = np.random.default_rng(K)
    x = rng_array(rng, (M, K), "float32")
    w = rng_array(rng, (N, K), "float32")
    b = rng_array(rng, (N,), "float32") if bias else None
    w_q, w_scale = ref.quantize_per_tensor(w) if per_tensor else ref.quantize_per_channel(w)
    x_q, x_scale = ref.quantize_per_token(x)
    t = lambda v: None if v is None else torch.from_numpy(np.asarray(v)).to(DEVICE)  # noqa: E731
    y = kern.int8_linear_rescale(t(x_q), t(x_scale), t(w_q), t(w_scale), t(b))
    assert y.dtype == torch.float32 and y.shape == (M, N)
    # reference rescale in float32: acc * (sx * sw) + b, the same three roundings as the epilogue
    y_ref = ref.w8a8_linear_forward(x, w_q, w_scale, b)
    assert_close(y, y_ref, name="y vs reference float32", rtol=1e-6, atol=1e-6)
    # float64 of the exact integer sum: only the float32 roundings of the epilogue remain
    acc = ref.int8_matmul(x_q, w_q).astype(np.float64)
    exact = acc * x_scale.astype(np.float64) * np.asarray(w_scale, np.float64)
    exact = exact + (0 if b is None else b.astype(np.float64))
    assert_close(y, exact, name="y vs float64", rtol=1e-5, atol=1e-5)
    y_fast = fast.w8a8_linear(torch.from_numpy(x), t(w_q).cpu(), t(w_scale).cpu(), t(b), "off")
    assert_close(y, y_fast, name="y vs fast", rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_linear_rescale_low_precision_within_2x_eager(dtype):
    # eager rounds the int32 sum to bf16 before scaling; the kernel scales in float32 and rounds once
    rng = np.random.default_rng(3)
    M, N, K = 33, 17, 123
    x = torch.tensor(rng_array(rng, (M, K)), dtype=dtype)
    w = torch.tensor(rng_array(rng, (N, K)), dtype=dtype)
    b = torch.tensor(rng_array(rng, (N,)), dtype=dtype)
    w_q, w_scale = fast.quantize_per_channel(w)
    x_q, x_scale = fast.quantize_per_token(x)
    y = kern.int8_linear_rescale(
        x_q.to(DEVICE), x_scale.to(DEVICE), w_q.to(DEVICE), w_scale.to(DEVICE), b.to(DEVICE)
    )
    assert y.dtype == dtype
    eager = fast.w8a8_linear(x, w_q, w_scale, b, kernels="off")
    acc = ref.int8_matmul(x_q.numpy(), w_q.numpy()).astype(np.float64)
    exact = acc * x_scale.double().numpy() * w_scale.double().numpy() + b.double().numpy()
    assert_within_2x_eager(y, eager, exact, "y")


def test_fast_dispatch_on_runs_the_kernels(monkeypatch):
    calls = []
    real_mm, real_lin = kern.int8_matmul, kern.int8_linear_rescale
    monkeypatch.setattr(kern, "int8_matmul", lambda *a: calls.append("mm") or real_mm(*a))
    monkeypatch.setattr(kern, "int8_linear_rescale", lambda *a: calls.append("lin") or real_lin(*a))
    rng = np.random.default_rng(4)
    a, b = _int8(rng, (5, 33)), _int8(rng, (7, 33))
    c = fast.int8_matmul(a, b, kernels="on")
    np.testing.assert_array_equal(c.cpu().numpy(), fast.int8_matmul(a.cpu(), b.cpu(), "off"))
    layer = fast.Int8Linear.from_linear(torch.nn.Linear(33, 7), mode="w8a8").to(DEVICE)
    layer.kernels = "on"
    x = torch.randn(2, 3, 33, device=DEVICE)
    y = layer(x)
    layer.kernels = "off"
    y_eager = layer(x.cpu())
    assert calls == ["mm", "lin"]
    assert y.shape == (2, 3, 7)
    assert_close(y, y_eager, name="Int8Linear w8a8 kernel vs eager", rtol=1e-6, atol=1e-6)


def test_bad_input():
    a = torch.zeros(4, 8, dtype=torch.int8, device=DEVICE)
    s = torch.ones(4, 1, device=DEVICE)
    w_s = torch.ones(3, device=DEVICE)
    with pytest.raises(ValueError, match=r"a: expected dtype int8, got float32"):
        kern.int8_matmul(a.float(), a)
    with pytest.raises(ValueError, match=r"b: expected a 2-D array, got shape \(8,\)"):
        kern.int8_matmul(a, a[0])
    with pytest.raises(ValueError, match=r"b: expected size 8 in axis 1 .*, got shape \(4, 5\)"):
        kern.int8_matmul(a, a[:, :5])
    w = torch.zeros(3, 8, dtype=torch.int8, device=DEVICE)
    with pytest.raises(ValueError, match=r"a_scale: expected shape \(4, 1\), got \(4,\)"):
        kern.int8_linear_rescale(a, s[:, 0], w, w_s)
    with pytest.raises(ValueError, match=r"w_scale: expected shape \(3\), got \(4,\)"):
        kern.int8_linear_rescale(a, s, w, torch.ones(4, device=DEVICE))
    with pytest.raises(ValueError, match=r"a_scale: expected dtype .*float32.*, got int32"):
        kern.int8_linear_rescale(a, s.int(), w, w_s)
    with pytest.raises(ValueError, match=r"bias: expected shape \(3\), got \(2,\)"):
        kern.int8_linear_rescale(a, s, w, w_s, torch.ones(2, device=DEVICE))
