"""int8 x int8 -> int32 matmul as a tiled Triton GEMM, and the fused W8A8 linear.

Maps to ``reference/int8.py`` / ``fast/int8.py``:

- ``int8_matmul(a, b)``: a (M, K) int8, b (N, K) int8 -> a @ b.T (M, N) int32. Each program owns a
  (BLOCK_M, BLOCK_N) tile of the output, walks K in BLOCK_K steps and accumulates ``tl.dot`` of int8
  tiles in int32 (the tensor cores' int8 MMA on a GPU). Integer sums are exact, so the result is
  bit-identical to the reference while K * 127 * 127 < 2**31 (K < 133,000).
- ``int8_linear_rescale(a_q, a_scale, w_q, w_scale, bias)``: the same loop, then the epilogue
  ``y = float(acc) * (a_scale[m] * w_scale[n]) + bias[n]`` before the tile leaves registers, so the
  int32 (M, N) intermediate never goes to memory. This is ``w8a8_linear`` after its quantize step.

Block sizes are fixed per problem size (no autotune: several configs need a custom ``do_bench``
under the interpreter). ``tl.dot`` needs every block dim >= 16; edges are masked with zeros, which
add nothing to an integer sum.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from myllm101.checks import check_int8_operands, expect_dtype, expect_shape
from myllm101.kernels.dispatch import KERNEL_DTYPES


@triton.jit
def _int8_mm_kernel(
    a_ptr, b_ptr, c_ptr, a_scale_ptr, w_scale_ptr, bias_ptr,
    M, N, K,
    sam, sak, sbn, sbk, scm, scn, sas, sws,
    RESCALE: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) output rows
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) output columns
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        # a tile (BLOCK_M, BLOCK_K); b read as its transpose (BLOCK_K, BLOCK_N): c = a @ b.T
        a = tl.load(
            a_ptr + rm[:, None] * sam + kk[None, :] * sak,
            mask=(rm[:, None] < M) & (kk[None, :] < K),
            other=0,
        )
        b = tl.load(
            b_ptr + rn[None, :] * sbn + kk[:, None] * sbk,
            mask=(rn[None, :] < N) & (kk[:, None] < K),
            other=0,
        )
        acc = tl.dot(a, b, acc, out_dtype=tl.int32)  # int8 x int8 summed in int32: exact
    out_mask = (rm[:, None] < M) & (rn[None, :] < N)
    c_ptrs = c_ptr + rm[:, None] * scm + rn[None, :] * scn
    if RESCALE:
        # epilogue: per-token scale down the rows, per-channel scale across the columns
        sa = tl.load(a_scale_ptr + rm * sas, mask=rm < M, other=0.0).to(tl.float32)  # (BLOCK_M,)
        sw = tl.load(w_scale_ptr + rn * sws, mask=rn < N, other=0.0).to(tl.float32)  # (BLOCK_N,)
        y = acc.to(tl.float32) * (sa[:, None] * sw[None, :])
        if HAS_BIAS:
            y += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        tl.store(c_ptrs, y.to(c_ptr.dtype.element_ty), mask=out_mask)
    else:
        tl.store(c_ptrs, acc, mask=out_mask)


def _blocks(M: int, N: int, K: int) -> tuple[int, int, int]:
    """Fixed tiles: big ones on a GPU-sized problem, the smallest legal (16) for tiny ones."""
    bm = min(128, max(16, triton.next_power_of_2(M)))
    bn = min(128, max(16, triton.next_power_of_2(N)))
    bk = min(64, max(16, triton.next_power_of_2(K)))
    return bm, bn, bk


def _check_operands(a: torch.Tensor, b: torch.Tensor, a_name: str, b_name: str) -> None:
    """The shared int8 operand checks, plus one device."""
    check_int8_operands(a, b, a_name, b_name)
    if a.device != b.device:
        raise ValueError(f"{b_name}: expected device {a.device}, got {b.device}")


def _run(a, b, out, a_scale=None, w_scale=None, bias=None) -> torch.Tensor:
    M, K = a.shape
    N = b.shape[0]
    if M == 0 or N == 0:
        return out
    if K == 0:
        return out.zero_() if a_scale is None else out.copy_(_bias_or_zero(bias, out))
    bm, bn, bk = _blocks(M, N, K)
    rescale = a_scale is not None
    dummy = out  # never read when RESCALE / HAS_BIAS are off
    grid = (triton.cdiv(M, bm), triton.cdiv(N, bn))
    _int8_mm_kernel[grid](
        a, b, out,
        a_scale if rescale else dummy, w_scale if rescale else dummy,
        bias if bias is not None else dummy,
        M, N, K,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), out.stride(0), out.stride(1),
        a_scale.stride(0) if rescale else 0, w_scale.stride(0) if rescale else 0,
        RESCALE=rescale, HAS_BIAS=bias is not None,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
    )  # fmt: skip
    return out


def _bias_or_zero(bias, out: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(out) if bias is None else bias.to(out.dtype).expand_as(out)


def int8_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a: (M, K) int8, b: (N, K) int8 -> a @ b.T: (M, N) int32, exact. Not differentiable."""
    _check_operands(a, b, "a", "b")
    out = torch.empty((a.shape[0], b.shape[0]), dtype=torch.int32, device=a.device)
    return _run(a, b, out)


def int8_linear_rescale(
    a_q: torch.Tensor,
    a_scale: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """W8A8 GEMM with the rescale fused: (a_q @ w_q.T) * a_scale * w_scale + bias -> (M, N).

    a_q: (M, K) int8, a_scale: (M, 1) per token, w_q: (N, K) int8, w_scale: (N,) per channel or ()
    per tensor, bias: (N,) or None. The output has a_scale's dtype; the epilogue runs in float32.
    Inference only (no gradient), like ``fast.int8.w8a8_linear``.
    """
    _check_operands(a_q, w_q, "a_q", "w_q")
    M, N = a_q.shape[0], w_q.shape[0]
    expect_dtype("a_scale", a_scale, KERNEL_DTYPES)
    expect_shape("a_scale", a_scale, (M, 1))
    expect_dtype("w_scale", w_scale, KERNEL_DTYPES)
    if w_scale.ndim == 0:
        w_scale = w_scale.reshape(1).expand(N)  # stride 0: one scale for every column
    expect_shape("w_scale", w_scale, (N,))
    if bias is not None:
        expect_dtype("bias", bias, KERNEL_DTYPES)
        expect_shape("bias", bias, (N,))
        bias = bias.contiguous()
    out = torch.empty((M, N), dtype=a_scale.dtype, device=a_q.device)
    with torch.no_grad():
        return _run(a_q, w_q, out, a_scale.reshape(M), w_scale, bias)
