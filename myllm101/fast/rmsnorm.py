"""RMSNorm in PyTorch: y = x / sqrt(mean(x**2, -1) + eps) * weight.

Computed in float32 (or float64) even under bf16 autocast, since the mean of squares loses too much
in bf16; written as plain tensor ops so torch.compile fuses it into one kernel.
"""

import torch
from torch import nn

from myllm101.checks import expect_float, expect_positive, expect_shape


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x: (..., C), weight: (C,) -> (..., C) in x's dtype."""
    expect_float("x", x)
    expect_shape("weight", weight, (x.shape[-1],))
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(compute)
    y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (y * weight.to(compute)).to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6, device=None, dtype=None):
        super().__init__()
        expect_positive("dim", dim)
        expect_positive("eps", eps)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rmsnorm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
