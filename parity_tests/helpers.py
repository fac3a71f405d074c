"""Shared helpers for every parity test: one tolerance table, one assert, one finite-difference check,
and the rounding-error bounds that the normalization / reduction tests derive per element.

Tolerances (stated once, used everywhere):
- float64: rtol 1e-7 (both sides do the same math in exact IEEE double; only summation order differs)
- float32: rtol 1e-5, atol 1e-5 (reductions over a few hundred terms reorder roundings of ~6e-8)
Looser bounds (bf16, int8) are stated and justified in the test that uses them. Where an output
is a reduction over many rows, or depends on a cancellation, a flat rtol is either too loose or
wrong: those tests bound each element by its own rounding error instead (``sum_error`` and the
rules in the section "rounding-error bounds" below).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
from hypothesis import strategies as st

TOL = {
    "float64": dict(rtol=1e-7, atol=1e-10),
    "float32": dict(rtol=1e-5, atol=1e-5),
}
DTYPES = ("float64", "float32")
TORCH_DTYPE = {"float64": torch.float64, "float32": torch.float32}


def as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def assert_close(actual, expected, rtol: float, atol: float = 0.0, name: str = "value") -> None:
    """np.testing-style check that reports the worst element (index, both values, errors)."""
    a, e = as_numpy(actual), as_numpy(expected)
    assert a.shape == e.shape, f"{name}: shape {a.shape} != expected {e.shape}"
    if a.size == 0:
        return
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    err = np.abs(a64 - e64)
    bound = atol + rtol * np.abs(e64)
    excess = err - bound
    if not np.all(np.isfinite(a64) == np.isfinite(e64)) or np.any(excess > 0):
        i = np.unravel_index(np.nanargmax(np.where(np.isnan(excess), np.inf, excess)), a.shape)
        # per-element tolerances (arrays) are reported at the worst element
        tols = ", ".join(
            f"{k}={v}" if np.ndim(v) == 0 else f"{k}[worst]={np.broadcast_to(v, a.shape)[i]:.3e}"
            for k, v in (("rtol", rtol), ("atol", atol))
        )
        raise AssertionError(
            f"{name}: not close ({tols}); worst at index {tuple(int(j) for j in i)}: "
            f"got {a64[i]!r}, expected {e64[i]!r}, abs err {err[i]:.3e}; "
            f"max abs err {np.nanmax(err):.3e}, {int(np.sum(excess > 0))}/{a.size} elements off"
        )


def assert_close_dtype(actual, expected, dtype: str, name: str = "value") -> None:
    assert_close(actual, expected, name=name, **TOL[dtype])


# ---- rounding-error bounds -------------------------------------------------------------------
#
# The model (probabilistic rounding-error analysis, as in Higham & Mary, SIAM J. Sci. Comput. 2019):
# every floating-point operation returns op(a, b) * (1 + d) with |d| <= u (the unit roundoff,
# 2**-53 in float64, 2**-24 in float32), and the d of different operations behave like independent
# zero-mean variables. To first order in u:
#
# (S) A sum of n terms t_1..t_n in ANY order (sequential, pairwise, blocked, SIMD lanes): each of
#     the n - 1 additions contributes d * (a partial sum), and n - 1 independent such errors add up
#     to about sqrt(n) times the largest partial sum. Every partial sum is at most sum |t_i|, so
#         |computed - exact| <~ u * sqrt(n) * sum_i |t_i|                                     (S)
#     and, when the order of the terms is unrelated to their values (random test data; the
#     blocks any implementation forms), a partial sum of k terms is (k/n) * S plus a random walk
#     of sqrt(k) * rms(t), which sharpens (S) to
#         |computed - exact| <~ u * sqrt(n) * (|S| + sqrt(sum_i t_i**2))                     (S')
#     (at most 2x (S), and sqrt(n)/2 times tighter for random-sign terms). Both bound the error
#     relative to the terms, not to the result: random-sign terms cancel, S may be ~0, and an
#     rtol on the result would be meaningless. The independence fails for n EQUAL terms (a
#     constant added n times rounds the same way at every step): their error can reach the
#     worst case u * n * sum |t_i|.
# (E) When the terms carry independent errors e_i of their own (computed upstream, one row each),
#     the sum carries about sqrt(sum_i e_i**2) of them: a reduction over N rows grows like sqrt(N)
#     (not N) times the error of one row.
# (P) A product or quotient adds the relative errors of its factors, plus u for its own rounding.
# (C) Centring x_j - mean(x) over a row of C values: the computed mean carries the error of (S),
#     u * sqrt(C) * mean|x|. Relative to the row's spread sigma that is u * sqrt(C) * kappa, with
#     kappa = mean|x| / sigma the row's own condition number: a nearly constant row (sigma small
#     against |x|) loses digits, and only that row's bound widens, not the whole tensor's.
#
# ``sum_error`` / ``reduction_error`` return these first-order estimates (computed in float64 from
# the inputs, per element); ``assert_within`` allows SAFETY times the estimate, which covers the
# constants dropped above (two implementations err independently; a few more roundings per
# element) and the tail of the sqrt(n) law. Calibration (thousands of random shapes in the tests'
# ranges, rows with means up to 1e4 times their spread, all-positive data, and GPT-2-sized
# tensors): the largest error seen was 2.1x its estimate (Linear's y, 768 -> 3072 over 512 rows,
# 1.5M elements), most stay below 1x. Each test that uses them also plants an error of
# PLANTED relative size in the largest element of each output and checks that the bound rejects
# it (``assert_catches_planted_error``): 1e-6 in float64 (ten orders of magnitude above u), 1e-4
# in float32 (u = 6e-8, and a realistic row of C = 768 loses another sqrt(C) ~ 28 of it).
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24}
SAFETY = 4.0
PLANTED = {"float64": 1e-6, "float32": 1e-4}


def sum_error(total, sum_sq, n, dtype: str) -> np.ndarray:
    """(S'): the rounding error of a sum of ``n`` terms whose exact sum is ``total`` and whose
    squares add up to ``sum_sq`` (arrays broadcast: one estimate per output element)."""
    total = np.abs(np.asarray(total, dtype=np.float64))
    root_n = np.sqrt(np.maximum(n, 1))
    return UNIT_ROUNDOFF[dtype] * root_n * (total + np.sqrt(np.asarray(sum_sq, dtype=np.float64)))


def reduction_error(terms, axis, dtype: str, term_errors=0.0) -> np.ndarray:
    """(S') + (E): the error of ``terms.sum(axis)`` when term i already carries its own
    ``term_errors[i]`` (an array broadcastable to ``terms``, or 0)."""
    t = as_numpy(terms).astype(np.float64)
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    n = int(np.prod([t.shape[a] for a in axes]))
    e = np.broadcast_to(np.asarray(term_errors, dtype=np.float64), t.shape)
    return sum_error(t.sum(axis=axes), (t * t).sum(axis=axes), n, dtype) + np.sqrt(
        (e * e).sum(axis=axes)
    )


def softmax_error_terms(x, axis: int, dtype: str):
    """The pieces of softmax(x)'s rounding error along ``axis``, in float64: (p, z, rel_sum) with
    p = softmax(x), z = x - max(x) and rel_sum the relative error of S = sum exp(z) by (S').
    exp(z) carries u * (|z| + 1) relative ((P): exp turns the subtraction's absolute rounding u|z|
    into a relative one), so p carries u * (|z| + 2) + rel_sum (one more u for the division)."""
    x = as_numpy(x).astype(np.float64)
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    total = e.sum(axis=axis, keepdims=True)
    rel_sum = sum_error(total, (e * e).sum(axis=axis, keepdims=True), x.shape[axis], dtype) / total
    return e / total, z, rel_sum


def assert_within(actual, expected, estimate, name: str = "value") -> None:
    """|actual - expected| <= SAFETY * estimate, element by element (estimate broadcasts)."""
    assert_close(actual, expected, rtol=0.0, atol=SAFETY * np.asarray(estimate), name=name)


def assert_catches_planted_error(check: Callable[[np.ndarray], None], value, dtype: str) -> None:
    """``check(value)`` passes, and ``check`` raises AssertionError once the largest-magnitude
    element of ``value`` carries a relative error of PLANTED[dtype] (a bug in one element)."""
    good = as_numpy(value).copy()
    check(good)
    bad = good.copy()
    i = np.unravel_index(np.argmax(np.abs(bad)), bad.shape)
    bad[i] = bad[i] * (1 + PLANTED[dtype])
    assert bad[i] != good[i], "the planted error vanished in rounding"
    try:
        check(bad)
    except AssertionError:
        return
    raise AssertionError(f"a {PLANTED[dtype]:g} relative error at index {i} passed the bound")


def to_torch(x: np.ndarray, requires_grad: bool = False) -> torch.Tensor:
    t = torch.from_numpy(np.array(x, copy=True))
    return t.requires_grad_(requires_grad) if t.is_floating_point() else t


def numerical_grad(f: Callable[[], np.ndarray], x: np.ndarray, dout: np.ndarray, eps: float = 1e-6):
    """Central finite differences of L = sum(f() * dout) with respect to x (modified in place)."""
    grad = np.zeros_like(x, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    for _ in it:
        i = it.multi_index
        old = x[i].copy()
        x[i] = old + eps
        plus = np.sum(f() * dout)
        x[i] = old - eps
        minus = np.sum(f() * dout)
        x[i] = old
        grad[i] = (plus - minus) / (2 * eps)
    return grad


def check_finite_differences(
    f: Callable[[], np.ndarray],
    inputs: dict[str, np.ndarray],
    grads: dict[str, np.ndarray],
    dout: np.ndarray,
    rtol: float = 1e-5,
    atol: float = 1e-7,
) -> None:
    """Compare analytic ``grads`` with central differences for every array in ``inputs`` (float64).

    ``f`` must read the arrays in ``inputs`` (they are perturbed in place). With eps=1e-6 the
    truncation error is O(eps^2) and the rounding error O(1e-16/eps), so ~1e-9 absolute: rtol 1e-5
    leaves a wide margin without letting a wrong gradient through.
    """
    for name, x in inputs.items():
        assert x.dtype == np.float64, f"finite differences need float64, {name} is {x.dtype}"
        num = numerical_grad(f, x, dout)
        assert_close(grads[name], num, rtol=rtol, atol=atol, name=f"d{name} vs finite differences")


def rng_array(rng: np.random.Generator, shape, dtype: str = "float64", scale: float = 1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def examples(n: int) -> int:
    """A test's hypothesis example count: ``n`` under the default profile, 12x ``n`` under
    HYPOTHESIS_PROFILE=thorough (the profiles' 300 / 25), so a per-test count never caps it."""
    return n * 12 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else n


# hypothesis building blocks shared by every test (shapes are drawn per test)
seeds = st.integers(min_value=0, max_value=2**31 - 1)
dtypes = st.sampled_from(DTYPES)
