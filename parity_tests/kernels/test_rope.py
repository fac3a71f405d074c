"""RoPE kernel == reference (float64 NumPy) == fast (eager PyTorch): forward and backward, with
(T, D) tables and per-row (B, 1, T, D) ones."""

import numpy as np
import pytest
import torch

from myllm101.fast import rope as fast
from myllm101.reference import rope as ref
from parity_tests.helpers import assert_close, rng_array
from parity_tests.kernels import DEVICE, assert_within_2x_eager, requires_kernels

pytestmark = requires_kernels
kern = pytest.importorskip("myllm101.kernels.rope")

# one multiply-add of O(1) float32 values per element: ~2 roundings of 6e-8; 1e-6 is strict
F32 = dict(rtol=1e-6, atol=1e-6)
SHAPES = [(1, 1, 1, 2), (2, 3, 5, 6), (1, 2, 33, 10), (1, 1, 123, 64), (2, 1, 7, 18)]


def _tables(T, D, random_tables=False, seed=0):
    if random_tables:  # any (T, D) tables: the kernel uses all four half-tables, like the reference
        rng = np.random.default_rng(seed)
        return rng_array(rng, (T, D)), rng_array(rng, (T, D))
    return ref.rope_frequencies(D, T, offset=3)


def _kernel(x, cos, sin, dy, dtype, transposed=False):
    xt = torch.tensor(x, dtype=dtype, device=DEVICE)
    if transposed:  # a (B, T, H, D) buffer viewed as (B, H, T, D), as after a q projection
        xt = xt.transpose(1, 2).contiguous().transpose(1, 2)
    xt.requires_grad_(True)
    c = torch.tensor(cos, dtype=dtype, device=DEVICE)
    s = torch.tensor(sin, dtype=dtype, device=DEVICE)
    y = kern.apply_rope(xt, c, s)
    (dx,) = torch.autograd.grad(y, xt, torch.tensor(dy, dtype=dtype, device=DEVICE))
    return y, dx


@pytest.mark.parametrize("random_tables", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_float32_matches_reference_and_fast(shape, random_tables):
    B, H, T, D = shape
    rng = np.random.default_rng(1)
    x, dy = rng_array(rng, shape), rng_array(rng, shape)
    cos, sin = _tables(T, D, random_tables)
    y_ref, cache = ref.rope_forward(x, cos, sin)
    dx_ref = ref.rope_backward(dy, cache)
    y, dx = _kernel(x, cos, sin, dy, torch.float32, transposed=B * H > 1)
    assert y.dtype == dx.dtype == torch.float32
    assert_close(y, y_ref, name="y vs reference", **F32)
    assert_close(dx, dx_ref, name="dx vs reference", **F32)

    xf = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    c32, s32 = torch.tensor(cos, dtype=torch.float32), torch.tensor(sin, dtype=torch.float32)
    yf = fast.apply_rope(xf, c32, s32, kernels="off")
    (dxf,) = torch.autograd.grad(yf, xf, torch.tensor(dy, dtype=torch.float32))
    assert_close(y, yf, name="y vs fast", **F32)
    assert_close(dx, dxf, name="dx vs fast", **F32)


def test_backward_is_rotation_by_minus_theta():
    # with real tables, backward(forward(x)) == x: the rotation by -theta undoes the one by theta
    B, H, T, D = 2, 3, 9, 12
    x = torch.randn(B, H, T, D, dtype=torch.float32, device=DEVICE)
    cos, sin = fast.rope_frequencies(D, T, device=DEVICE)
    y = kern.apply_rope(x, cos, sin)
    back = torch.empty_like(y)
    kern._launch(y, back, cos, sin, backward=True)
    assert_close(back, x, name="R(-theta) R(theta) x", rtol=1e-5, atol=1e-6)


def test_per_row_tables_match_reference_row_by_row():
    # (B, 1, T, D) tables: each batch row has its own positions (a left-padded batch)
    B, H, T, D = 3, 2, 7, 10
    rng = np.random.default_rng(3)
    x, dy = rng_array(rng, (B, H, T, D)), rng_array(rng, (B, H, T, D))
    positions = [[0, 1, 2, 3, 4, 5, 6], [0, 0, 0, 1, 2, 3, 4], [9, 10, 11, 12, 13, 14, 15]]
    cos_all, sin_all = ref.rope_frequencies(D, 16)
    cos, sin = cos_all[positions][:, None], sin_all[positions][:, None]  # (B, 1, T, D)
    y, dx = _kernel(x, cos, sin, dy, torch.float32, transposed=True)
    for b in range(B):
        y_ref, cache = ref.rope_forward(x[b : b + 1], cos[b, 0], sin[b, 0])
        assert_close(y[b : b + 1], y_ref, name=f"y row {b} vs reference", **F32)
        dx_ref = ref.rope_backward(dy[b : b + 1], cache)
        assert_close(dx[b : b + 1], dx_ref, name=f"dx row {b} vs reference", **F32)
    xf = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    c32, s32 = torch.tensor(cos, dtype=torch.float32), torch.tensor(sin, dtype=torch.float32)
    yf = fast.apply_rope(xf, c32, s32, kernels="off")
    (dxf,) = torch.autograd.grad(yf, xf, torch.tensor(dy, dtype=torch.float32))
    assert_close(y, yf, name="y vs fast", **F32)
    assert_close(dx, dxf, name="dx vs fast", **F32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_within_2x_eager(dtype):
    B, H, T, D = 2, 3, 33, 18
    rng = np.random.default_rng(2)
    cos64, sin64 = ref.rope_frequencies(D, T)
    # inputs rounded to the low dtype first, so only the op's own error is measured
    x, dy, cos, sin = (
        torch.tensor(a).to(dtype).double().numpy()
        for a in (rng_array(rng, (B, H, T, D)), rng_array(rng, (B, H, T, D)), cos64, sin64)
    )
    y_ref, cache = ref.rope_forward(x, cos, sin)
    dx_ref = ref.rope_backward(dy, cache)
    y, dx = _kernel(x, cos, sin, dy, dtype)
    assert y.dtype == dx.dtype == dtype
    xe = torch.tensor(x, dtype=dtype, requires_grad=True)
    ye = fast.apply_rope(xe, torch.tensor(cos, dtype=dtype), torch.tensor(sin, dtype=dtype), "off")
    (dxe,) = torch.autograd.grad(ye, xe, torch.tensor(dy, dtype=dtype))
    assert_within_2x_eager(y, ye, y_ref, "y")
    assert_within_2x_eager(dx, dxe, dx_ref, "dx")


def test_fast_dispatch_on_runs_the_kernel(monkeypatch):
    calls = []
    real = kern.apply_rope
    monkeypatch.setattr(kern, "apply_rope", lambda *a: calls.append(1) or real(*a))
    rot = fast.RotaryEmbedding(10, 40, kernels="on").to(DEVICE)
    q = torch.randn(1, 4, 7, 10, device=DEVICE)
    k = torch.randn(1, 2, 7, 10, device=DEVICE)
    qk, kk = rot(q, k, offset=5)
    assert calls == [1, 1]
    rot.kernels = "off"
    qe, ke = rot(q, k, offset=5)
    assert calls == [1, 1]
    assert_close(qk, qe, name="q kernel vs eager", **F32)
    assert_close(kk, ke, name="k kernel vs eager", **F32)
    # positions per row (left padding) take the same one path: the kernel, with gathered tables
    rot.kernels = "on"
    pos = torch.tensor([[0, 0, 0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10, 11]], device=DEVICE)
    q2, k2 = torch.randn(2, 4, 7, 10, device=DEVICE), torch.randn(2, 2, 7, 10, device=DEVICE)
    qk, kk = rot(q2, k2, position_ids=pos)
    assert calls == [1, 1, 1, 1]
    rot.kernels = "off"
    qe, ke = rot(q2, k2, position_ids=pos)
    assert_close(qk, qe, name="q kernel vs eager, position_ids", **F32)
    assert_close(kk, ke, name="k kernel vs eager, position_ids", **F32)


def test_bad_input():
    x = torch.zeros(1, 2, 3, 4, device=DEVICE)
    cos, sin = fast.rope_frequencies(4, 3, device=DEVICE)
    with pytest.raises(ValueError, match=r"x: expected dtype .*float32, got float64"):
        kern.apply_rope(x.double(), cos, sin)
    with pytest.raises(ValueError, match=r"x: expected a 4-D array, got shape \(2, 3, 4\)"):
        kern.apply_rope(x[0], cos, sin)
    with pytest.raises(ValueError, match=r"head_dim: expected an even size .*, got 3"):
        kern.apply_rope(x[..., :3], cos[:, :3], sin[:, :3])
    with pytest.raises(ValueError, match=r"cos: expected shape \(3, 4\), got \(2, 4\)"):
        kern.apply_rope(x, cos[:2], sin[:2])
    with pytest.raises(ValueError, match=r"cos: expected shape \(1, 1, 3, 4\), got \(2, 1, 3, 4\)"):
        kern.apply_rope(x, cos.expand(2, 1, 3, 4), sin.expand(2, 1, 3, 4))
    with pytest.raises(ValueError, match=r"cos and sin must have the same shape"):
        kern.apply_rope(x, cos, sin[:, None])
