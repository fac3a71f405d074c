"""RMSNorm kernel == reference (float64 NumPy) == fast (eager PyTorch): forward, dx and dweight."""

import numpy as np
import pytest
import torch

from myllm101.fast import rmsnorm as fast
from myllm101.reference import rmsnorm as ref
from parity_tests.helpers import assert_close, rng_array
from parity_tests.kernels import DEVICE, assert_within_2x_eager, requires_kernels

pytestmark = requires_kernels
kern = pytest.importorskip("myllm101.kernels.rmsnorm")

# float32 kernel vs float64 reference: the row reduction of C <= 123 squares and the dweight sum
# over <= 40 rows reorder ~1e-7 roundings of O(1) values, so 1e-5 leaves a wide, still-strict margin
F32 = dict(rtol=1e-5, atol=1e-5)
SHAPES = [(1, 1), (5, 33), (2, 3, 123), (7, 5), (4, 64), (3, 2, 100)]


def _case(shape, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    x = rng_array(rng, shape, scale=scale)  # float64
    w = rng_array(rng, shape[-1:]) + 1.0
    dy = rng_array(rng, shape)
    return x, w, dy


def _kernel(x, w, dy, dtype, eps=1e-6):
    xt = torch.tensor(x, dtype=dtype, device=DEVICE, requires_grad=True)
    wt = torch.tensor(w, dtype=dtype, device=DEVICE, requires_grad=True)
    y = kern.rmsnorm(xt, wt, eps)
    dx, dw = torch.autograd.grad(y, (xt, wt), torch.tensor(dy, dtype=dtype, device=DEVICE))
    return y, dx, dw


@pytest.mark.parametrize("shape", SHAPES)
def test_float32_matches_reference_and_fast(shape):
    x, w, dy = _case(shape)
    y_ref, cache = ref.rmsnorm_forward(x, w)
    dx_ref, dw_ref = ref.rmsnorm_backward(dy, cache)
    y, dx, dw = _kernel(x, w, dy, torch.float32)
    assert y.dtype == dx.dtype == dw.dtype == torch.float32
    assert_close(y, y_ref, name="y vs reference", **F32)
    assert_close(dx, dx_ref, name="dx vs reference", **F32)
    assert_close(dw, dw_ref, name="dweight vs reference", **F32)

    xf = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    wf = torch.tensor(w, dtype=torch.float32, requires_grad=True)
    yf = fast.rmsnorm(xf, wf, kernels="off")
    dxf, dwf = torch.autograd.grad(yf, (xf, wf), torch.tensor(dy, dtype=torch.float32))
    assert_close(y, yf, name="y vs fast", **F32)
    assert_close(dx, dxf, name="dx vs fast", **F32)
    assert_close(dw, dwf, name="dweight vs fast", **F32)


def test_large_and_tiny_rows_and_eps():
    # rows of very different scale: inv_rms must be per row, and eps must be inside the sqrt
    x, w, dy = _case((6, 37), seed=1)
    x = x * np.array([1e-3, 1e-1, 1, 10, 300, 0])[:, None]  # the last row is all zeros
    for eps in (1e-6, 1e-2):
        y_ref, cache = ref.rmsnorm_forward(x, w, eps)
        dx_ref, dw_ref = ref.rmsnorm_backward(dy, cache)
        y, dx, dw = _kernel(x, w, dy, torch.float32, eps)
        assert_close(y, y_ref, name=f"y eps={eps}", **F32)
        # dx scales like inv_rms (up to 1/sqrt(eps) = 1e3 on the zero row): relative bound there
        assert_close(dx, dx_ref, name=f"dx eps={eps}", rtol=1e-5, atol=1e-5 * np.abs(dx_ref).max())
        assert_close(dw, dw_ref, name=f"dweight eps={eps}", **F32)


def test_many_rows_use_several_backward_programs():
    # more rows than backward programs: checks the per-program partial sums of dweight add up
    x, w, dy = _case((97, 5), seed=2)
    y_ref, cache = ref.rmsnorm_forward(x, w)
    dx_ref, dw_ref = ref.rmsnorm_backward(dy, cache)
    y, dx, dw = _kernel(x, w, dy, torch.float32)
    assert_close(dx, dx_ref, name="dx", **F32)
    assert_close(dw, dw_ref, name="dweight (97-row sum)", rtol=1e-5, atol=5e-5)


def test_non_contiguous_input():
    x, w, dy = _case((33, 6), seed=3)
    xt = torch.tensor(x, dtype=torch.float32, device=DEVICE).t()  # (6, 33) with strides (1, 6)
    wt = torch.tensor(np.ones(33), dtype=torch.float32, device=DEVICE)
    y = kern.rmsnorm(xt, wt)
    y_ref, _ = ref.rmsnorm_forward(x.T.copy(), np.ones(33))
    assert_close(y, y_ref, name="y of a transposed view", **F32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(5, 33), (3, 123)])
def test_low_precision_within_2x_eager(dtype, shape):
    # kernel computes in float32 and rounds once; eager F.rms_norm also accumulates in float32.
    # Rule: kernel error <= 2x eager error, both against float64 on the same (rounded) inputs.
    x, w, dy = _case(shape, seed=4)
    # round the inputs to the low dtype first, so only the op's own error is measured
    x, w, dy = (torch.tensor(a).to(dtype).double().numpy() for a in (x, w, dy))
    y_ref, cache = ref.rmsnorm_forward(x, w)
    dx_ref, dw_ref = ref.rmsnorm_backward(dy, cache)
    y, dx, dw = _kernel(x, w, dy, dtype)
    assert y.dtype == dx.dtype == dw.dtype == dtype
    xe = torch.tensor(x, dtype=dtype, requires_grad=True)
    we = torch.tensor(w, dtype=dtype, requires_grad=True)
    ye = fast.rmsnorm(xe, we, kernels="off")
    dxe, dwe = torch.autograd.grad(ye, (xe, we), torch.tensor(dy, dtype=dtype))
    assert_within_2x_eager(y, ye, y_ref, "y")
    assert_within_2x_eager(dx, dxe, dx_ref, "dx")
    assert_within_2x_eager(dw, dwe, dw_ref, "dweight")


def test_fast_dispatch_on_runs_the_kernel(monkeypatch):
    calls = []
    real = kern.rmsnorm
    monkeypatch.setattr(kern, "rmsnorm", lambda *a: calls.append(1) or real(*a))
    x, w, _ = _case((5, 33), seed=5)
    norm = fast.RMSNorm(33, kernels="on").to(DEVICE)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor(w))
    y = norm(torch.tensor(x, dtype=torch.float32, device=DEVICE))
    assert calls == [1]
    assert_close(y, ref.rmsnorm_forward(x, w)[0], name="RMSNorm(kernels='on')", **F32)
    fast.rmsnorm(torch.tensor(x, device=DEVICE), torch.tensor(w, device=DEVICE), kernels="on")
    assert calls == [1], "float64 must stay on the eager path"


def test_bad_input():
    x = torch.zeros(2, 5, device=DEVICE)
    with pytest.raises(ValueError, match=r"x: expected dtype .*float32, got float64"):
        kern.rmsnorm(x.double(), torch.ones(5, device=DEVICE))
    with pytest.raises(ValueError, match=r"x: expected dtype .*float32, got int32"):
        kern.rmsnorm(x.int(), torch.ones(5, device=DEVICE))
    with pytest.raises(ValueError, match=r"weight: expected shape \(5\), got \(4,\)"):
        kern.rmsnorm(x, torch.ones(4, device=DEVICE))
    with pytest.raises(ValueError, match=r"eps: expected a positive value, got 0"):
        kern.rmsnorm(x, torch.ones(5, device=DEVICE), 0)
    with pytest.raises(ValueError, match=r"x: expected at least 1 dimension .*, got shape \(\)"):
        kern.rmsnorm(torch.tensor(1.0, device=DEVICE), torch.ones(1, device=DEVICE))
