"""RoPE (rotate-half layout) as one Triton kernel used for both directions.

Maps to ``reference/rope.py`` (``rope_forward`` / ``rope_backward``) and ``fast/rope.py``
(``apply_rope``). With x = [x1, x2] and the (T, D) tables split the same way:

    forward   y1 = x1 * cos1 - x2 * sin1        y2 = x2 * cos2 + x1 * sin2
    backward  dx1 = dy1 * cos1 + dy2 * sin2     dx2 = dy2 * cos2 - dy1 * sin1

i.e. y = x * cos + rotate_half(x) * sin and dx = dy * cos - rotate_half(dy * sin). For the usual
tables (cos1 == cos2, sin1 == sin2) the backward is the rotation by -theta. Both formulas are used
with the four half-tables separately, so any (T, D) tables give the reference's exact math.

One program handles a (BLOCK_T, D/2) tile of one (batch, head): it loads both halves once and
writes both. Strides are passed for every axis, so x may be a transposed view (B, T, H, D) -> (B,
H, T, D) without a copy.

In place: ``apply_rope(x, cos, sin, inplace=True)`` writes y into x. Each program reads its tile
before it writes the same tile, and no two programs touch the same elements, so the kernel itself
is safe in place; the backward needs only cos/sin, not x. It is still the caller's promise that
nothing else needs the old x: autograd's version counter raises if it does (x is marked dirty), and
a leaf that requires grad cannot be changed in place. The backward always writes a fresh dx: the
incoming gradient may be shared with other branches of the graph.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from myllm101.checks import expect_dtype, expect_ndim, expect_same_shape, expect_shape

KERNEL_DTYPES = ("float16", "bfloat16", "float32")


@triton.jit
def _rope_kernel(
    x_ptr, y_ptr, cos_ptr, sin_ptr,
    H, T, HALF,
    sxb, sxh, sxt, sxd,
    syb, syh, syt, syd,
    sct, scd,
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
    c_base = t[:, None] * sct
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
    half = D // 2
    block_d = max(triton.next_power_of_2(half), 2)
    # about 4K elements per half-tile; the interpreter prefers fewer, bigger programs too
    block_t = max(1, min(triton.next_power_of_2(T), max(1, 4096 // block_d)))
    grid = (B * H, triton.cdiv(T, block_t))
    _rope_kernel[grid](
        src, dst, cos, sin,
        H, T, half,
        *src.stride(), *dst.stride(), *cos.stride(),
        BACKWARD=backward, BLOCK_T=block_t, BLOCK_D=block_d,
    )  # fmt: skip


class RoPEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin, inplace: bool):
        y = x if inplace else torch.empty_like(x)  # empty_like keeps x's memory layout
        _launch(x, y, cos, sin, backward=False)
        if inplace:
            # the kernel wrote through a raw pointer: bump x's version counter by hand (as a
            # torch in-place op would), so stale saved copies of x are detected, and mark it dirty
            torch.autograd.graph.increment_version(x)
            ctx.mark_dirty(x)
        ctx.save_for_backward(cos, sin)
        return y

    @staticmethod
    def backward(ctx, dy):
        cos, sin = ctx.saved_tensors
        dx = torch.empty_like(dy)
        _launch(dy, dx, cos, sin, backward=True)
        return dx, None, None, None


def apply_rope(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inplace: bool = False
) -> torch.Tensor:
    """x: (B, H, T, D), cos/sin: (T, D) -> (B, H, T, D) in x's dtype (x itself when inplace).

    The tables are read in their own dtype and everything is computed in float32 (the eager path
    first rounds the tables to x's dtype; for bf16 the kernel is the more accurate of the two).
    Differentiable in x; cos/sin are treated as constants (they are, in a model).
    """
    expect_dtype("x", x, KERNEL_DTYPES)
    expect_ndim("x", x, 4)
    T, D = x.shape[-2], x.shape[-1]
    if D % 2 != 0:
        raise ValueError(f"head_dim: expected an even size (RoPE rotates pairs), got {D}")
    expect_shape("cos", cos, (T, D))
    expect_same_shape("cos", cos, "sin", sin)
    expect_dtype("cos", cos, KERNEL_DTYPES + ("float64",))
    expect_dtype("sin", sin, KERNEL_DTYPES + ("float64",))
    if cos.device != x.device or sin.device != x.device:
        raise ValueError(f"cos/sin: expected device {x.device}, got {cos.device} and {sin.device}")
    if inplace and x.is_leaf and x.requires_grad and torch.is_grad_enabled():
        # checked before the launch: autograd would refuse too, but only after the kernel wrote
        raise RuntimeError(
            "apply_rope(inplace=True): a leaf Variable that requires grad cannot be rotated in "
            "place; pass inplace=False or a non-leaf tensor"
        )
    return RoPEFunction.apply(x, cos, sin, inplace)
