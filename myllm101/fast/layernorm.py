"""LayerNorm in PyTorch: y = (x - mean) / sqrt(var + eps) * weight + bias, over the last axis.

``F.layer_norm`` computes mean and variance in one fused pass (Welford, float32 accumulation for
bf16) and has a fused backward; autocast runs it in float32.
"""

import torch
import torch.nn.functional as F
from torch import nn

from myllm101.checks import expect_float, expect_positive, expect_shape


def layernorm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """x: (..., C), weight: (C,), bias: (C,) or None -> (..., C) in x's dtype."""
    expect_float("x", x)
    C = x.shape[-1]
    expect_shape("weight", weight, (C,))
    if bias is not None:
        expect_shape("bias", bias, (C,))
        bias = bias.to(x.dtype)
    expect_positive("eps", eps)
    return F.layer_norm(x, (C,), weight.to(x.dtype), bias, eps)


class LayerNorm(nn.Module):
    """Parameters ``weight`` (ones) and ``bias`` (zeros, or None): loads an ``nn.LayerNorm`` state dict."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True, device=None, dtype=None):
        super().__init__()
        expect_positive("dim", dim)
        expect_positive("eps", eps)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        if bias:
            self.bias = nn.Parameter(torch.zeros(dim, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layernorm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, bias={self.bias is not None}"
