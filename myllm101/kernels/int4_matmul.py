"""int4 weight-only linear as a tiled Triton GEMM that dequantizes its weight tiles in registers.

Maps to ``reference/int4.py`` ``int4_linear`` / ``fast/int4.py`` ``int4_linear``, ``Int4Linear``:

    y = x @ dequantize_int4(packed, scale, g).T + bias
    x (M, K) fp16/bf16/fp32, packed (N, K / 2) uint8, scale (N, K / g), bias (N,) -> y (M, N)

Each program owns a (BLOCK_M, BLOCK_N) tile of y and walks the packed bytes of its rows in steps of
BLOCK_KH bytes (2 * BLOCK_KH input columns). Byte j holds column 2j in its low nibble and 2j + 1 in
its high one, so rather than interleave the two halves the kernel splits x the same way:

    x @ w.T = x[:, 0::2] @ w[:, 0::2].T + x[:, 1::2] @ w[:, 1::2].T
            = x_even @ ((low - 8) * s).T + x_odd @ ((high - 8) * s).T

with s = scale[n, 2j // g] (g is even, so both columns of a byte share a group). The weight goes
from memory to registers as 4 bits per value and never exists in float in memory.

Precision: the accumulator is float32. fp32 activations use IEEE fp32 dots (not TF32). bf16/fp16
activations meet the dequantized weight rounded to their dtype, as the eager path does (it
dequantizes to x's dtype); Triton's CPU interpreter computes ``tl.dot`` on bf16 operands wrongly
(see kernels/attention.py), so under it every dot runs on fp32 operands, and the output is written
in fp32 and rounded by torch (the interpreter rounds fp32 -> bf16 toward zero). Masked lanes load
x = 0 and scale = 0: they add nothing. Block sizes are fixed per problem size (no autotune).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from myllm101.checks import expect_dtype
from myllm101.checks.quant import check_int4_linear
from myllm101.kernels.dispatch import KERNEL_DTYPES, interpreting


@triton.jit
def _int4_linear_kernel(
    x_ptr, p_ptr, s_ptr, b_ptr, y_ptr,
    M, N, KH,
    sxm, sxk, spn, spj, ssn, ssg, sym, syn,
    GROUP: tl.constexpr, HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KH: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) rows of x / y
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) output features
    rj = tl.arange(0, BLOCK_KH)  # byte columns of the packed weight
    m_ok = rm < M
    n_ok = rn < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for j0 in range(0, KH, BLOCK_KH):
        jj = j0 + rj  # (BLOCK_KH,) byte j covers input columns 2j and 2j + 1
        j_ok = jj < KH
        x_mask = m_ok[:, None] & j_ok[None, :]
        x_rows = x_ptr + rm[:, None] * sxm
        x_even = tl.load(x_rows + (2 * jj)[None, :] * sxk, mask=x_mask, other=0.0)  # (BM, BKH)
        x_odd = tl.load(x_rows + (2 * jj + 1)[None, :] * sxk, mask=x_mask, other=0.0)
        # the weight read transposed, (BLOCK_KH, BLOCK_N), so that x @ w.T is a plain dot
        w_mask = j_ok[:, None] & n_ok[None, :]
        p = tl.load(p_ptr + rn[None, :] * spn + jj[:, None] * spj, mask=w_mask, other=0)
        s = tl.load(
            s_ptr + rn[None, :] * ssn + ((2 * jj) // GROUP)[:, None] * ssg, mask=w_mask, other=0.0
        ).to(tl.float32)  # (BKH, BN): one group scale per byte (both nibbles share it)
        w_even = ((p & 0x0F).to(tl.int32) - 8).to(tl.float32) * s  # low nibble: column 2j
        w_odd = ((p >> 4).to(tl.int32) - 8).to(tl.float32) * s  # high nibble: column 2j + 1
        if UPCAST:
            acc += tl.dot(x_even.to(tl.float32), w_even, input_precision="ieee")
            acc += tl.dot(x_odd.to(tl.float32), w_odd, input_precision="ieee")
        else:  # bf16 / fp16 on a GPU: the weight in x's dtype, fp32 accumulation
            acc += tl.dot(x_even, w_even.to(x_even.dtype))
            acc += tl.dot(x_odd, w_odd.to(x_odd.dtype))
    if HAS_BIAS:
        acc += tl.load(b_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    y_ptrs = y_ptr + rm[:, None] * sym + rn[None, :] * syn
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def _blocks(M: int, N: int, KH: int) -> tuple[int, int, int]:
    """Fixed tiles: 64-wide on a GPU-sized problem, the smallest legal (16) for tiny ones."""
    bm = min(64, max(16, triton.next_power_of_2(M)))
    bn = min(64, max(16, triton.next_power_of_2(N)))
    bkh = min(64, max(16, triton.next_power_of_2(KH)))
    return bm, bn, bkh


def int4_linear(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    group_size: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """x (..., K) @ dequantize_int4(packed, scale, group_size).T + bias -> (..., N) in x's dtype.

    packed (N, K // 2) uint8, scale (N, K // group_size) float, bias (N,) or None; x, scale and
    bias fp16, bf16 or fp32 (float64 stays on the eager path). Not differentiable.
    """
    check_int4_linear(x, packed, scale, group_size, bias)
    expect_dtype("x", x, KERNEL_DTYPES)
    expect_dtype("scale", scale, KERNEL_DTYPES)
    if bias is not None:
        expect_dtype("bias", bias, KERNEL_DTYPES)
    for name, t in (("packed", packed), ("scale", scale), ("bias", bias)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name}: expected device {x.device}, got {t.device}")
    N, KH = packed.shape
    x2 = x.reshape(-1, 2 * KH)  # (M, K)
    M = x2.shape[0]
    upcast = interpreting() or x.dtype == torch.float32
    out_dtype = torch.float32 if interpreting() else x.dtype
    y = torch.empty((M, N), dtype=out_dtype, device=x.device)
    if M and N:
        if KH == 0:
            y.zero_()
            if bias is not None:
                y += bias.to(out_dtype)
        else:
            bm, bn, bkh = _blocks(M, N, KH)
            grid = (triton.cdiv(M, bm), triton.cdiv(N, bn))
            with torch.no_grad():
                _int4_linear_kernel[grid](
                    x2, packed, scale, bias if bias is not None else y, y,
                    M, N, KH,
                    x2.stride(0), x2.stride(1), packed.stride(0), packed.stride(1),
                    scale.stride(0), scale.stride(1), y.stride(0), y.stride(1),
                    GROUP=group_size, HAS_BIAS=bias is not None, UPCAST=upcast,
                    BLOCK_M=bm, BLOCK_N=bn, BLOCK_KH=bkh,
                )  # fmt: skip
    return y.to(x.dtype).reshape(*x.shape[:-1], N)
