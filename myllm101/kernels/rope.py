"""RoPE (rotate-half layout) as one Triton kernel used for both directions.

Maps to ``reference/rope.py`` (``rope_forward`` / ``rope_backward``) and ``fast/rope.py``
(``apply_rope``). With x = [x1, x2] and the (T, D) tables split the same way:

    forward   y1 = x1 * cos1 - x2 * sin1        y2 = x2 * cos2 + x1 * sin2
    backward  dx1 = dy1 * cos1 + dy2 * sin2     dx2 = dy2 * cos2 - dy1 * sin1

i.e. y = x * cos + rotate_half(x) * sin and dx = dy * cos - rotate_half(dy * sin). For the usual
tables (cos1 == cos2, sin1 == sin2) the backward is the rotation by -theta. Both formulas are used
with the four half-tables separately, so any tables give the reference's exact math.

Tables: (T, D), shared by every row, or (B, 1, T, D), one row of positions per batch row (gathered
with ``position_ids``, e.g. a left-padded batch); the table's batch stride is 0 for the former.

One program handles a (BLOCK_T, D/2) tile of one (batch, head): it loads both halves once and
writes both. Strides are passed for every axis, so x may be a transposed view (B, T, H, D) -> (B,
H, T, D) without a copy. The output (and the backward's dx) is always a fresh tensor.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from myllm101.checks import check_rope, expect_dtype
from myllm101.kernels.dispatch import KERNEL_DTYPES


@triton.jit
def _rope_kernel(
    x_ptr, y_ptr, cos_ptr, sin_ptr,
    H, T, HALF,
    sxb, sxh, sxt, sxd,
    syb, syh, syt, syd,
    scb, sct, scd,
    BACKWARD: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(0)  # which (batch, head)
    b = bh // H
    h = bh % H
    t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)  # (BLOCK_T,)
    d = tl.arange(0, BLOCK_D)  # (BLOCK_D,) index into one half
    mask = (t[:, None] < T) & (d[None, :] < HALF)  # (BLOCK_T, BLOCK_D)

    x_base = x_ptr + b * sxb + h * sxh + t[:, None] * sxt
    x1 = tl.load(x_base + d[None, :] * sxd, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_base + (d[None, :] + HALF) * sxd, mask=mask, other=0.0).to(tl.float32)
    c_base = b * scb + t[:, None] * sct
    cos1 = tl.load(cos_ptr + c_base + d[None, :] * scd, mask=mask, other=0.0).to(tl.float32)
    cos2 = tl.load(cos_ptr + c_base + (d[None, :] + HALF) * scd, mask=mask, other=0.0).to(
        tl.float32
    )
    sin1 = tl.load(sin_ptr + c_base + d[None, :] * scd, mask=mask, other=0.0).to(tl.float32)
    sin2 = tl.load(sin_ptr + c_base + (d[None, :] + HALF) * scd, mask=mask, other=0.0).to(
        tl.float32
    )

    if BACKWARD:
        # dx = dy * cos - rotate_half(dy * sin);  rotate_half([a, b]) = [-b, a]
        out1 = tl.fma(x2, sin2, x1 * cos1)
        out2 = tl.fma(x1, -sin1, x2 * cos2)
    else:
        # y = x * cos + rotate_half(x) * sin, as fma(rotated, sin, x * cos): the rounding of
        # torch.addcmul in fast/rope.py, so float32 results agree bit for bit with the eager path
        out1 = tl.fma(x2, -sin1, x1 * cos1)
        out2 = tl.fma(x1, sin2, x2 * cos2)

    y_base = y_ptr + b * syb + h * syh + t[:, None] * syt
    tl.store(y_base + d[None, :] * syd, out1.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(y_base + (d[None, :] + HALF) * syd, out2.to(y_ptr.dtype.element_ty), mask=mask)


def _launch(
    src: torch.Tensor, dst: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backward: bool
):
    B, H, T, D = src.shape
    if src.numel() == 0:
        return
    # (T, D) tables: batch stride 0; (B, 1, T, D): the batch and the last two axes' strides
    table_strides = (0, *cos.stride()) if cos.dim() == 2 else (cos.stride(0), *cos.stride()[2:])
    half = D // 2
    block_d = max(triton.next_power_of_2(half), 2)
    # about 4K elements per half-tile; the interpreter prefers fewer, bigger programs too
    block_t = max(1, min(triton.next_power_of_2(T), max(1, 4096 // block_d)))
    grid = (B * H, triton.cdiv(T, block_t))
    _rope_kernel[grid](
        src, dst, cos, sin,
        H, T, half,
        *src.stride(), *dst.stride(), *table_strides,
        BACKWARD=backward, BLOCK_T=block_t, BLOCK_D=block_d,
    )  # fmt: skip


class RoPEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin):
        y = torch.empty_like(x)  # empty_like keeps x's memory layout
        _launch(x, y, cos, sin, backward=False)
        ctx.save_for_backward(cos, sin)
        return y

    @staticmethod
    def backward(ctx, dy):
        cos, sin = ctx.saved_tensors
        dx = torch.empty_like(dy)
        _launch(dy, dx, cos, sin, backward=True)
        return dx, None, None


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, D), cos/sin: (T, D) or (B, 1, T, D) -> (B, H, T, D) in x's dtype.

    The tables are read in their own dtype and everything is computed in float32 (the eager path
    first rounds the tables to x's dtype; for bf16 the kernel is the more accurate of the two).
    Differentiable in x; cos/sin are treated as constants (they are, in a model).
    """
    check_rope(x, cos, sin)
    expect_dtype("x", x, KERNEL_DTYPES)
    expect_dtype("cos", cos, KERNEL_DTYPES + ("float64",))
    expect_dtype("sin", sin, KERNEL_DTYPES + ("float64",))
    if cos.device != x.device or sin.device != x.device:
        raise ValueError(f"cos/sin: expected device {x.device}, got {cos.device} and {sin.device}")
    if cos.stride() != sin.stride():  # the kernel walks both tables with cos's strides
        cos, sin = cos.contiguous(), sin.contiguous()
    return RoPEFunction.apply(x, cos, sin)
