"""Pointwise activations in PyTorch: GELU (exact or tanh), SiLU and SwiGLU.

    gelu(x)      = x * Phi(x)  (or GPT-2's tanh approximation)
    silu(x)      = x * sigmoid(x)
    swiglu(g, u) = silu(g) * u

Each is torch's fused, vectorized kernel (``F.gelu``, ``F.silu``): one pass forward, one backward,
against the half-dozen elementwise passes of the same math written out; torch.compile fuses
swiglu's silu and multiply into one kernel.
"""

import torch
import torch.nn.functional as F
from torch import nn

from myllm101.checks import (
    check_gelu_approximate,
    dtype_name,
    expect_dtype,
    expect_float,
    expect_same_shape,
)


def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """x: (...) -> (...). approximate: "none" (erf) or "tanh"."""
    expect_float("x", x)
    check_gelu_approximate(approximate)
    return F.gelu(x, approximate=approximate)


def silu(x: torch.Tensor) -> torch.Tensor:
    """x: (...) -> x * sigmoid(x): (...)."""
    expect_float("x", x)
    return F.silu(x)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """gate, up: (...) -> silu(gate) * up: (...)."""
    expect_float("gate", gate)
    expect_same_shape("gate", gate, "up", up)
    expect_dtype("up", up, (dtype_name(gate),))
    return F.silu(gate) * up


class GELU(nn.Module):
    def __init__(self, approximate: str = "none"):
        super().__init__()
        check_gelu_approximate(approximate)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return silu(x)


class SwiGLU(nn.Module):
    """The gating op on two inputs (the two projections are the caller's Linear layers)."""

    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return swiglu(gate, up)
