"""Cross-entropy: reference == fast == torch's F.cross_entropy (loss and dlogits) with ignore_index,
label smoothing and both reductions; the all-ignored rule; reference backward == finite
differences."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from myllm101.fast import loss as fast
from myllm101.fast.blocks import causal_lm_loss
from myllm101.reference import loss as ref
from parity_tests.helpers import (
    TOL,
    UNIT_ROUNDOFF,
    assert_close,
    assert_within,
    check_finite_differences,
    dtypes,
    rng_array,
    seeds,
    softmax_error_terms,
    sum_error,
    to_torch,
)

IGNORE = -100


def random_targets(rng, shape, V, p_ignore, ignore_index=IGNORE):
    t = rng.integers(0, V, shape)
    return np.where(rng.random(shape) < p_ignore, ignore_index, t)


@given(
    lead=st.lists(st.integers(1, 7), min_size=0, max_size=2),
    V=st.integers(1, 40),
    p_ignore=st.sampled_from([0.0, 0.3, 1.0]),
    label_smoothing=st.sampled_from([0.0, 0.1, 0.37]),
    reduction=st.sampled_from(["mean", "sum"]),
    dtype=dtypes,
    seed=seeds,
)
def test_matches_fast_and_torch(lead, V, p_ignore, label_smoothing, reduction, dtype, seed):
    rng = np.random.default_rng(seed)
    logits = rng_array(rng, (*lead, V), dtype, scale=3.0)
    targets = random_targets(rng, tuple(lead), V, p_ignore)
    dloss = np.asarray(rng.standard_normal(), dtype=dtype)
    kw = dict(ignore_index=IGNORE, label_smoothing=label_smoothing, reduction=reduction)

    loss, cache = ref.cross_entropy_forward(logits, targets, **kw)
    dlogits = ref.cross_entropy_backward(dloss, cache)
    assert loss.shape == () and loss.dtype == dlogits.dtype == np.dtype(dtype)
    assert dlogits.shape == logits.shape

    lt, tt = to_torch(logits, True), to_torch(targets)
    tol = TOL[dtype]
    # the oracle: torch's own cross-entropy (it wants (N, V) rows for 0-d targets too)
    oracle = F.cross_entropy(lt.reshape(-1, V), tt.reshape(-1), **kw)
    (d_oracle,) = torch.autograd.grad(oracle, lt, to_torch(dloss))
    if reduction == "mean" and not np.any(targets != IGNORE):
        assert torch.isnan(oracle)  # torch: 0 / 0; ours: 0 and a zero gradient (documented)
        oracle, d_oracle = torch.zeros(()), torch.zeros_like(lt)
    assert_close(loss, oracle, name="loss vs F.cross_entropy", **tol)
    assert_close(dlogits, d_oracle, name="dlogits vs F.cross_entropy", **tol)

    lt = to_torch(logits, True)
    got = fast.cross_entropy(lt, tt, **kw)
    (dgot,) = torch.autograd.grad(got, lt, to_torch(dloss))
    assert got.dtype == lt.dtype
    assert_close(loss, got, name="loss vs fast", **tol)
    assert_close(dlogits, dgot, name="dlogits vs fast", **tol)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_realistic_size(dtype, label_smoothing):
    # 2 x 32 positions over GPT-2's 50257-token vocabulary, logits of spread ~3, a few targets
    # ignored. The loss (~15) is a mean of log-sum-exps: TOL. dlogits = (p - q) / N has entries
    # ~1e-6, far under TOL's atol: each gets its own bound by the rules in helpers.py, p's error
    # (softmax_error_terms) plus the roundings of p - q and of the 1/N scaling on each side.
    # With label smoothing torch's backward also sums V equal terms eps / V (to get 1 - (1 - eps)
    # back); equal terms round alike, so that sum errs by up to u * V * eps (the worst case in
    # helpers.py), and dlogits by p times that: measured 7e-5 relative at p ~ 0.1 in float32.
    rng = np.random.default_rng(0)
    V = 50257
    logits = rng_array(rng, (2, 32, V), dtype, scale=3.0)
    targets = random_targets(rng, (2, 32), V, p_ignore=0.1)
    kw = dict(ignore_index=IGNORE, label_smoothing=label_smoothing, reduction="mean")
    loss, cache = ref.cross_entropy_forward(logits, targets, **kw)
    dlogits = ref.cross_entropy_backward(np.asarray(1.0, dtype=dtype), cache)
    lt = to_torch(logits, True)
    got = fast.cross_entropy(lt, to_torch(targets), **kw)
    (dgot,) = torch.autograd.grad(got, lt)
    assert_close(loss, got, name="loss", **TOL[dtype])

    u, kept = UNIT_ROUNDOFF[dtype], targets != IGNORE
    p, z, rel_sum = softmax_error_terms(logits, -1, dtype)
    q = np.full(logits.shape, label_smoothing / V)
    q[kept, targets[kept]] += 1 - label_smoothing
    est = (u * (np.abs(z) + 2) + rel_sum + u * V * label_smoothing) * p + 3 * u * (p + q)
    est = np.where(kept[..., None], est / kept.sum(), 0.0)  # ignored rows: exact zeros
    assert_within(dlogits, dgot, est, name="dlogits")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_all_targets_ignored_gives_zero_loss_and_gradient(reduction):
    logits = np.random.default_rng(0).standard_normal((4, 5))
    targets = np.full(4, 7)
    loss, cache = ref.cross_entropy_forward(logits, targets, ignore_index=7, reduction=reduction)
    assert loss == 0.0
    assert not np.any(ref.cross_entropy_backward(1.0, cache))
    lt = to_torch(logits, True)
    got = fast.cross_entropy(lt, to_torch(targets), ignore_index=7, reduction=reduction)
    got.backward()
    assert got.item() == 0.0 and not torch.any(lt.grad)


def test_huge_logits_are_stable():
    # log-sum-exp with the max taken out: exp never sees a positive argument
    logits = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4 + 2.0, -1e4], [3.0, 1e4, 1e4]])
    targets = np.array([2, 1, 0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, cache = ref.cross_entropy_forward(logits, targets, label_smoothing=0.1)
        dlogits = ref.cross_entropy_backward(1.0, cache)
    lt = to_torch(logits, True)
    oracle = F.cross_entropy(lt, to_torch(targets), label_smoothing=0.1)
    oracle.backward()
    assert np.isfinite(loss) and loss > 1e3
    assert_close(loss, oracle, name="loss", **TOL["float64"])
    assert_close(dlogits, lt.grad, name="dlogits", **TOL["float64"])


@pytest.mark.parametrize(
    "label_smoothing,reduction", [(0.0, "mean"), (0.2, "mean"), (0.2, "sum"), (1.0, "mean")]
)
@given(seed=seeds)
def test_finite_differences(label_smoothing, reduction, seed):
    rng = np.random.default_rng(seed)
    logits = rng_array(rng, (2, 3, 5), scale=2.0)
    targets = random_targets(rng, (2, 3), 5, 0.3)
    kw = dict(label_smoothing=label_smoothing, reduction=reduction)
    dloss = np.asarray(1.7)
    dlogits = ref.cross_entropy_backward(dloss, ref.cross_entropy_forward(logits, targets, **kw)[1])
    check_finite_differences(
        lambda: ref.cross_entropy_forward(logits, targets, **kw)[0],
        {"logits": logits},
        {"logits": dlogits},
        dloss,
    )


def test_int32_targets_module_bf16_and_compile():
    logits = torch.randn(2, 6, 11)
    targets = torch.randint(0, 11, (2, 6), dtype=torch.int32)
    targets[0, 2] = IGNORE
    expected = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1).long())
    loss_fn = fast.CrossEntropyLoss(label_smoothing=0.0)
    assert_close(loss_fn(logits, targets), expected, **TOL["float32"])
    # bf16 logits are upcast, so the only error is the input rounding (2**-9 relative per logit,
    # logits ~1): the loss is returned in float32 and stays within 1e-2 of the fp32 loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fast.cross_entropy(logits.bfloat16(), targets)
    assert got.dtype == torch.float32
    assert_close(got, expected, rtol=1e-2, atol=1e-2, name="bf16 loss")
    compiled = torch.compile(fast.cross_entropy, backend="aot_eager", fullgraph=True)
    assert_close(
        compiled(logits, targets, label_smoothing=0.1),
        fast.cross_entropy(logits, targets, label_smoothing=0.1),
        **TOL["float32"],
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("B,T,V", [(3, 7, 11), (2, 1, 5), (2, 33, 257)])
def test_causal_lm_loss_shifts_the_labels_not_the_logits(dtype, B, T, V):
    # the label shift (labels[:, 1:] padded with -100, loss over every position's logits) against
    # the logits shift it replaced (logits[:, :-1] against labels[:, 1:]), through the same
    # cross_entropy: each row's gradient is computed alone, so the gradients are equal bit for
    # bit (the last position's is 0); the loss sums the same terms with zeros between them,
    # which may only regroup the sum: within its rounding bound (S') over N terms, and the
    # ignored targets (-100, including a whole row) count on neither side
    rng = np.random.default_rng(T)
    logits = rng_array(rng, (B, T, V), dtype, scale=3.0)
    labels = random_targets(rng, (B, T), V, p_ignore=0.2)
    labels[-1] = IGNORE
    lt_new, lt_old, lab = to_torch(logits, True), to_torch(logits, True), to_torch(labels)
    new = causal_lm_loss(lt_new, lab)
    old = fast.cross_entropy(lt_old[:, :-1].reshape(-1, V), lab[:, 1:].reshape(-1))
    new.backward()
    old.backward()
    assert torch.equal(lt_new.grad[:, :-1], lt_old.grad[:, :-1])
    assert not torch.any(lt_new.grad[:, -1])
    kept = labels[:, 1:] != IGNORE
    nll = -torch.log_softmax(lt_old.detach()[:, :-1].double(), -1)
    terms = nll.gather(-1, lab[:, 1:].clamp(min=0)[..., None].long())[..., 0].numpy()[kept]
    bound = sum_error(terms.sum(), (terms**2).sum(), terms.size, dtype) / max(kept.sum(), 1)
    assert_within(new, old, 2 * bound, name="label-shift loss vs logits-shift loss")
    if kept.any():
        oracle = F.cross_entropy(lt_old.detach()[:, :-1].reshape(-1, V), lab[:, 1:].reshape(-1))
        assert_close(new, oracle, name="loss vs F.cross_entropy", **TOL[dtype])
    else:
        assert new.item() == 0.0  # T = 1: no position has a next token


def test_causal_lm_loss_neither_copies_nor_zero_fills_the_logits():
    # what the label shift is for: no op of forward + backward copies, fills or slices a tensor
    # the size of the logits (the old logits[:, :-1] did all three, 64 MB each at GPT's size)
    B, T, V = 2, 16, 4096
    logits = torch.randn(B, T, V, requires_grad=True)
    labels = torch.randint(0, V, (B, T))
    with torch.profiler.profile(record_shapes=True) as prof:
        causal_lm_loss(logits, labels).backward()
    big = [
        (e.name, e.input_shapes)
        for e in prof.events()
        if e.name in ("aten::copy_", "aten::fill_", "aten::zero_", "aten::slice_backward",
                      "aten::clone", "aten::contiguous")
        and any(int(np.prod(s)) >= B * (T - 1) * V for s in e.input_shapes if s)
    ]  # fmt: skip
    assert not big, big


def test_fused_backward_runs_once_per_graph_and_keeps_dtypes():
    # the eager backward writes the gradient over the saved log-probs: a second backward through
    # the same graph must fail loudly (autograd's in-place check), never return a wrong gradient
    logits = torch.randn(6, 9, requires_grad=True)
    targets = torch.tensor([0, 3, IGNORE, 8, 1, 1])
    loss = fast.cross_entropy(logits, targets)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    # bf16 logits: float32 loss, a bf16 gradient (the logits' dtype), close to the fp32 one
    lb = logits.detach().bfloat16().requires_grad_()
    got = fast.cross_entropy(lb, targets)
    got.backward()
    assert got.dtype == torch.float32 and lb.grad.dtype == torch.bfloat16
    lf = lb.detach().float().requires_grad_()
    F.cross_entropy(lf, targets).backward()
    assert_close(lb.grad.float(), lf.grad, rtol=2**-7, atol=1e-6, name="bf16 dlogits")


def test_bad_input():
    logits, targets = np.zeros((3, 5)), np.array([0, 4, IGNORE])
    lt, tt = torch.zeros(3, 5), torch.tensor([0, 4, IGNORE])
    for bad in (5, -1):
        msg = rf"targets: expected class indices in \[0, 5\) or ignore_index=-100, got {bad}"
        with pytest.raises(ValueError, match=msg):
            ref.cross_entropy_forward(logits, np.array([0, bad, IGNORE]))
        with pytest.raises(ValueError, match=msg):
            fast.cross_entropy(lt, torch.tensor([0, bad, IGNORE]))
    # -100 is only allowed while it is the ignore_index
    with pytest.raises(ValueError, match=r"ignore_index=3, got -100"):
        ref.cross_entropy_forward(logits, targets, ignore_index=3)
    with pytest.raises(ValueError, match=r"ignore_index=3, got -100"):
        fast.cross_entropy(lt, tt, ignore_index=3)
    for forward, lg, tg in (
        (ref.cross_entropy_forward, logits, targets),
        (fast.cross_entropy, lt, tt),
    ):
        with pytest.raises(ValueError, match=r"targets: expected shape \(3\), got \(3, 1\)"):
            forward(lg, tg.reshape(3, 1))
        with pytest.raises(ValueError, match="targets: expected dtype int8 or .*, got float"):
            forward(lg, tg * 1.0)
        with pytest.raises(ValueError, match="logits: expected dtype .*float32.*, got int64"):
            forward(tg.reshape(3, 1), tg)
        with pytest.raises(
            ValueError, match=r"logits: expected shape \(\.\.\., V\) with V >= 1, got \(3, 0\)"
        ):
            forward(lg[:, :0], tg)
        with pytest.raises(
            ValueError, match=r"label_smoothing: expected a value in \[0, 1\], got 1.5"
        ):
            forward(lg, tg, label_smoothing=1.5)
        with pytest.raises(ValueError, match="reduction: expected 'mean' or 'sum', got 'none'"):
            forward(lg, tg, reduction="none")
    with pytest.raises(ValueError, match="reduction: expected 'mean' or 'sum', got 'avg'"):
        fast.CrossEntropyLoss(reduction="avg")
    _, cache = ref.cross_entropy_forward(logits, targets)
    with pytest.raises(ValueError, match=r"dloss: expected shape \(\), got \(2,\)"):
        ref.cross_entropy_backward(np.ones(2), cache)
