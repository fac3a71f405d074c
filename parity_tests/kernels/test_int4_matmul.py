"""int4 dequantizing GEMM kernel == the float64 matmul of the dequantized weight (fp32 within its
summation rounding), == the eager fast path; bf16/fp16 within 2x eager's error."""

import numpy as np
import pytest
import torch

from myllm101.fast import int4 as fast
from myllm101.reference import int4 as ref
from parity_tests.helpers import assert_within, reduction_error
from parity_tests.kernels import DEVICE, assert_within_2x_eager, requires_kernels

pytestmark = requires_kernels
kern = pytest.importorskip("myllm101.kernels.int4_matmul")

# (M, N, K, g): tiny, odd M / N, several K blocks (K = 256: 2 blocks of 64 bytes), g = K
SHAPES = [(1, 1, 2, 2), (5, 7, 64, 32), (33, 17, 96, 32), (3, 130, 256, 64), (2, 48, 128, 128)]


def _case(M, N, K, g, seed, bias=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, K)).astype(np.float32)
    q, scale = ref.quantize_int4(rng.standard_normal((N, K)).astype(np.float32), g)
    b = rng.standard_normal(N).astype(np.float32) if bias else None
    return x, ref.pack_int4(q), scale, b


def _exact(x, packed, scale, g, b):
    """float64 y and the per-output sum error (helpers.reduction_error) of a float32 matmul whose
    terms x_k * w_k each carry one more rounding (the kernel forms w = q * s in float32)."""
    w = ref.dequantize_int4(packed, scale, g).astype(np.float64)  # (N, K)
    terms = x.astype(np.float64)[:, None, :] * w[None, :, :]  # (M, N, K)
    y = terms.sum(-1) + (0 if b is None else b.astype(np.float64))
    err = reduction_error(terms, -1, "float32", 2.0**-24 * np.abs(terms))
    return y, err + 2.0**-24 * np.abs(y)  # + the bias add


def t(v):
    return None if v is None else torch.from_numpy(np.asarray(v)).to(DEVICE)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("M,N,K,g", SHAPES)
def test_int4_linear_matches_dequantized_matmul(M, N, K, g, bias):
    x, packed, scale, b = _case(M, N, K, g, seed=M * 1000 + N + K, bias=bias)
    y = kern.int4_linear(t(x), t(packed), t(scale), g, t(b))
    assert y.dtype == torch.float32 and y.shape == (M, N)
    exact, err = _exact(x, packed, scale, g, b)
    assert_within(y.cpu().numpy(), exact, err, name="y vs float64")
    eager = fast.int4_linear(*(torch.from_numpy(v) for v in (x, packed, scale)), g, t(b), "off")
    assert_within(y.cpu().numpy(), eager.cpu().numpy(), 2 * err, name="y vs eager")


def test_strided_and_batched_input():
    x, packed, scale, b = _case(6, 20, 64, 32, seed=1)
    x3 = t(x).reshape(2, 3, 64)
    y = kern.int4_linear(x3, t(packed), t(scale), 32, t(b))
    assert y.shape == (2, 3, 20)
    exact, err = _exact(x, packed, scale, 32, b)
    assert_within(y.reshape(6, 20).cpu().numpy(), exact, err, name="3-D x")
    # a transposed view (strides (1, M)): the kernel reads strides, no copy needed
    xt = t(np.ascontiguousarray(x.T)).t()
    y = kern.int4_linear(xt, t(packed), t(scale), 32, t(b))
    assert_within(y.cpu().numpy(), exact, err, name="strided x")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_within_2x_eager(dtype):
    x, packed, scale, b = _case(33, 17, 96, 32, seed=3)
    xl, sl, bl = (torch.from_numpy(v).to(dtype) for v in (x, scale, b))
    y = kern.int4_linear(xl.to(DEVICE), t(packed), sl.to(DEVICE), 32, bl.to(DEVICE))
    assert y.dtype == dtype
    eager = fast.int4_linear(xl, torch.from_numpy(packed), sl, 32, bl, kernels="off")
    exact, _ = _exact(xl.double().numpy(), packed, sl.double().numpy(), 32, bl.double().numpy())
    assert_within_2x_eager(y, eager, exact, "y")


def test_fast_dispatch_on_runs_the_kernel(monkeypatch):
    calls = []
    real = kern.int4_linear
    monkeypatch.setattr(kern, "int4_linear", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(4)
    m = fast.Int4Linear.from_linear(torch.nn.Linear(64, 48), group_size=32).to(DEVICE)
    x = torch.randn(2, 3, 64, device=DEVICE)
    m.kernels = "on"
    with torch.no_grad():
        y = m(x)
    assert calls == [1] and y.shape == (2, 3, 48)
    m.kernels = "off"
    m.cpu()
    with torch.no_grad():
        y_eager = fast.int4_linear(x.cpu(), m.weight_packed, m.weight_scale, 32, m.bias, "off")
    assert torch.allclose(y.cpu(), y_eager, rtol=1e-5, atol=1e-5)
    # a gradient is needed: the eager (straight-through) path, not the kernel
    m.to(DEVICE).kernels = "on"
    m(x.requires_grad_()).sum().backward()
    assert calls == [1] and x.grad.shape == x.shape


def test_bad_input():
    packed = torch.zeros(3, 6, dtype=torch.uint8, device=DEVICE)
    scale = torch.ones(3, 2, device=DEVICE)
    x = torch.ones(2, 12, device=DEVICE)
    with pytest.raises(
        ValueError, match="x: expected dtype float16 or bfloat16 or float32, got float64"
    ):
        kern.int4_linear(x.double(), packed, scale, 6)
    with pytest.raises(ValueError, match="packed: expected dtype uint8, got int8"):
        kern.int4_linear(x, packed.to(torch.int8), scale, 6)
    with pytest.raises(ValueError, match=r"scale: expected shape \(3, 3\), got \(3, 2\)"):
        kern.int4_linear(x, packed, scale, 4)
    with pytest.raises(ValueError, match=r"group_size=5 must be .* in_features=12"):
        kern.int4_linear(x, packed, scale, 5)
    with pytest.raises(ValueError, match=r"x: expected size 12 in axis -1 .*, got shape \(2, 10\)"):
        kern.int4_linear(x[:, :10], packed, scale, 6)
    with pytest.raises(ValueError, match=r"bias: expected dtype .*, got float64"):
        kern.int4_linear(x, packed, scale, 6, torch.ones(3, dtype=torch.float64, device=DEVICE))
