"""Symmetric int8 quantization in PyTorch, with a real int8 x int8 -> int32 matmul.

Same format as the reference: scale = max|v| / 127 (1 for an all-zero group), q = clip(round(v /
scale), -127, 127); per tensor (), per output channel (out,), per token (N, 1); |v - q * scale| <=
scale / 2. ``int8_matmul`` picks its backend by what the machine does fast (``device.py``):

- ``torch._int_mm`` (int8 GEMM accumulating in int32) on CUDA and on CPUs with VNNI/AMX int8 dot
  products, where it is ~7x faster than a float32 GEMM of the same shape;
- elsewhere (an AVX2-only CPU, where ``_int_mm`` is slower than float32), the int8 values as
  float32 in K-chunks of 1024: every partial sum is an integer of magnitude <= 1024 * 128 * 128 =
  2**24, so float32 holds it exactly in any summation order, and the chunks add up in int32.

Both give the same int32 result. Plain ``@`` on int8 tensors would accumulate in int8 and overflow;
a CUDA shape ``_int_mm`` refuses multiplies in float64 (exact: partial sums stay below 2**53).

Dispatch: when ``myllm101.kernels.use_kernel`` says so (CUDA tensors and triton, or
``MYLLM101_KERNELS=on`` / ``kernels="on"``), ``int8_matmul`` runs the Triton GEMM of
``kernels/int8_matmul.py`` (any shape, no _int_mm limits) and ``w8a8_linear`` its fused variant
that rescales in the epilogue (float16/bfloat16/float32 activations; float64 stays here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from myllm101.checks import (
    QMAX,
    check_int8_linear,
    check_int8_operands,
    check_int8_scale,
    expect_dtype,
    expect_float,
    expect_ndim,
)
from myllm101.device import int8_matmul_backend
from myllm101.kernels.dispatch import kernel_supports, use_kernel

EXACT_FP32_K = 1024  # int8 products <= 128 * 128 = 2**14, so a 1024-long float32 sum is exact
MODES = ("weight_only", "w8a8")


def _quantize(v: torch.Tensor, absmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q = clip(round(v / scale), -127, 127) with scale = absmax / 127 (1 where absmax is 0)."""
    scale = torch.where(absmax > 0, absmax / QMAX, torch.ones_like(absmax))
    q = torch.round(v / scale).clamp_(-QMAX, QMAX).to(torch.int8)
    return q, scale


@torch.no_grad()
def quantize_per_tensor(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w: any float tensor -> (q: int8 like w, scale: () in w's dtype)."""
    expect_float("w", w)
    absmax = w.abs().amax() if w.numel() else w.new_zeros(())
    return _quantize(w, absmax)


@torch.no_grad()
def quantize_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w: (out, in) -> (q: (out, in) int8, scale: (out,)): one scale per output channel (row)."""
    expect_float("w", w)
    expect_ndim("w", w, 2)
    q, scale = _quantize(w, _row_absmax(w))
    return q, scale[:, 0]


@torch.no_grad()
def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x: (N, K) -> (q: (N, K) int8, scale: (N, 1)): one scale per token (row)."""
    expect_float("x", x)
    expect_ndim("x", x, 2)
    return _quantize(x, _row_absmax(x))


def _row_absmax(v: torch.Tensor) -> torch.Tensor:
    """(R, C) -> (R, 1); 0 for rows with no columns."""
    if v.shape[1] == 0:
        return v.new_zeros(v.shape[0], 1)
    return v.abs().amax(dim=1, keepdim=True)


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """q: int8 (rows, ...) with scale (), (rows,) or (rows, 1) -> q * scale in scale's dtype."""
    expect_dtype("q", q, ("int8",))
    check_int8_scale(q, scale)
    scale = scale[:, None] if scale.ndim == 1 else scale  # per row: (rows,) -> (rows, 1)
    return q.to(scale.dtype) * scale


def _int_mm_ok(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether torch._int_mm takes (M, K) @ (K, N) here (CUDA needs M > 16 and K, N % 8 == 0)."""
    if not hasattr(torch, "_int_mm"):
        return False
    if a.device.type == "cpu":
        return True
    M, K = a.shape
    N = b.shape[0]
    return a.device.type == "cuda" and M > 16 and K % 8 == 0 and N % 8 == 0


def _row_major(t: torch.Tensor) -> torch.Tensor:
    """t (R, C) with strides exactly (C, 1). ``.contiguous()`` is not enough: torch calls a (1, N)
    tensor with strides (1, 1) contiguous, and CPU ``_int_mm`` then reads it with leading dimension
    1 and returns garbage (seen in torch 2.13 for b of shape (N, 1))."""
    if t.stride() == (t.shape[1], 1):
        return t
    return torch.empty(t.shape, dtype=t.dtype, device=t.device).copy_(t)


def int8_matmul(a: torch.Tensor, b: torch.Tensor, kernels: str | None = None) -> torch.Tensor:
    """a: (M, K) int8, b: (N, K) int8 -> a @ b.T: (M, N) int32, exact. ``kernels``: auto|on|off."""
    check_int8_operands(a, b)
    if use_kernel(a, b, kernels=kernels):
        from myllm101.kernels.int8_matmul import int8_matmul as int8_matmul_kernel

        return int8_matmul_kernel(a, b)
    backend = int8_matmul_backend(a.device)
    if backend == "int_mm" and _int_mm_ok(a, b):
        # a dense (K, N) operand is ~1.5x faster than the transposed view on CPU
        return torch._int_mm(_row_major(a), _row_major(b.t()))
    if backend == "fp32_exact":
        return int8_matmul_fp32_exact(a, b)
    return (a.to(torch.float64) @ b.to(torch.float64).t()).to(torch.int32)


def int8_matmul_fp32_exact(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (M, K) int8 @ b (N, K).T -> (M, N) int32, exactly, through float32 GEMMs over K-chunks of
    1024 (see the module docstring); the backend for CPUs without int8 dot products."""
    M, K = a.shape
    out = torch.zeros(M, b.shape[0], dtype=torch.int32, device=a.device)
    for k0 in range(0, K, EXACT_FP32_K):
        a_k, b_k = a[:, k0 : k0 + EXACT_FP32_K].float(), b[:, k0 : k0 + EXACT_FP32_K].float()
        out += F.linear(a_k, b_k).to(torch.int32)  # exact integers in float32
    return out


def int8_linear(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, b=None) -> torch.Tensor:
    """Weight-only int8: x (..., in) @ dequantize(w_q, w_scale).T + b -> (..., out) in x's dtype.

    Autograd gives dx = dy @ dequantized weight: the straight-through gradient of the reference.
    """
    check_int8_linear(x, w_q, w_scale, b)
    w = dequantize(w_q, w_scale).to(x.dtype)  # (out, in)
    return F.linear(x, w, None if b is None else b.to(x.dtype))


@torch.no_grad()
def w8a8_linear(
    x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, b=None, kernels: str | None = None
) -> torch.Tensor:
    """Per-token int8 activations times int8 weights, int32 accumulate, rescale: (..., out).

    Inference only (rounding has no useful gradient). ``kernels``: "auto" | "on" | "off".
    """
    check_int8_linear(x, w_q, w_scale, b)
    x2 = x.reshape(-1, x.shape[-1])  # (N, in)
    x_q, x_scale = quantize_per_token(x2)  # (N, in) int8, (N, 1)
    if kernel_supports(x) and use_kernel(x_q, w_q, kernels=kernels):
        from myllm101.kernels.int8_matmul import int8_linear_rescale

        bias = None if b is None else b.to(x.dtype)
        y = int8_linear_rescale(x_q, x_scale, w_q, w_scale.to(x.dtype), bias)  # fused epilogue
        return y.reshape(*x.shape[:-1], w_q.shape[0])
    acc = int8_matmul(x_q, w_q, kernels=kernels)  # (N, out) int32
    y = acc.to(x.dtype) * (x_scale * w_scale.to(x.dtype))  # (N, out)
    if b is not None:
        y = y + b.to(x.dtype)
    return y.reshape(*x.shape[:-1], w_q.shape[0])


class Int8Linear(nn.Module):
    """A linear layer whose weight is stored as int8 (buffers ``weight_q``, ``weight_scale``).

    mode "weight_only": dequantize the weight, float GEMM (saves memory, keeps activations exact).
    mode "w8a8": quantize activations per token too and run the GEMM in int8 (saves compute).
    """

    def __init__(
        self,
        weight_q: torch.Tensor,
        weight_scale: torch.Tensor,
        bias: torch.Tensor | None = None,
        mode: str = "weight_only",
        kernels: str | None = None,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        expect_dtype("weight_q", weight_q, ("int8",))
        expect_ndim("weight_q", weight_q, 2)
        self.out_features, self.in_features = weight_q.shape
        self.mode = mode
        self.kernels = kernels  # w8a8 only; None: follow $MYLLM101_KERNELS
        self.register_buffer("weight_q", weight_q)  # (out, in) int8
        self.register_buffer("weight_scale", weight_scale)  # () or (out,)
        self.register_buffer("bias", bias)  # (out,) or None

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, mode: str = "weight_only", per_channel: bool = True):
        """Quantize a trained ``nn.Linear`` (per output channel by default: one outlier row does
        not inflate every other row's step)."""
        w = linear.weight.detach()
        q, scale = quantize_per_channel(w) if per_channel else quantize_per_tensor(w)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(q, scale, bias, mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "w8a8":
            return w8a8_linear(x, self.weight_q, self.weight_scale, self.bias, self.kernels)
        return int8_linear(x, self.weight_q, self.weight_scale, self.bias)

    def extra_repr(self) -> str:
        per = "channel" if self.weight_scale.ndim else "tensor"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"mode={self.mode}, per_{per}"
        )
