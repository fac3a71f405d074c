"""GPTQ in PyTorch: the reference's algorithm (its docstring has the math), vectorised over the
output rows, on the weight's device, plus the calibration side: forward hooks that collect each
linear layer's H = 2/N X.T X.

The column loop is inherent to GPTQ (column i is quantized only after every earlier error reached
it); what makes it fast is how little happens per column. The weight is held transposed, (in,
out), so a column is one contiguous row; each column then costs a divide, a round, a clamp, one
``addcmul`` for its error and one rank-1 update ``addr_`` of the rows left in its block, all on
contiguous memory and written into preallocated rows (no temporaries), and the errors owed to
later blocks are applied by one GEMM per block. This runs 2.4-3.4x faster than the NumPy reference
on SmolLM2's layer shapes (float32, one thread). H^-1 and its Cholesky factor come from
``torch.linalg`` (``cholesky_inverse`` reuses H's factor). Computes in float64 if w or H is
float64, else float32 (bf16 and fp16 weights are upcast); the scale is returned in w's dtype,
and q and scale are contiguous (out, ...) tensors.

    H = collect_hessians(model, batches, ["layers.0.mlp.up_proj"])["layers.0.mlp.up_proj"]
    q, scale = gptq_quantize_linear(model.layers[0].mlp.up_proj, H, group_size=64)
"""

from __future__ import annotations

import torch
from torch import nn

from myllm101.checks.quant import (
    INT4_MAX,
    INT4_MIN,
    check_gptq,
    check_hessian_update,
    gptq_not_positive_definite,
)
from myllm101.fast.int4 import quantize_int4


@torch.no_grad()
def hessian_update(H: torch.Tensor | None, n: int, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """H (in, in) or None, n rows so far, x (..., in) -> (2/n' * sum_rows x.T x, n' = n + N)."""
    check_hessian_update(H, n, x)
    x2 = x.reshape(-1, x.shape[-1])  # (N, in)
    if H is None:
        dtype = torch.promote_types(x.dtype, torch.float32)
        H = torch.zeros(x2.shape[1], x2.shape[1], dtype=dtype, device=x.device)
    total = n + x2.shape[0]
    if total == 0:
        return H, 0
    x2 = x2.to(H.dtype)
    # H * n/total + 2/total * x.T x, in place on a copy of H
    H = torch.addmm(H, x2.t(), x2, beta=n / total, alpha=2.0 / total)
    return H, total


def _rtn_scales(w: torch.Tensor, group_size: int, dtype: torch.dtype) -> torch.Tensor:
    """(out, k * g) -> (k, out): round-to-nearest's scales (``quantize_int4``), transposed,
    rounded to the stored dtype and back."""
    _, scale = quantize_int4(w, group_size)  # (out, k)
    return scale.t().to(dtype).to(w.dtype)


def _inverse_cholesky(H: torch.Tensor, damp: float) -> torch.Tensor:
    """(in, in) -> U upper with U.T @ U = (H + damp * mean(diag H) I)^-1."""
    H = H + damp * H.diagonal().mean() * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    L, info = torch.linalg.cholesky_ex(H)  # H = L L.T
    if info.item() != 0:
        raise gptq_not_positive_definite(damp)
    Hinv = torch.cholesky_inverse(L)  # (in, in)
    U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
    if info.item() != 0:
        raise gptq_not_positive_definite(damp)
    return U


@torch.no_grad()
def gptq_quantize(
    w: torch.Tensor,
    H: torch.Tensor,
    group_size: int,
    damp: float = 0.01,
    block_size: int = 128,
    act_order: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """w (out, in) float, H (in, in) -> (q (out, in) int8 in [-8, 7], scale (out, in // g))."""
    check_gptq(w, H, group_size, damp, block_size)
    out_f, in_f = w.shape
    g = group_size
    work = torch.promote_types(torch.promote_types(w.dtype, H.dtype), torch.float32)
    W = w.to(work, copy=True)  # (out, in)
    H = H.to(device=w.device, dtype=work, copy=True)  # (in, in)

    dead = H.diagonal() == 0  # (in,) inputs that were always 0
    H.diagonal()[dead] = 1
    W[:, dead] = 0

    scaleT = torch.empty(in_f // g, out_f, dtype=work, device=w.device)  # (in // g, out)
    order = torch.arange(in_f, device=w.device)
    if act_order:  # static groups: round-to-nearest scales of the weights, then reorder
        scaleT[:] = _rtn_scales(W, g, w.dtype)
        order = torch.argsort(H.diagonal(), descending=True, stable=True)
        W, H = W[:, order], H[order][:, order]

    U = _inverse_cholesky(H, damp)  # (in, in) upper
    # transposed (and the scales too), so that a column of W is a contiguous row of WT: every
    # per-column step below reads and writes contiguous memory (a column of (out, in) is strided)
    WT = W.t().contiguous()  # (in, out)
    qT = torch.empty_like(WT)  # (in, out), codes in the processing order
    block = -(-block_size // g) * g  # rounded up to whole groups
    group_of = (order // g).tolist()  # the scale column of each processed column
    for b0 in range(0, in_f, block):
        b1 = min(b0 + block, in_f)
        W1 = WT[b0:b1]  # (B, out), a view: updated in place
        U1 = U[b0:b1, b0:b1]  # (B, B)
        ErrT = torch.empty_like(W1)  # (B, out) errors still owed to columns >= b1
        for j in range(b1 - b0):
            i = b0 + j
            if not act_order and i % g == 0:  # a group starts: its scale from today's weights
                scaleT[i // g] = _rtn_scales(W1[j : j + g].t(), g, w.dtype)[0]
            s = scaleT[group_of[i]]  # (out,)
            q_i = torch.div(W1[j], s, out=qT[i]).round_().clamp_(INT4_MIN, INT4_MAX)  # (out,)
            err = torch.addcmul(W1[j], q_i, s, value=-1, out=ErrT[j]).div_(U1[j, j])
            W1[j + 1 :].addr_(U1[j, j + 1 :], err, alpha=-1)  # this block: now
        WT[b1:].addmm_(U[b0:b1, b1:].t(), ErrT, alpha=-1)  # later blocks: one GEMM
    q = qT.t()  # (out, in)
    if act_order:
        q = q[:, torch.argsort(order)]  # back to the original column order
    return q.to(torch.int8).contiguous(), scaleT.t().to(w.dtype).contiguous()


def gptq_quantize_linear(
    linear: nn.Linear, H: torch.Tensor, group_size: int, **kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ for one linear layer: ``gptq_quantize(linear.weight, H, group_size, **kwargs)`` (damp,
    block_size, act_order) -> (q (out, in) int8, scale (out, in // g) in the weight's dtype)."""
    return gptq_quantize(linear.weight.detach(), H, group_size, **kwargs)


@torch.no_grad()
def collect_hessians(
    model: nn.Module,
    batches: list[torch.Tensor],
    names: list[str],
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Run ``model`` (in eval mode) on each batch of ids (B, T) and return, for each named linear
    module, H = 2/N X.T X (in, in) in ``dtype`` over the N = sum B * T rows X it received."""
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            linears = [k for k, m in modules.items() if isinstance(m, nn.Linear)]
            raise ValueError(f"names: no module {name!r} in the model (linear modules: {linears})")
        if not isinstance(modules[name], nn.Linear):
            raise ValueError(f"names: {name!r} is a {type(modules[name]).__name__}, not a Linear")
    if len(batches) == 0:
        raise ValueError("batches: expected at least one batch of ids (B, T), got none")

    state: dict[str, tuple[torch.Tensor | None, int]] = {name: (None, 0) for name in names}

    def hook_for(name: str):
        def hook(module, inputs, output):
            x = inputs[0].detach()
            state[name] = hessian_update(state[name][0], state[name][1], x.to(dtype))

        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in names]
    was_training = model.training
    try:
        model.eval()
        for batch in batches:
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: state[name][0] for name in names}
