"""Flash attention in Triton: forward and backward, causal / key-padding masks, grouped-query heads.

    out = softmax(q k^T * scale + mask) v        q (B, H, T, D), k/v (B, Hkv, S, D)

Same conventions as ``myllm101.reference.attention``: causal masking is aligned bottom-right (query
t sits at position S - T + t, the KV-cache case), ``key_padding_mask`` (B, S) is True for real keys,
a query row that sees no key outputs zeros with zero gradients, and query head h reads kv head
h // (H // Hkv).

Forward (one program per block of BLOCK_M query rows of one (batch, head)): walk the keys in blocks
of BLOCK_N with an *online softmax*: keep the running row max m, the running sum l of exp(s - m) and
the running output acc; when a new block raises the max, rescale l and acc by exp(m_old - m_new).
Only ``out`` and the log-sum-exp per row, lse = m + log(l), are saved for backward: never a (T, S)
matrix.

Backward recomputes p = exp(s - lse) block by block:
    delta = rowsum(dout * out)                  (one small pass, plain torch)
    dv   += p^T dout          dp = dout v^T      ds = p * (dp - delta)
    dk   += ds^T q * scale    dq += ds k * scale
Two kernels, so no atomics: one program per key block (dk, dv; it loops over the G query heads that
share the kv head, which sums their contributions for GQA) and one per query block (dq).

A row with every key masked gets lse = +inf, so exp(s - lse) = 0 everywhere: out = 0, no gradient.
A head dim D that is not a power of two is padded up to BLOCK_D with masked (zero) loads.

Precision: accumulators are float32. fp32 inputs use IEEE fp32 dots (not TF32, which would cost
~1e-3 relative error). Triton's CPU interpreter computes ``tl.dot`` on bf16 operands wrongly
(tested with triton 3.9), so under the interpreter bf16/fp16 operands are upcast to fp32 before
each dot; bf16 * bf16 products are exact in fp32, so this only changes the summation order. The
interpreter also rounds fp32 -> bf16 toward zero where GPUs round to nearest, so under it the output
is written in fp32 and rounded by torch and the in-kernel casts of p and ds round to nearest by hand
(``_cast``), so the interpreter's bf16 numbers are the GPU's.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from myllm101.checks import check_qkv, expect_dtype
from myllm101.kernels.dispatch import KERNEL_DTYPES, interpreting


@triton.jit
def _dot(a, b, UPCAST: tl.constexpr):
    """a @ b with a float32 accumulator; UPCAST: fp32 IEEE operands (see the module docstring)."""
    if UPCAST:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        out = tl.dot(a, b)
    return out


@triton.jit
def _cast(x, dtype: tl.constexpr, INTERPRET: tl.constexpr):
    """x.to(dtype), rounding to nearest even also in the interpreter (which truncates to bf16)."""
    if INTERPRET and dtype == tl.bfloat16:
        bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000  # round the low 16 bits away
        x = bits.to(tl.float32, bitcast=True)  # now exact in bf16: truncation cannot change it
    return x.to(dtype)


@triton.jit
def _scores_mask(offs_m, offs_n, T, S, pad_ptr, HAS_PAD: tl.constexpr, CAUSAL: tl.constexpr):
    """(BLOCK_M, BLOCK_N) bool: True where query offs_m may attend to key offs_n."""
    keep = (offs_m[:, None] < T) & (offs_n[None, :] < S)
    if CAUSAL:
        keep = keep & (offs_n[None, :] <= S - T + offs_m[:, None])  # bottom-right aligned
    if HAS_PAD:
        real = tl.load(pad_ptr + offs_n, mask=offs_n < S, other=0)  # (BLOCK_N,) int8
        keep = keep & (real[None, :] != 0)
    return keep


@triton.jit
def _attn_fwd_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, pad_ptr,
    sqb, sqh, sqt, sqd,
    skb, skh, sks, skd,
    svb, svh, svs, svd,
    sob, soh, sot, sod,
    spb,
    H, G, T, S, D, scale,
    HAS_PAD: tl.constexpr, CAUSAL: tl.constexpr, UPCAST: tl.constexpr, INTERPRET: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid_m, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    hk = h // G  # the kv head this query head reads
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # query rows
    offs_d = tl.arange(0, BLOCK_D)  # head dim, padded to a power of two
    d_ok = offs_d < D
    q = tl.load(
        q_ptr + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :] * sqd,
        mask=(offs_m[:, None] < T) & d_ok[None, :],
        other=0.0,
    )  # (BLOCK_M, BLOCK_D)
    k_base, v_base = k_ptr + b * skb + hk * skh, v_ptr + b * svb + hk * svh
    pad_row = pad_ptr + b * spb

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)  # running row max
    l_i = tl.zeros((BLOCK_M,), tl.float32)  # running sum of exp(s - m_i)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)  # running sum of exp(s - m_i) v
    hi = S
    if CAUSAL:  # keys after the last visible one of this block's last query are never needed
        hi = tl.minimum(S, S - T + (pid_m + 1) * BLOCK_M)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_mask = (offs_n[:, None] < S) & d_ok[None, :]
        k = tl.load(k_base + offs_n[:, None] * sks + offs_d[None, :] * skd, mask=kv_mask, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * svs + offs_d[None, :] * svd, mask=kv_mask, other=0.0)
        s = _dot(q, tl.trans(k), UPCAST) * scale  # (BLOCK_M, BLOCK_N)
        keep = _scores_mask(offs_m, offs_n, T, S, pad_row, HAS_PAD, CAUSAL)
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no key seen yet: avoid inf - inf
        alpha = tl.exp(m_i - m_safe)  # rescales what was accumulated under the old max
        p = tl.exp(s - m_safe[:, None])  # masked keys: exp(-inf) = 0
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(_cast(p, v.dtype, INTERPRET), v, UPCAST)
        m_i = m_new

    alive = l_i > 0.0
    out = acc / tl.where(alive, l_i, 1.0)[:, None]  # dead rows: acc = 0, so out = 0
    lse = tl.where(alive, m_i + tl.log(tl.where(alive, l_i, 1.0)), float("inf"))
    row_ok = offs_m < T
    tl.store(
        o_ptr + b * sob + h * soh + offs_m[:, None] * sot + offs_d[None, :] * sod,
        out.to(o_ptr.dtype.element_ty),
        mask=row_ok[:, None] & d_ok[None, :],
    )
    tl.store(lse_ptr + pid_bh * T + offs_m, lse, mask=row_ok)


@triton.jit
def _attn_bwd_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, pad_ptr, dk_ptr, dv_ptr,
    sqb, sqh, sqt, sqd,
    skb, skh, sks, skd,
    svb, svh, svs, svd,
    sdob, sdoh, sdot, sdod,
    spb,
    H, Hkv, G, T, S, D, scale,
    HAS_PAD: tl.constexpr, CAUSAL: tl.constexpr, UPCAST: tl.constexpr, INTERPRET: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """One program per (key block, batch, kv head); dk/dv are contiguous (B, Hkv, S, D) fp32."""
    pid_n, pid_bh = tl.program_id(0), tl.program_id(1)
    b, hk = pid_bh // Hkv, pid_bh % Hkv
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    kv_mask = (offs_n[:, None] < S) & d_ok[None, :]
    k = tl.load(
        k_ptr + b * skb + hk * skh + offs_n[:, None] * sks + offs_d[None, :] * skd,
        mask=kv_mask,
        other=0.0,
    )  # (BLOCK_N, BLOCK_D)
    v = tl.load(
        v_ptr + b * svb + hk * svh + offs_n[:, None] * svs + offs_d[None, :] * svd,
        mask=kv_mask,
        other=0.0,
    )
    pad_row = pad_ptr + b * spb
    dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    lo = 0
    if CAUSAL:  # query t sees key s only if t >= s - (S - T): earlier queries never see this block
        lo = tl.maximum(0, pid_n * BLOCK_N - (S - T))
    for g in range(0, G):  # the query heads sharing this kv head: their gradients add up
        h = hk * G + g
        q_base = q_ptr + b * sqb + h * sqh
        do_base = do_ptr + b * sdob + h * sdoh
        row_base = (b * H + h) * T
        for start_m in range(lo, T, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            q_mask = (offs_m[:, None] < T) & d_ok[None, :]
            q = tl.load(
                q_base + offs_m[:, None] * sqt + offs_d[None, :] * sqd, mask=q_mask, other=0.0
            )
            do = tl.load(
                do_base + offs_m[:, None] * sdot + offs_d[None, :] * sdod, mask=q_mask, other=0.0
            )
            lse = tl.load(lse_ptr + row_base + offs_m, mask=offs_m < T, other=float("inf"))
            delta = tl.load(delta_ptr + row_base + offs_m, mask=offs_m < T, other=0.0)
            s = _dot(q, tl.trans(k), UPCAST) * scale  # (BLOCK_M, BLOCK_N)
            keep = _scores_mask(offs_m, offs_n, T, S, pad_row, HAS_PAD, CAUSAL)
            p = tl.where(keep, tl.exp(s - lse[:, None]), 0.0)  # dead rows: lse = inf -> 0
            dv += _dot(tl.trans(_cast(p, do.dtype, INTERPRET)), do, UPCAST)
            dp = _dot(do, tl.trans(v), UPCAST)  # (BLOCK_M, BLOCK_N)
            ds = p * (dp - delta[:, None])
            dk += _dot(tl.trans(_cast(ds, q.dtype, INTERPRET)), q, UPCAST)
    out_off = pid_bh * S * D + offs_n[:, None] * D + offs_d[None, :]
    tl.store(dk_ptr + out_off, dk * scale, mask=kv_mask)
    tl.store(dv_ptr + out_off, dv, mask=kv_mask)


@triton.jit
def _attn_bwd_dq_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, pad_ptr, dq_ptr,
    sqb, sqh, sqt, sqd,
    skb, skh, sks, skd,
    svb, svh, svs, svd,
    sdob, sdoh, sdot, sdod,
    spb,
    H, G, T, S, D, scale,
    HAS_PAD: tl.constexpr, CAUSAL: tl.constexpr, UPCAST: tl.constexpr, INTERPRET: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """One program per (query block, batch, head); dq is contiguous (B, H, T, D) fp32."""
    pid_m, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    hk = h // G
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    q_mask = (offs_m[:, None] < T) & d_ok[None, :]
    q = tl.load(
        q_ptr + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :] * sqd,
        mask=q_mask,
        other=0.0,
    )
    do = tl.load(
        do_ptr + b * sdob + h * sdoh + offs_m[:, None] * sdot + offs_d[None, :] * sdod,
        mask=q_mask,
        other=0.0,
    )
    lse = tl.load(lse_ptr + pid_bh * T + offs_m, mask=offs_m < T, other=float("inf"))
    delta = tl.load(delta_ptr + pid_bh * T + offs_m, mask=offs_m < T, other=0.0)
    k_base, v_base = k_ptr + b * skb + hk * skh, v_ptr + b * svb + hk * svh
    pad_row = pad_ptr + b * spb
    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    hi = S
    if CAUSAL:
        hi = tl.minimum(S, S - T + (pid_m + 1) * BLOCK_M)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_mask = (offs_n[:, None] < S) & d_ok[None, :]
        k = tl.load(k_base + offs_n[:, None] * sks + offs_d[None, :] * skd, mask=kv_mask, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * svs + offs_d[None, :] * svd, mask=kv_mask, other=0.0)
        s = _dot(q, tl.trans(k), UPCAST) * scale
        keep = _scores_mask(offs_m, offs_n, T, S, pad_row, HAS_PAD, CAUSAL)
        p = tl.where(keep, tl.exp(s - lse[:, None]), 0.0)
        dp = _dot(do, tl.trans(v), UPCAST)
        ds = p * (dp - delta[:, None])
        dq += _dot(_cast(ds, k.dtype, INTERPRET), k, UPCAST)
    tl.store(
        dq_ptr + pid_bh * T * D + offs_m[:, None] * D + offs_d[None, :],
        dq * scale,
        mask=q_mask,
    )


def _blocks(T: int, S: int, D: int) -> tuple[int, int, int]:
    """Fixed block sizes from the problem size (no autotuning: it needs a GPU to time configs).

    At least 16 in every dot dimension (tl.dot's minimum on GPU); at most 64 rows/keys per block,
    which keeps the fp32 (BLOCK_M, BLOCK_D) accumulators in registers for D <= 128.
    """
    block_d = max(16, triton.next_power_of_2(D))
    cap = 64 if block_d <= 64 else 32
    block_m = min(cap, max(16, triton.next_power_of_2(T)))
    block_n = min(cap, max(16, triton.next_power_of_2(S)))
    return block_m, block_n, block_d


def _check_qkv(q, k, v, key_padding_mask, scale):
    """The shared attention checks, plus what only the kernel needs: a kernel dtype, one device."""
    expect_dtype("q", q, KERNEL_DTYPES)
    check_qkv(q, k, v, key_padding_mask, scale)
    devices = {str(t.device) for t in (q, k, v, key_padding_mask) if t is not None}
    if len(devices) != 1:
        raise ValueError(f"q, k, v, key_padding_mask: expected one device, got {sorted(devices)}")


def _strides(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(x.stride())


class FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, key_padding_mask, scale):
        B, H, T, D = q.shape
        Hkv, S = k.shape[1], k.shape[2]
        G = H // Hkv
        scale = 1.0 / D**0.5 if scale is None else float(scale)
        has_pad = key_padding_mask is not None
        # the pad mask as int8 (B, S); a 1-element dummy when absent (never read: HAS_PAD=False)
        pad = (
            key_padding_mask.to(torch.int8).contiguous()
            if has_pad
            else torch.zeros(1, dtype=torch.int8, device=q.device)
        )
        # the interpreter rounds fp32 -> bf16 toward zero (not to nearest, as GPUs do): there the
        # kernel writes fp32 and torch rounds once
        out_dtype = torch.float32 if interpreting() else q.dtype
        out = torch.empty(B, H, T, D, dtype=out_dtype, device=q.device)  # (B, H, T, D)
        lse = torch.empty(B * H, T, dtype=torch.float32, device=q.device)  # (B*H, T)
        BM, BN, BD = _blocks(T, S, D)
        upcast = interpreting() or q.dtype == torch.float32
        if T > 0 and S > 0 and B * H > 0:
            _attn_fwd_kernel[(triton.cdiv(T, BM), B * H)](
                q, k, v, out, lse, pad,
                *_strides(q), *_strides(k), *_strides(v), *_strides(out),
                pad.stride(0) if has_pad else 0,
                H, G, T, S, D, scale,
                HAS_PAD=has_pad, CAUSAL=bool(causal), UPCAST=upcast, INTERPRET=interpreting(),
                BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=BD,
            )  # fmt: skip
        elif T > 0:  # no keys at all: every row is dead
            out.zero_()
            lse.fill_(float("inf"))
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse, pad)
        ctx.meta = (bool(causal), has_pad, scale, upcast)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse, pad = ctx.saved_tensors
        causal, has_pad, scale, upcast = ctx.meta
        B, H, T, D = q.shape
        Hkv, S = k.shape[1], k.shape[2]
        G = H // Hkv
        # delta = rowsum(dout * out): the softmax backward's per-row correction, (B*H, T) fp32
        delta = (dout.float() * out.float()).sum(-1).reshape(B * H, T)
        dq = torch.zeros(B, H, T, D, dtype=torch.float32, device=q.device)
        dk = torch.zeros(B, Hkv, S, D, dtype=torch.float32, device=q.device)
        dv = torch.zeros(B, Hkv, S, D, dtype=torch.float32, device=q.device)
        BM, BN, BD = _blocks(T, S, D)
        if T > 0 and S > 0 and B * H > 0:
            common = (
                *_strides(q), *_strides(k), *_strides(v), *_strides(dout),
                pad.stride(0) if has_pad else 0,
            )  # fmt: skip
            flags = dict(HAS_PAD=has_pad, CAUSAL=causal, UPCAST=upcast, INTERPRET=interpreting())
            flags.update(BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=BD)
            _attn_bwd_dkdv_kernel[(triton.cdiv(S, BN), B * Hkv)](
                q, k, v, dout, lse, delta, pad, dk, dv, *common,
                H, Hkv, G, T, S, D, scale, **flags,
            )  # fmt: skip
            _attn_bwd_dq_kernel[(triton.cdiv(T, BM), B * H)](
                q, k, v, dout, lse, delta, pad, dq, *common,
                H, G, T, S, D, scale, **flags,
            )  # fmt: skip
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """q: (B, H, T, D), k/v: (B, Hkv, S, D), key_padding_mask: (B, S) bool -> (B, H, T, D).

    float32, bfloat16 or float16; differentiable in q, k and v.
    """
    _check_qkv(q, k, v, key_padding_mask, scale)
    return FlashAttention.apply(q, k, v, causal, key_padding_mask, scale)
