"""RMSNorm as Triton kernels: y = x / sqrt(mean(x**2, -1) + eps) * weight.

Maps to ``reference/rmsnorm.py`` (``rmsnorm_forward`` / ``rmsnorm_backward``), same math:

- forward: one program per row; the row is loaded once, reduced in float32, and the inverse rms
  (one float32 per row) is saved for the backward, so the backward never recomputes the reduction.
- backward: each program walks a block of rows; per row
      x_hat = x * inv_rms,  dx = inv_rms * (dy*w - x_hat * mean(dy*w * x_hat))
  and it adds dy * x_hat into a float32 partial sum of dweight held in registers. The partial sums
  (one row per program) are summed by torch afterwards: a two-level reduction with no atomics,
  so the result is deterministic.

Any leading shape (flattened to rows), any C (the block is the next power of two, masked).
Compute is float32 for every input dtype; outputs are rounded once to x's (or weight's) dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from myllm101.checks import check_rmsnorm, expect_dtype
from myllm101.kernels.dispatch import KERNEL_DTYPES


@triton.jit
def _rmsnorm_fwd_kernel(
    x_ptr, w_ptr, y_ptr, inv_rms_ptr,
    stride_x, stride_y, C, eps,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_C)
    mask = cols < C
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)  # (BLOCK_C,)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    # masked lanes hold 0, so the sum is over the C real columns; divide by C, not BLOCK_C
    inv_rms = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / C + eps)
    y = x * inv_rms * w
    tl.store(y_ptr + row * stride_y + cols, y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(inv_rms_ptr + row, inv_rms)


@triton.jit
def _rmsnorm_bwd_kernel(
    dy_ptr, x_ptr, w_ptr, inv_rms_ptr, dx_ptr, dw_partial_ptr,
    stride_dy, stride_x, stride_dx, R, C, rows_per_program,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_C)
    mask = cols < C
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros((BLOCK_C,), dtype=tl.float32)  # this program's share of dweight
    row_start = pid * rows_per_program
    for i in range(0, rows_per_program):
        row = row_start + i
        if row < R:
            x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
            inv_rms = tl.load(inv_rms_ptr + row)
            x_hat = x * inv_rms
            dx_hat = dy * w
            # remove the component of dx_hat along x_hat (mean over the C real columns)
            dx = inv_rms * (dx_hat - x_hat * (tl.sum(dx_hat * x_hat, axis=0) / C))
            tl.store(dx_ptr + row * stride_dx + cols, dx.to(dx_ptr.dtype.element_ty), mask=mask)
            dw_acc += dy * x_hat
    tl.store(dw_partial_ptr + pid * C + cols, dw_acc, mask=mask)


def _block_c(C: int) -> int:
    return max(triton.next_power_of_2(C), 16)


def _num_warps(C: int) -> int:
    """More warps for wider rows (a 4096-wide float32 row is 16 KB); ignored by the interpreter."""
    return min(max(_block_c(C) // 256, 1), 16)


def _as_rows(t: torch.Tensor, C: int) -> torch.Tensor:
    """(..., C) -> (R, C) with unit column stride (a view when possible)."""
    t2 = t.reshape(-1, C)
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


def _num_programs(R: int, device: torch.device) -> int:
    """Backward programs: about one per SM (x4) on a GPU, a few under the interpreter."""
    if device.type == "cuda":
        target = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        target = 4  # the interpreter runs programs one by one; fewer, longer programs are faster
    return max(1, min(R, target))


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        C = x.shape[-1]
        x2 = _as_rows(x, C)  # (R, C)
        w = weight.contiguous()
        R = x2.shape[0]
        y = torch.empty((R, C), dtype=x.dtype, device=x.device)
        inv_rms = torch.empty(R, dtype=torch.float32, device=x.device)  # (R,)
        if R > 0:
            _rmsnorm_fwd_kernel[(R,)](
                x2, w, y, inv_rms, x2.stride(0), y.stride(0), C, eps,
                BLOCK_C=_block_c(C), num_warps=_num_warps(C),
            )  # fmt: skip
        ctx.save_for_backward(x2, w, inv_rms)
        ctx.x_shape = x.shape
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x2, w, inv_rms = ctx.saved_tensors
        R, C = x2.shape
        dy2 = _as_rows(dy, C)
        dx = torch.empty((R, C), dtype=x2.dtype, device=x2.device)
        programs = _num_programs(R, x2.device)
        rows_per_program = triton.cdiv(R, programs) if R else 0
        dw_partial = torch.zeros((programs, C), dtype=torch.float32, device=x2.device)
        if R > 0:
            _rmsnorm_bwd_kernel[(programs,)](
                dy2, x2, w, inv_rms, dx, dw_partial,
                dy2.stride(0), x2.stride(0), dx.stride(0), R, C, rows_per_program,
                BLOCK_C=_block_c(C), num_warps=_num_warps(C),
            )  # fmt: skip
        dweight = dw_partial.sum(dim=0).to(w.dtype)  # second level of the reduction: (C,)
        return dx.view(ctx.x_shape), dweight, None


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x: (..., C) float16/bfloat16/float32, weight: (C,) -> (..., C) in x's dtype.

    Differentiable in x and weight (dweight comes back in weight's dtype).
    """
    expect_dtype("x", x, KERNEL_DTYPES)
    expect_dtype("weight", weight, KERNEL_DTYPES)
    check_rmsnorm(x, weight, eps)
    if weight.device != x.device:
        raise ValueError(f"weight: expected device {x.device}, got {weight.device}")
    return RMSNormFunction.apply(x, weight, float(eps))
