"""Pointwise activations in PyTorch: GELU (exact or tanh), SiLU and SwiGLU.

    gelu(x)      = x * Phi(x)  (or GPT-2's tanh approximation)
    silu(x)      = x * sigmoid(x)
    swiglu(g, u) = silu(g) * u

Each is torch's fused, vectorized kernel (``F.gelu``, ``F.silu``): one pass forward, one backward,
against the half-dozen elementwise passes of the same math written out; torch.compile fuses
swiglu's silu and multiply into one kernel.

Under torch.compile the tanh GELU is spelled with a sigmoid instead, the same function exactly in
math (0.5 * (1 + tanh(z)) = sigmoid(2z)): x * sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)). Inductor's
CPU code evaluates tanh far slower than exp; at (2048, 1536) float32, one thread, the compiled
sigmoid form took 2.4 / 7.0 ms forward / backward against 10.2 / 10.5 ms for the compiled
``F.gelu(approximate="tanh")`` (AVX-512; with 256-bit vectors 7.7 / 9.1 against 12.8 / 14.2), and
matched it to float32 rounding (both within 5e-7 of the float64 GELU); a whole compiled GPT
training step (6 layers, 384 wide, T=256, B=8, 2 threads) got 2-4% faster. In eager mode no
spelled-out form comes close to the one fused kernel (~5-10x slower), so eager keeps ``F.gelu``.
"""

import math

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

# 2 * sqrt(2 / pi): tanh(z) = 2 sigmoid(2z) - 1, so GPT-2's 0.5 (1 + tanh(z)) is sigmoid(2z)
GELU_TANH_SIGMOID_SCALE = 2.0 * math.sqrt(2.0 / math.pi)


def gelu_tanh_sigmoid_form(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's tanh GELU written with a sigmoid: x * sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)).
    What ``gelu(x, "tanh")`` runs under torch.compile (see the module docstring). bf16/fp16 x is
    computed in float32 and rounded once, like ``F.gelu`` (free under Inductor, which fuses it)."""
    xf = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
    y = xf * torch.sigmoid(GELU_TANH_SIGMOID_SCALE * (xf + 0.044715 * xf * xf * xf))
    return y.to(x.dtype)


def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """x: (...) -> (...). approximate: "none" (erf) or "tanh"."""
    expect_float("x", x)
    check_gelu_approximate(approximate)
    if approximate == "tanh" and torch.compiler.is_compiling():
        return gelu_tanh_sigmoid_form(x)  # Inductor fuses it; its tanh is slow (see above)
    return F.gelu(x, approximate=approximate)


def silu(x: torch.Tensor) -> torch.Tensor:
    """x: (...) -> x * sigmoid(x): (...)."""
    expect_float("x", x)
    return F.silu(x)


class _SwiGLU(torch.autograd.Function):
    """silu(gate) * up keeping gate and up for backward, and recomputing silu(gate) there.

    Written out, autograd keeps three (..., I) tensors a call (gate for silu's backward, silu(gate)
    and up for the product's): a third of the MLP's activation memory. Recomputing silu(gate) is
    one elementwise pass; the SmolLM2 LoRA step (30 layers, 512 tokens, I = 1536) kept 90 MB less.
    """

    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, dout: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        gate, up = ctx.saved_tensors
        dgate = dup = None
        if ctx.needs_input_grad[0]:  # d silu(g)/dg = s (1 + g (1 - s)): torch's fused kernel
            dgate = torch.ops.aten.silu_backward(dout * up, gate)
        if ctx.needs_input_grad[1]:
            dup = dout * F.silu(gate)
        return dgate, dup


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """gate, up: (...) -> silu(gate) * up: (...). Eager autograd keeps 2 tensors, not 3
    (``_SwiGLU``); under torch.compile, Inductor fuses the plain form and picks what to keep."""
    expect_float("gate", gate)
    expect_same_shape("gate", gate, "up", up)
    expect_dtype("up", up, (dtype_name(gate),))
    if torch.compiler.is_compiling() or not (gate.requires_grad or up.requires_grad):
        return F.silu(gate) * up
    return _SwiGLU.apply(gate, up)


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
