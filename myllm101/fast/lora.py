"""LoRA in PyTorch: y = x W^T + b + (alpha / r) * (x A^T) B^T with W, b frozen.

``LoRALinear`` wraps a pretrained ``nn.Linear``: the base weight is shared with it and frozen, only
``lora_A`` (r, in) and ``lora_B`` (out, r) train. Three ``F.linear`` calls (the base one with its
bias fused into the GEMM) cost barely more than the base layer for small r; autograd skips dW
because the base weight does not require grad. ``merge()`` folds the update into the weight for
inference (one GEMM), ``unmerge()`` takes it back out to continue training.

``Int8LoRALinear`` is the QLoRA-style twin: the frozen base is an ``Int8Linear`` (weight-only
int8, fast/int8.py), the adapter stays in float. Its base cannot take a merge without requantizing,
so ``merge()`` refuses; the forward is the base's int8 layer plus the same float update.
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
from myllm101.fast.dropout import Dropout, dropout_mask
from myllm101.fast.int8 import Int8Linear


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


class _DroppedLoRAUpdate(torch.autograd.Function):
    """scale * dropout(x) A^T B^T keeping x and a bool keep-mask for backward, not dropout(x).

    Written out, autograd keeps dropout(x) (for A's gradient) and the dropout's float mask: two
    (N, in) float tensors an adapter, and every adapter of one input keeps its own (q_proj and
    v_proj). This keeps x, which the adapters of one input share, a 1-byte mask each, and h =
    dropout(x) A^T (N, r); backward recomputes dropout(x) from them (one multiply). The SmolLM2
    LoRA step (q_proj + v_proj, 30 layers, 512 tokens) kept ~80 MB less. Gradients are the
    written-out ones; computed in h's dtype (bf16 under autocast) and returned in each input's.
    """

    @staticmethod
    def forward(ctx, x, A, B, keep, p: float, scale: float):  # noqa: ANN001 (autograd API)
        xd = (
            x * keep.to(x.dtype) / (1.0 - p)
        )  # (..., in), what fast.dropout.dropout_with_mask gives
        h = F.linear(xd, A)  # (..., r)
        ctx.save_for_backward(x, keep, A, B, h)
        ctx.p, ctx.scale = p, scale
        return scale * F.linear(h, B)  # (..., out)

    @staticmethod
    def backward(ctx, dout: torch.Tensor):  # noqa: ANN205
        x, keep, A, B, h = ctx.saved_tensors
        dt, scale = h.dtype, ctx.scale
        dout = dout.to(dt)
        dh = scale * (dout @ B.to(dt))  # (..., r)
        dx = dA = dB = None
        if ctx.needs_input_grad[2]:
            dB = (scale * dout.flatten(0, -2).T @ h.flatten(0, -2)).to(B.dtype)  # (out, r)
        if ctx.needs_input_grad[1]:
            xd = (x * keep.to(x.dtype) / (1.0 - ctx.p)).to(dt)  # recomputed
            dA = (dh.flatten(0, -2).T @ xd.flatten(0, -2)).to(A.dtype)  # (r, in)
        if ctx.needs_input_grad[0]:
            dx = ((dh @ A.to(dt)) * keep.to(dt) / (1.0 - ctx.p)).to(x.dtype)  # (..., in)
        return dx, dA, dB, None, None, None


def check_lora_options(r: int, dropout: float) -> None:
    expect_positive("r", r)
    expect_in_range("dropout", dropout, 0.0, 1.0)


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable rank-r update; ``merged`` says which form is live.

    Dropout (as in the paper) applies to the adapter's input only, so with dropout > 0 the merged
    and unmerged layers agree in eval mode, not in train mode.
    """

    def __init__(self, linear: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        """Wrap ``linear``: its weight and bias are shared (not copied) and frozen."""
        super().__init__()
        check_lora_options(r, dropout)  # before freezing anything of the caller's
        self.weight = linear.weight.requires_grad_(False)  # (out, in)
        if linear.bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = linear.bias.requires_grad_(False)  # (out,)
        w = linear.weight
        self._init_adapter(linear.in_features, linear.out_features, r, alpha, dropout, w)

    def _init_adapter(
        self, in_features: int, out_features: int, r: int, alpha: float, dropout: float, like
    ) -> None:
        """lora_A (r, in) and lora_B (out, r) on ``like``'s device and dtype, the paper's init."""
        self.in_features, self.out_features = in_features, out_features
        self.r, self.alpha, self.scale = r, alpha, alpha / r
        kw = dict(device=like.device, dtype=like.dtype)
        self.lora_A = nn.Parameter(torch.empty(r, in_features, **kw))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r, **kw))
        # as in the paper (and nn.Linear's own init): A random, B zero, so the update starts at 0
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()  # rand >= p, as below
        self.dropout_p = dropout
        self.merged = False

    def adapter(self, x: torch.Tensor) -> torch.Tensor:
        """(alpha / r) * dropout(x) A^T B^T: the low-rank update alone, (..., out). Training with
        dropout under eager autograd goes through ``_DroppedLoRAUpdate`` (less memory kept)."""
        p = self.dropout_p
        if (
            p > 0
            and self.training
            and torch.is_grad_enabled()
            and not torch.compiler.is_compiling()
        ):
            keep = dropout_mask(x, p)
            return _DroppedLoRAUpdate.apply(x, self.lora_A, self.lora_B, keep, p, self.scale)
        return self.scale * F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return F.linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias) + self.adapter(x)

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


class Int8LoRALinear(LoRALinear):
    """QLoRA-style: a frozen ``Int8Linear`` base (weight-only int8) plus a float rank-r update.

    y = int8_base(x) + (alpha / r) * dropout(x) A^T B^T. The base holds buffers only (int8 weight,
    scales, bias), so nothing of it trains; its weight-only forward is differentiable in x (the
    straight-through gradient through the dequantized weight), so adapters in earlier layers get
    their gradients through it. A and B take the dtype of the base's scales (float32 usually).
    """

    def __init__(self, base: Int8Linear, r: int, alpha: float, dropout: float = 0.0):
        nn.Module.__init__(self)
        check_lora_options(r, dropout)
        if base.mode != "weight_only":
            raise ValueError(
                f"base mode: expected 'weight_only' for LoRA over an int8 layer (w8a8 rounds the "
                f"activations and has no gradient for x), got {base.mode!r}"
            )
        self.base_layer = base  # its buffers are frozen by construction
        self._init_adapter(
            base.in_features, base.out_features, r, alpha, dropout, base.weight_scale
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.adapter(x)

    def merge(self) -> None:
        raise ValueError(
            "merge: the base layer is int8, and folding the update into it would requantize the "
            "weight (unmerge could not undo it); keep the adapter unmerged, or merge into the "
            "float model before quantizing"
        )

    def unmerge(self) -> None:
        pass  # never merged

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
            f"alpha={self.alpha}, base=int8"
        )
