"""Parity tests of the Triton kernels in ``myllm101/kernels``.

Without a GPU the root conftest sets ``TRITON_INTERPRET=1`` and the kernels run in Triton's
interpreter on CPU tensors; on a CUDA machine they compile and run on ``DEVICE = "cuda"``.
Shared here: where to put tensors, and the bf16/fp16 rule used by every kernel test file.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from myllm101.kernels.dispatch import interpreting, triton_available

DEVICE = "cpu" if interpreting() else "cuda"

# a module-level mark: `pytestmark = requires_kernels` skips a file where kernels cannot run
requires_kernels = pytest.mark.skipif(
    not triton_available() or (DEVICE == "cuda" and not torch.cuda.is_available()),
    reason="needs triton and either TRITON_INTERPRET=1 or a CUDA device",
)


def _f64(x) -> np.ndarray:
    """numpy float64 copy of a tensor (bf16 included, which .numpy() refuses) or array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def max_abs_err(actual, expected) -> float:
    a, e = _f64(actual), _f64(expected)
    return float(np.max(np.abs(a - e))) if a.size else 0.0


def assert_within_2x_eager(kernel, eager, exact, name: str, floor: float = 0.0) -> None:
    """Low-precision rule: max|kernel - exact| <= 2 * max|eager - exact| (+ ``floor``).

    ``kernel`` and ``eager`` are the same op in the same low dtype (bf16 / fp16), ``exact`` is a
    float32/float64 result of the same inputs. ``floor`` covers an eager error that is exactly 0.
    """
    k_err, e_err = max_abs_err(kernel, exact), max_abs_err(eager, exact)
    assert k_err <= 2 * e_err + floor, (
        f"{name}: kernel max abs err {k_err:.3e} > 2 x eager's {e_err:.3e} (+ floor {floor:.1e})"
    )
