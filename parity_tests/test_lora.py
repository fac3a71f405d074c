"""LoRA: reference == fast (output, dx, dA, dB), finite differences, merge/unmerge, the module."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from myllm101.fast import lora as fast
from myllm101.reference import lora as ref
from parity_tests.helpers import (
    TOL,
    assert_close,
    check_finite_differences,
    dtypes,
    rng_array,
    seeds,
    to_torch,
)


def assert_close_sums(got, want, dtype, name):
    """TOL, with atol scaled by the largest |value|: each entry is a sum whose rounding error
    follows its largest terms, not the (possibly cancelled, near-zero) result."""
    tol = TOL[dtype]
    scale = max(1.0, float(np.abs(want).max(initial=0)))
    assert_close(got, want, rtol=tol["rtol"], atol=tol["atol"] * scale, name=name)


lead_shapes = st.lists(st.integers(1, 6), min_size=1, max_size=2)


def make_inputs(rng, lead, d_in, d_out, r, dtype, bias=True):
    x = rng_array(rng, (*lead, d_in), dtype)
    w = rng_array(rng, (d_out, d_in), dtype)
    b = rng_array(rng, (d_out,), dtype) if bias else None
    A = rng_array(rng, (r, d_in), dtype)
    B = rng_array(rng, (d_out, r), dtype)  # nonzero: a zero B would hide every bug in dA
    return x, w, b, A, B


@given(
    lead=lead_shapes,
    d_in=st.integers(1, 23),
    d_out=st.integers(1, 23),
    r=st.integers(1, 5),
    alpha=st.floats(0.5, 32.0),
    bias=st.booleans(),
    dtype=dtypes,
    seed=seeds,
)
def test_forward_backward_match_torch(lead, d_in, d_out, r, alpha, bias, dtype, seed):
    rng = np.random.default_rng(seed)
    x, w, b, A, B = make_inputs(rng, lead, d_in, d_out, r, dtype, bias)
    dy = rng_array(rng, (*lead, d_out), dtype)

    y, cache = ref.lora_linear_forward(x, w, b, A, B, alpha)
    dx, dA, dB = ref.lora_linear_backward(dy, cache)

    xt, At, Bt = to_torch(x, True), to_torch(A, True), to_torch(B, True)
    wt, bt = to_torch(w), None if b is None else to_torch(b)
    yt = fast.lora_linear(xt, wt, bt, At, Bt, alpha)
    dxt, dAt, dBt = torch.autograd.grad(yt, (xt, At, Bt), to_torch(dy))

    for name, want, got in (("y", y, yt), ("dx", dx, dxt), ("dA", dA, dAt), ("dB", dB, dBt)):
        assert_close_sums(got, want, dtype, name)


@given(seed=seeds, bias=st.booleans())
def test_finite_differences(seed, bias):
    rng = np.random.default_rng(seed)
    x, w, b, A, B = make_inputs(rng, (2, 3), 5, 4, 3, "float64", bias)
    dy = rng_array(rng, (2, 3, 4))
    alpha = 6.0
    _, cache = ref.lora_linear_forward(x, w, b, A, B, alpha)
    dx, dA, dB = ref.lora_linear_backward(dy, cache)
    check_finite_differences(
        lambda: ref.lora_linear_forward(x, w, b, A, B, alpha)[0],
        {"x": x, "A": A, "B": B},
        {"x": dx, "A": dA, "B": dB},
        dy,
    )


@given(
    d_in=st.integers(1, 17), d_out=st.integers(1, 17), r=st.integers(1, 6), dtype=dtypes, seed=seeds
)
def test_merge_matches_torch_and_forward(d_in, d_out, r, dtype, seed):
    rng = np.random.default_rng(seed)
    x, w, b, A, B = make_inputs(rng, (3,), d_in, d_out, r, dtype)
    alpha = 8.0
    merged = ref.lora_merge(w, A, B, alpha)
    fast_merged = fast.lora_merge(to_torch(w), to_torch(A), to_torch(B), alpha)
    assert_close_sums(fast_merged, merged, dtype, "W'")
    # the merged weight computes the same layer as the adapter (exactly, up to rounding)
    y_adapter, _ = ref.lora_linear_forward(x, w, b, A, B, alpha)
    assert_close_sums(x @ merged.T + b, y_adapter, dtype, "merged y")


def test_merge_then_unmerge_restores_weight():
    rng = np.random.default_rng(0)
    w, A, B = rng_array(rng, (33, 17)), rng_array(rng, (4, 17)), rng_array(rng, (33, 4))
    # W + s BA - s BA: two roundings of values ~|W| + |s BA| (~10 here) -> a few 1e-15 absolute
    restored = ref.lora_unmerge(ref.lora_merge(w, A, B, 16.0), A, B, 16.0)
    assert_close(restored, w, rtol=0, atol=1e-12, name="ref W")
    assert not np.array_equal(ref.lora_merge(w, A, B, 16.0), w)  # the merge did change W
    wt = to_torch(w)
    back = fast.lora_unmerge(
        fast.lora_merge(wt, to_torch(A), to_torch(B), 16.0), to_torch(A), to_torch(B), 16.0
    )
    assert_close(back, w, rtol=0, atol=1e-12, name="fast W")


def trained_module(d_in=13, d_out=9, r=4, alpha=8.0, dropout=0.0, dtype=torch.float64):
    torch.manual_seed(0)
    base = torch.nn.Linear(d_in, d_out, dtype=dtype)
    m = fast.LoRALinear(base, r=r, alpha=alpha, dropout=dropout)
    with torch.no_grad():
        m.lora_B.normal_()  # pretend it was trained (a fresh B is zero)
    return base, m


def test_module_wraps_linear():
    base = torch.nn.Linear(13, 9, dtype=torch.float64)
    w_before = base.weight.detach().clone()
    m = fast.LoRALinear(base, r=4, alpha=8.0)
    # base frozen and shared, adapter trainable with the paper's init
    assert not base.weight.requires_grad and not base.bias.requires_grad
    assert m.weight is base.weight
    assert [n for n, p in m.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]
    assert m.lora_A.shape == (4, 13) and m.lora_B.shape == (9, 4)
    assert torch.all(m.lora_B == 0) and m.lora_A.abs().sum() > 0
    bound = 1 / np.sqrt(13)  # kaiming_uniform(a=sqrt(5)) on fan_in=13: U(-1/sqrt(fan_in), +)
    assert m.lora_A.abs().max() <= bound
    x = torch.randn(5, 13, dtype=torch.float64)
    assert torch.equal(m(x), base(x))  # B = 0: the adapter starts as the identity change
    assert torch.equal(base.weight, w_before)
    # gradient reaches only the adapter
    m(x).sum().backward()
    assert base.weight.grad is None and m.lora_A.grad is not None and m.lora_B.grad is not None


def test_module_matches_reference_and_merges():
    base, m = trained_module()
    x = np.random.default_rng(1).standard_normal((2, 5, 13))
    y_ref, _ = ref.lora_linear_forward(
        x, *(as_np(t) for t in (m.weight, m.bias, m.lora_A, m.lora_B)), m.alpha
    )
    xt = torch.from_numpy(x)
    y_unmerged = m(xt)
    assert_close(y_unmerged, y_ref, name="module y", **TOL["float64"])
    w0 = m.weight.detach().clone()
    m.merge()
    assert m.merged and not torch.equal(m.weight, w0)
    assert_close(m(xt), y_unmerged, name="merged forward", **TOL["float64"])
    m.merge()  # idempotent: merging twice must not add the update twice
    assert_close(m(xt), y_unmerged, name="merged twice", **TOL["float64"])
    m.unmerge()
    assert not m.merged
    assert_close(m.weight, w0, rtol=0, atol=1e-12, name="unmerged W")
    assert_close(m(xt), y_unmerged, name="unmerged forward", **TOL["float64"])


def test_dropout_only_in_train_mode():
    _, m = trained_module(dropout=0.5)
    x = torch.randn(64, 13, dtype=torch.float64)
    m.eval()
    y_eval = m(x)
    m.train()
    assert not torch.allclose(m(x), y_eval)  # dropout on the adapter input changes the output
    m.eval()
    m.merge()
    assert_close(m(x), y_eval, name="merged eval", **TOL["float64"])


def test_bf16_autocast():
    # bf16 keeps 8 mantissa bits (relative step 2**-8); a 13-term dot product in bf16 with fp32
    # accumulation lands within a few bf16 steps of the fp32 result
    _, m = trained_module(dtype=torch.float32)
    x = torch.randn(4, 13)
    exact = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = m(x)
    assert got.dtype == torch.bfloat16
    scale = exact.abs().max().item()
    assert_close(got.float(), exact, rtol=2**-6, atol=2**-6 * scale, name="bf16 y")


def as_np(t):
    return t.detach().numpy()


def test_bad_input():
    x, w, b = np.ones((2, 4)), np.ones((3, 4)), np.ones(3)
    A, B = np.ones((2, 4)), np.ones((3, 2))
    with pytest.raises(ValueError, match=r"r \(rows of A\): expected a positive value, got 0"):
        ref.lora_linear_forward(x, w, b, np.ones((0, 4)), np.ones((3, 0)), 1.0)
    with pytest.raises(ValueError, match=r"r \(rows of A\): expected a positive value, got 0"):
        fast.lora_merge(torch.ones(3, 4), torch.ones(0, 4), torch.ones(3, 0), 1.0)
    with pytest.raises(ValueError, match=r"A: expected shape \(2, 4\), got \(2, 5\)"):
        ref.lora_linear_forward(x, w, b, np.ones((2, 5)), B, 1.0)
    with pytest.raises(ValueError, match=r"B: expected shape \(3, 2\), got \(3, 3\)"):
        ref.lora_merge(w, A, np.ones((3, 3)), 1.0)
    with pytest.raises(ValueError, match=r"B: expected shape \(3, 2\), got \(2, 3\)"):
        ref.lora_unmerge(w, A, np.ones((2, 3)), 1.0)
    with pytest.raises(ValueError, match=r"B: expected shape \(3, 2\), got \(2, 3\)"):
        fast.lora_linear(
            torch.ones(2, 4), torch.ones(3, 4), None, torch.ones(2, 4), torch.ones(2, 3), 1.0
        )
    with pytest.raises(ValueError, match=r"x: expected size 4 in axis -1 .*, got shape \(2, 5\)"):
        ref.lora_linear_forward(np.ones((2, 5)), w, b, A, B, 1.0)
    with pytest.raises(ValueError, match=r"x: expected size 4 in axis -1 .*, got shape \(2, 5\)"):
        fast.lora_linear(
            torch.ones(2, 5), torch.ones(3, 4), None, torch.ones(2, 4), torch.ones(3, 2), 1.0
        )
    with pytest.raises(ValueError, match="A: expected dtype float64, got float32"):
        ref.lora_linear_forward(x, w, b, A.astype(np.float32), B, 1.0)
    # both trees run the same checks (myllm101.checks), x's dtype included
    with pytest.raises(ValueError, match="x: expected dtype float64, got float32"):
        ref.lora_linear_forward(x.astype(np.float32), w, b, A, B, 1.0)
    with pytest.raises(ValueError, match="x: expected dtype float64, got float32"):
        fast.lora_linear(*(to_torch(a) for a in (x.astype(np.float32), w, b, A, B)), 1.0)
    with pytest.raises(ValueError, match=r"b: expected shape \(3\), got \(4,\)"):
        ref.lora_linear_forward(x, w, np.ones(4), A, B, 1.0)
    _, cache = ref.lora_linear_forward(x, w, b, A, B, 1.0)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 3\), got \(3, 2\)"):
        ref.lora_linear_backward(np.ones((3, 2)), cache)
    with pytest.raises(ValueError, match="r: expected a positive value, got 0"):
        fast.LoRALinear(torch.nn.Linear(4, 3), r=0, alpha=1.0)
    with pytest.raises(ValueError, match=r"dropout: expected a value in \[0.0, 1.0\), got 1.5"):
        fast.LoRALinear(torch.nn.Linear(4, 3), r=2, alpha=1.0, dropout=1.5)
