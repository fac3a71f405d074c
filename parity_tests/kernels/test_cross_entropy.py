"""Fused cross-entropy kernel == reference (float64 NumPy) == fast (eager PyTorch): loss, dlogits.

ignore_index, label smoothing, both reductions, all-ignored rows (loss 0, zero gradient), leading
axes, vocabularies that span several chunks, bf16 by the 2x-eager rule, no (N, V) buffer saved for
backward, bad input and the fast-path dispatch.
"""

import numpy as np
import pytest
import torch

from myllm101.fast import loss as fast
from myllm101.reference import loss as ref
from parity_tests.helpers import assert_close, rng_array
from parity_tests.kernels import DEVICE, assert_within_2x_eager, requires_kernels

pytestmark = requires_kernels
kern = pytest.importorskip("myllm101.kernels.cross_entropy")

IGNORE = -100
# float32 kernel vs float64 reference: a log-sum-exp over <= 5000 logits of size ~3 and a mean of
# <= 21 row losses; fp32 rounding stays ~1e-6 relative, so 1e-5 keeps a 10x margin
F32 = dict(rtol=1e-5, atol=1e-5)

# (leading shape, V): V = 5000 spans two 4096-wide chunks of the online log-sum-exp
SHAPES = [((5,), 123), ((3, 7), 33), ((4,), 1), ((2,), 5000), ((), 17)]


def _targets(rng, lead, V, p_ignore):
    t = rng.integers(0, V, lead)
    return np.where(rng.random(lead) < p_ignore, IGNORE, t)


def _run(fn, logits, targets, dloss, dtype, dev, **kw):
    x = torch.tensor(logits, dtype=dtype, device=dev, requires_grad=True)
    loss = fn(x, torch.tensor(targets, device=dev), **kw)
    (dx,) = torch.autograd.grad(loss, x, torch.tensor(dloss, dtype=loss.dtype, device=dev))
    return loss, dx


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize(
    "smoothing, reduction, p_ignore", [(0.0, "mean", 0.0), (0.1, "mean", 0.4), (0.37, "sum", 0.4)]
)
def test_float32_matches_reference_and_fast(shape, smoothing, reduction, p_ignore):
    lead, V = shape
    rng = np.random.default_rng(V + len(lead))
    logits = rng_array(rng, (*lead, V), scale=3.0)
    targets = _targets(rng, lead, V, p_ignore)
    kw = dict(ignore_index=IGNORE, label_smoothing=smoothing, reduction=reduction)
    loss_ref, cache = ref.cross_entropy_forward(logits, targets, **kw)
    dx_ref = ref.cross_entropy_backward(0.7, cache)

    loss, dx = _run(kern.cross_entropy, logits, targets, 0.7, torch.float32, DEVICE, **kw)
    assert loss.shape == () and loss.dtype == dx.dtype == torch.float32
    assert_close(loss, loss_ref, name="loss vs reference", **F32)
    assert_close(dx, dx_ref, name="dlogits vs reference", **F32)

    loss_f, dx_f = _run(fast.cross_entropy, logits, targets, 0.7, torch.float32, "cpu", **kw)
    assert_close(loss, loss_f, name="loss vs fast", **F32)
    assert_close(dx, dx_f, name="dlogits vs fast", **F32)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_all_targets_ignored_gives_zero_loss_and_gradient(reduction):
    logits = np.random.default_rng(0).standard_normal((4, 5))
    targets = np.full(4, 7)
    loss, dx = _run(
        kern.cross_entropy, logits, targets, 1.0, torch.float32, DEVICE,
        ignore_index=7, reduction=reduction,
    )  # fmt: skip
    assert loss.item() == 0.0 and not torch.isnan(loss)
    assert not dx.any()


@pytest.mark.parametrize("shift", [200.0, -200.0])
def test_large_logits_across_chunks_stay_finite(shift):
    # the two 4096-wide chunks sit ~400 apart: exp of that overflows fp32 unless the running max
    # is carried across chunks (online log-sum-exp) instead of restarted per chunk
    rng = np.random.default_rng(4)
    logits = rng_array(rng, (4, 5000))
    logits[:, :4096] += shift
    logits[:, 4096:] -= shift
    targets = np.array([0, 4095, 4096, 4999])
    loss_ref, cache = ref.cross_entropy_forward(logits, targets, label_smoothing=0.1)
    dx_ref = ref.cross_entropy_backward(1.0, cache)
    loss, dx = _run(
        kern.cross_entropy, logits, targets, 1.0, torch.float32, DEVICE, label_smoothing=0.1
    )
    assert_close(loss, loss_ref, name="loss", **F32)
    assert_close(dx, dx_ref, name="dlogits", **F32)


def test_no_full_size_buffer_is_saved_for_backward():
    # only the logits themselves (which autograd holds anyway) and per-row vectors may be saved
    N, V = 6, 300
    x = torch.randn(N, V, device=DEVICE, requires_grad=True)
    t = torch.randint(0, V, (N,), device=DEVICE)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda s: saved.append(s) or s, lambda s: s):
        loss = kern.cross_entropy(x, t)
    big = [s for s in saved if s.numel() >= N * V]
    assert all(s.data_ptr() == x.data_ptr() for s in big), [tuple(s.shape) for s in big]
    assert all(s.numel() <= N for s in saved if s.data_ptr() != x.data_ptr())
    loss.backward()  # and the backward still works from lse alone
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_bfloat16_within_2x_of_eager(smoothing):
    # "exact" = the float64 reference on the same bf16-rounded logits; the loss is float32 for
    # bf16 logits (as in fast.loss), the gradient bf16
    rng = np.random.default_rng(2)
    logits = torch.tensor(rng_array(rng, (9, 257), scale=3.0)).bfloat16().double().numpy()
    targets = _targets(rng, (9,), 257, 0.2)
    kw = dict(ignore_index=IGNORE, label_smoothing=smoothing)
    loss_x, cache = ref.cross_entropy_forward(logits, targets, **kw)
    dx_x = ref.cross_entropy_backward(1.0, cache)
    loss, dx = _run(kern.cross_entropy, logits, targets, 1.0, torch.bfloat16, DEVICE, **kw)
    loss_e, dx_e = _run(fast.cross_entropy, logits, targets, 1.0, torch.bfloat16, "cpu", **kw)
    assert loss.dtype == torch.float32 and dx.dtype == torch.bfloat16
    # eager upcasts to fp32 too, so both losses are fp32-exact: the floor is fp32's, not bf16's
    assert_within_2x_eager(loss, loss_e, loss_x, name="bf16 loss", floor=1e-5)
    assert_within_2x_eager(dx, dx_e, dx_x, name="bf16 dlogits", floor=1e-4)


def test_bad_input_names_expected_and_given():
    x = torch.zeros(3, 5, device=DEVICE)
    t = torch.zeros(3, dtype=torch.long, device=DEVICE)
    with pytest.raises(
        ValueError, match="logits: expected dtype float16 or bfloat16 or float32, got float64"
    ):
        kern.cross_entropy(x.double(), t)
    with pytest.raises(ValueError, match=r"targets: expected shape \(3\), got \(4,\)"):
        kern.cross_entropy(x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"targets: expected class indices in \[0, 5\) .* got 5"):
        kern.cross_entropy(x, torch.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match="targets: expected dtype int8 or .*, got float32"):
        kern.cross_entropy(x, t.float())
    with pytest.raises(
        ValueError, match="label_smoothing: expected a value in \\[0, 1\\], got 1.5"
    ):
        kern.cross_entropy(x, t, label_smoothing=1.5)


def test_fast_dispatches_to_the_kernel(monkeypatch):
    calls = []
    real = kern.cross_entropy

    def spy(*args, **kw):
        calls.append(args[0].shape)
        return real(*args, **kw)

    monkeypatch.setattr(kern, "cross_entropy", spy)
    x = torch.randn(2, 3, 11, device=DEVICE)
    t = torch.randint(0, 11, (2, 3), device=DEVICE)
    on = fast.cross_entropy(x, t, label_smoothing=0.2, kernels="on")
    assert len(calls) == 1
    off = fast.cross_entropy(x, t, label_smoothing=0.2, kernels="off")
    assert len(calls) == 1
    assert_close(on, off, name="fast on vs off", **F32)
    fast.cross_entropy(x.double(), t, kernels="on")
    assert len(calls) == 1  # float64 is not a kernel dtype: eager even with "on"
    monkeypatch.setenv("MYLLM101_KERNELS", "on")
    fast.cross_entropy(x, t)
    assert len(calls) == 2
