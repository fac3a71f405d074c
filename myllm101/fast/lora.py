"""LoRA in PyTorch: y = x W^T + b + (alpha / r) * (x A^T) B^T with W, b frozen.

``LoRALinear`` wraps a pretrained ``nn.Linear``: the base weight is shared with it and frozen, only
``lora_A`` (r, in) and ``lora_B`` (out, r) train. Three ``F.linear`` calls (the base one with its
bias fused into the GEMM) cost barely more than the base layer for small r; autograd skips dW
because the base weight does not require grad. ``merge()`` folds the update into the weight for
inference (one GEMM), ``unmerge()`` takes it back out to continue training.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from myllm101.checks import (
    check_lora_adapter,
    check_lora_linear,
    expect_in_range,
    expect_positive,
    lora_scale,
)


def lora_linear(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    A: torch.Tensor,
    B: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """x: (..., in), w: (out, in), b: (out,) or None, A: (r, in), B: (out, r) -> (..., out)."""
    check_lora_linear(x, w, b, A, B)
    # (x A^T) B^T, never B A: the low-rank path costs N*r*(in+out), not in*out*r + N*in*out
    return F.linear(x, w, b) + lora_scale(A, alpha) * F.linear(F.linear(x, A), B)


@torch.no_grad()
def lora_merge(w: torch.Tensor, A: torch.Tensor, B: torch.Tensor, alpha: float) -> torch.Tensor:
    """W' = W + (alpha / r) B A (a new tensor)."""
    check_lora_adapter(w, A, B)
    return torch.addmm(w, B, A, alpha=lora_scale(A, alpha))


@torch.no_grad()
def lora_unmerge(w_merged: torch.Tensor, A: torch.Tensor, B: torch.Tensor, alpha: float):
    """W = W' - (alpha / r) B A (a new tensor): undoes ``lora_merge``."""
    check_lora_adapter(w_merged, A, B)
    return torch.addmm(w_merged, B, A, alpha=-lora_scale(A, alpha))


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable rank-r update; ``merged`` says which form is live.

    Dropout (as in the paper) applies to the adapter's input only, so with dropout > 0 the merged
    and unmerged layers agree in eval mode, not in train mode.
    """

    def __init__(self, linear: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        """Wrap ``linear``: its weight and bias are shared (not copied) and frozen."""
        super().__init__()
        expect_positive("r", r)
        expect_in_range("dropout", dropout, 0.0, 1.0)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.r, self.alpha, self.scale = r, alpha, alpha / r
        self.weight = linear.weight.requires_grad_(False)  # (out, in)
        if linear.bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = linear.bias.requires_grad_(False)  # (out,)
        w = linear.weight
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(
            torch.zeros(self.out_features, r, device=w.device, dtype=w.dtype)
        )
        # as in the paper (and nn.Linear's own init): A random, B zero, so the update starts at 0
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return F.linear(x, self.weight, self.bias)
        adapter = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)
        return F.linear(x, self.weight, self.bias) + self.scale * adapter

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the weight in place: forward becomes one GEMM."""
        if not self.merged:
            self.weight.addmm_(self.lora_B, self.lora_A, alpha=self.scale)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update back out of the weight (e.g. to keep training the adapter)."""
        if self.merged:
            self.weight.addmm_(self.lora_B, self.lora_A, alpha=-self.scale)
            self.merged = False

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
            f"alpha={self.alpha}, bias={self.bias is not None}, merged={self.merged}"
        )
