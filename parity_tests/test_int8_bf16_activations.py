"""The compile-only weight-only int8 kernel (fast/int8.py ``int8_linear_bf16_activations``) against
the reference's weight-only linear in float64, within the bound its two bf16 roundings set.

The kernel rounds x to bf16 (relative u = 2**-9 each element), sums x_i * q_ji in float32, rounds
the sum to bf16 (u again) and scales after. So for output j, with S_j = sum_i |x_i q_ji|:
|y_j - exact_j| <= scale_j * (u * S_j (activations) + u * (1 + u) * S_j (the sum's rounding, which
is at most S_j in size)) + float32 summation error, i.e. scale_j * S_j * (2u + u**2) + tiny. The
test checks 2.01 u * scale_j * S_j + 1e-6 * scale_j * S_j, and that a planted error breaks it.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from myllm101.fast import int8 as fast
from myllm101.reference import int8 as ref
from parity_tests.helpers import assert_close, examples, rng_array, seeds

U_BF16 = 2.0**-9  # bf16's unit roundoff (8-bit significand)


def bound(x: np.ndarray, q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(N, out): the error bound of the module docstring."""
    s = np.abs(x) @ np.abs(q.astype(np.float64)).T  # S_j per row
    return (2.01 * U_BF16 + 1e-6) * s * scale


@settings(max_examples=examples(25), deadline=None)
@given(seed=seeds, n=st.integers(1, 6), k=st.integers(1, 5).map(lambda m: 16 * m),
       out=st.integers(1, 40),
       bias=st.booleans(), per_channel=st.booleans())  # fmt: skip
def test_bf16_activation_kernel_is_within_its_rounding_bound(seed, n, k, out, bias, per_channel):
    rng = np.random.default_rng(seed)
    w = rng_array(rng, (out, k), scale=rng.uniform(0.01, 10))
    x = rng_array(rng, (n, k), scale=rng.uniform(0.01, 10))
    q, scale = ref.quantize_per_channel(w) if per_channel else ref.quantize_per_tensor(w)
    b = rng_array(rng, (out,)) if bias else None
    want, _ = ref.int8_linear_forward(x, q, scale, b)  # float64: x @ (q * scale).T + b
    got = fast.int8_linear_bf16_activations(
        torch.from_numpy(x).float(),
        torch.from_numpy(q),
        torch.from_numpy(np.asarray(scale)).float(),
        None if b is None else torch.from_numpy(b).float(),
    )
    assert got.dtype == torch.float32 and got.shape == (n, out)
    # the float32 copies of x, scale and b round too (2**-24 relative): far inside the bf16 bound
    tol = bound(x, q, np.broadcast_to(np.asarray(scale), (out,))) + 1e-6 * np.abs(want)
    assert_close(got, want, rtol=0, atol=tol, name="y")


def test_the_bound_catches_an_error_just_beyond_it():
    rng = np.random.default_rng(0)
    w, x = rng_array(rng, (16, 64)), rng_array(rng, (3, 64))
    q, scale = ref.quantize_per_channel(w)
    want, _ = ref.int8_linear_forward(x, q, scale, None)
    got = fast.int8_linear_bf16_activations(torch.from_numpy(x).float(), torch.from_numpy(q),
                                            torch.from_numpy(scale).float()).double()  # fmt: skip
    tol = bound(x, q, scale)
    assert_close(got, want, rtol=0, atol=tol, name="y")
    bad = got.clone()
    j = np.unravel_index(np.argmax(tol), tol.shape)
    bad[j] = torch.tensor(want[j] + 1.5 * tol[j])  # beyond the bound: must fail
    with pytest.raises(AssertionError):
        assert_close(bad, want, rtol=0, atol=tol, name="y")


def test_it_actually_rounds_activations_to_bf16():
    """The bound is not loose by accident: an activation bf16 cannot hold moves the output as
    its bf16 rounding does (1 + 2**-12 rounds to 1 in bf16)."""
    q = torch.zeros(1, 16, dtype=torch.int8)
    q[0, 0] = 1
    x = torch.zeros(1, 16)
    x[0, 0] = 1 + 2.0**-12
    y = fast.int8_linear_bf16_activations(x, q, torch.tensor([1.0]))
    assert y.item() == 1.0
    x[0, 0] = 1 + 2.0**-7  # representable in bf16: kept
    assert fast.int8_linear_bf16_activations(x, q, torch.tensor([1.0])).item() == 1 + 2.0**-7


@pytest.mark.parametrize("k", [8, 24, 40])
def test_a_width_its_kernel_cannot_take_is_refused(k):
    """ATen's kernel needs in_features % 16 == 0 (another width crashed the process)."""
    q = torch.ones(3, k, dtype=torch.int8)
    with pytest.raises(ValueError, match=rf"multiple of 16, got weight_q of shape \(3, {k}\)"):
        fast.int8_linear_bf16_activations(torch.ones(2, k), q, torch.ones(3))
