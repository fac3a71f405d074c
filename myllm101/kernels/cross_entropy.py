"""Fused softmax cross-entropy in Triton, chunked over the vocabulary, forward and backward.

Same semantics as ``myllm101.reference.loss`` (and ``fast.loss``): logits (..., V), class-index
targets (...), ``ignore_index``, label smoothing eps, reduction "mean" (over the rows not ignored)
or "sum"; every target ignored -> loss 0 and a zero gradient. For one row x (V,) with target t:

    lse      = log(sum_j exp(x_j))                  (online: running max + rescaled sum per chunk)
    loss_row = lse - (1 - eps) * x_t - eps * mean_j(x_j)
    dx_j     = softmax(x)_j - eps / V - (1 - eps) * [j == t]      (times dloss * reduction scale)

One program per row walks the V logits in chunks of BLOCK_V, so a 50k-word vocabulary never needs a
50k-wide register tile, and no (N, V) probability buffer exists at any time.

Memory choice: the forward keeps only the per-row lse (N floats) besides the logits autograd already
holds; the backward *recomputes* softmax chunk by chunk from them and writes dlogits. (Writing the
gradient in place into the logits during the forward, as Liger-Kernel does, would save the (N, V)
dlogits allocation too, but it destroys a tensor the caller may still read, e.g. to log or sample.)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from myllm101.checks import check_cross_entropy, check_targets, expect_dtype
from myllm101.kernels.dispatch import KERNEL_DTYPES, interpreting


@triton.jit
def _ce_kernel(
    x_ptr, stride_x, t_ptr, lse_ptr, loss_ptr, grad_ptr, stride_g, grad_scale_ptr,
    V, ignore_index, eps,
    COMPUTE_LOSS: tl.constexpr, WRITE_GRAD: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    """One row. COMPUTE_LOSS: pass 1, write lse and the row loss. WRITE_GRAD: pass 2, write dx
    (reading lse when pass 1 did not run). grad may alias x: each chunk is read before it is written.
    """
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_x
    t = tl.load(t_ptr + row)
    keep = t != ignore_index
    if COMPUTE_LOSS:
        m = float("-inf")  # running max
        l = 0.0  # running sum of exp(x - m)
        sum_x = 0.0  # for the label-smoothing term
        x_t = 0.0  # the target's logit
        for start in range(0, V, BLOCK_V):
            offs = start + tl.arange(0, BLOCK_V)
            ok = offs < V
            x = tl.load(x_row + offs, mask=ok, other=float("-inf")).to(tl.float32)
            m_new = tl.maximum(m, tl.max(x, 0))
            l = l * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)  # masked: exp(-inf) = 0
            m = m_new
            sum_x += tl.sum(tl.where(ok, x, 0.0), 0)
            x_t += tl.sum(tl.where(offs == t, x, 0.0), 0)
        lse = m + tl.log(l)
        loss = lse - (1.0 - eps) * x_t - eps * sum_x / V
        tl.store(lse_ptr + row, lse)
        tl.store(loss_ptr + row, tl.where(keep, loss, 0.0))
    else:
        lse = tl.load(lse_ptr + row)
    if WRITE_GRAD:
        row_scale = tl.where(keep, tl.load(grad_scale_ptr), 0.0)  # ignored rows: zero gradient
        g_row = grad_ptr + row * stride_g
        for start in range(0, V, BLOCK_V):
            offs = start + tl.arange(0, BLOCK_V)
            ok = offs < V
            x = tl.load(x_row + offs, mask=ok, other=0.0).to(tl.float32)
            g = tl.exp(x - lse) - eps / V - tl.where(offs == t, 1.0 - eps, 0.0)
            tl.store(g_row + offs, (g * row_scale).to(grad_ptr.dtype.element_ty), mask=ok)


def _block_v(V: int) -> int:
    return min(4096, triton.next_power_of_2(V))


def _launch(x, t, lse, loss, grad, grad_scale, ignore_index, eps, compute_loss, write_grad):
    N, V = x.shape
    if N == 0:
        return
    dummy = lse  # pointers that a pass does not touch still need a tensor
    _ce_kernel[(N,)](
        x, x.stride(0), t, lse, loss if loss is not None else dummy,
        grad if grad is not None else dummy, grad.stride(0) if grad is not None else 0,
        grad_scale if grad_scale is not None else dummy,
        V, ignore_index, float(eps),
        COMPUTE_LOSS=compute_loss, WRITE_GRAD=write_grad, BLOCK_V=_block_v(V),
    )  # fmt: skip


def _reduction_scale(t: torch.Tensor, ignore_index: int, reduction: str) -> torch.Tensor:
    """1 / max(count, 1) for "mean" (all ignored -> 0, not 0/0), 1 for "sum"; fp32 (1,) tensor."""
    if reduction == "sum":
        return torch.ones(1, dtype=torch.float32, device=t.device)
    count = (t != ignore_index).sum().clamp(min=1).float()
    return (1.0 / count).reshape(1)


class CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, t, ignore_index, eps, reduction):
        N = x.shape[0]
        lse = torch.empty(N, dtype=torch.float32, device=x.device)
        row_loss = torch.empty(N, dtype=torch.float32, device=x.device)
        _launch(x, t, lse, row_loss, None, None, ignore_index, eps, True, False)
        scale = _reduction_scale(t, ignore_index, reduction)
        ctx.save_for_backward(x, t, lse, scale)
        ctx.meta = (ignore_index, eps)
        loss = row_loss.sum() * scale[0]
        return loss if x.dtype in (torch.float16, torch.bfloat16) else loss.to(x.dtype)

    @staticmethod
    def backward(ctx, dloss):
        x, t, lse, scale = ctx.saved_tensors
        ignore_index, eps = ctx.meta
        # the interpreter rounds fp32 -> bf16 toward zero (GPUs: to nearest): there the kernel
        # writes fp32 and torch rounds once
        grad_dtype = torch.float32 if interpreting() else x.dtype
        grad = torch.empty(x.shape, dtype=grad_dtype, device=x.device)
        grad_scale = (dloss.float() * scale).reshape(1)
        _launch(x, t, lse, None, grad, grad_scale, ignore_index, eps, False, True)
        return grad.to(x.dtype), None, None, None, None


def cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """logits: (..., V) float32/bf16/fp16, targets: (...) int -> 0-d loss (float32 for half types)."""
    expect_dtype("logits", logits, KERNEL_DTYPES)
    check_cross_entropy(logits, targets, label_smoothing, reduction)
    V = logits.shape[-1]
    x = logits.reshape(-1, V)  # (N, V)
    if x.stride(-1) != 1:
        x = x.contiguous()
    t = targets.reshape(-1).to(device=x.device, dtype=torch.int64).contiguous()  # (N,)
    # eager only (one host sync; skipped while torch.compile traces). The kernel would read an
    # out-of-range target as "no target logit" and return a wrong loss silently
    if not torch.compiler.is_compiling():
        check_targets(t, V, ignore_index)
    return CrossEntropy.apply(x, t, int(ignore_index), float(label_smoothing), reduction)
