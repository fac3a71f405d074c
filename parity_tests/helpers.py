"""Shared helpers for every parity test: one tolerance table, one assert, one finite-difference check.

Tolerances (stated once, used everywhere):
- float64: rtol 1e-7 (both sides do the same math in exact IEEE double; only summation order differs)
- float32: rtol 1e-5, atol 1e-5 (reductions over a few hundred terms reorder roundings of ~6e-8)
Looser bounds (bf16, int8) are stated and justified in the test that uses them.
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
        raise AssertionError(
            f"{name}: not close (rtol={rtol}, atol={atol}); worst at index {tuple(int(j) for j in i)}: "
            f"got {a64[i]!r}, expected {e64[i]!r}, abs err {err[i]:.3e}; "
            f"max abs err {np.nanmax(err):.3e}, {int(np.sum(excess > 0))}/{a.size} elements off"
        )


def assert_close_dtype(actual, expected, dtype: str, name: str = "value") -> None:
    assert_close(actual, expected, name=name, **TOL[dtype])


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


# hypothesis building blocks, kept small so CI stays fast
seeds = st.integers(min_value=0, max_value=2**31 - 1)
dtypes = st.sampled_from(DTYPES)
small_dim = st.integers(min_value=1, max_value=7)
width = st.integers(min_value=1, max_value=33)
