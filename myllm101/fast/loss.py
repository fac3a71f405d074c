"""Cross-entropy in PyTorch: a log-softmax whose saved output becomes the gradient, or torch's
fused ``F.cross_entropy``.

Same semantics as ``myllm101.reference.loss``: logits (..., V), targets (...), ignore_index, label
smoothing, reduction "mean" or "sum". One rule differs from plain ``F.cross_entropy``: when every
target is ignored, "mean" returns 0.0 (and a zero gradient) instead of nan. That is why "mean" is
computed as sum / max(count, 1) rather than with torch's own "mean" (which divides by count).

bf16/fp16 logits (e.g. under torch.autocast) are upcast to float32 for the log-sum-exp and the
loss is returned in float32: a bf16 loss of ~10 would only resolve steps of 0.06.

Eager mode, no label smoothing: ``F.log_softmax`` once in forward, and backward turns those saved
log-probs into the gradient in place, softmax - onehot = exp(log p) - onehot, scaled per row
(``_CrossEntropySum``). torch's own ``F.cross_entropy`` backward instead zero-fills a fresh (N, V)
gradient for the NLL and writes a second fresh one for the log-softmax: at (2048, 8192) float32,
2 threads, forward + backward took 30 ms here against 62 ms (16k page faults against 49k: each
fresh 64 MB block is new pages from the OS). Also tried, slower than torch's fused kernel at (4096,
32000): ``logsumexp(x) - x.gather(t)`` under autograd, and a Function that never writes the
log-probs in forward. The in-place backward can run once per graph: a second backward through
it (``retain_graph=True``) raises autograd's "modified by an inplace operation" error. Under
torch.compile and with label smoothing, ``F.cross_entropy`` (Inductor fuses it).

Triton: when ``kernels.dispatch.use_kernel`` agrees (``MYLLM101_KERNELS`` or ``kernels=``; by
default only for CUDA tensors), ``cross_entropy`` runs the fused, vocabulary-chunked kernel of
``myllm101.kernels.cross_entropy`` instead (same semantics, no (N, V) softmax kept for backward).

The target-range check (``checks.check_targets``, shared with the reference) runs in eager mode
only: it needs the values on the host (one sync), so while torch.compile traces it is skipped, the
graph stays whole (fullgraph=True works) and a bad target surfaces as torch's own error (IndexError
on CPU, a device-side assert on CUDA).
"""

import torch
import torch.nn.functional as F

from myllm101.checks import check_cross_entropy, check_loss_options, check_targets
from myllm101.kernels.dispatch import kernel_supports, use_kernel


def cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    kernels: str | None = None,
) -> torch.Tensor:
    """logits: (..., V) float, targets: (...) int -> 0-d loss (float32 for half-precision logits).

    kernels: "auto" | "on" | "off" (None = $MYLLM101_KERNELS): use the fused Triton kernel
    (``myllm101.kernels.cross_entropy``) for float32/bf16/fp16 logits, see ``kernels/dispatch.py``.
    """
    check_cross_entropy(logits, targets, label_smoothing, reduction)
    if kernel_supports(logits) and use_kernel(logits, targets, kernels=kernels):
        from myllm101.kernels.cross_entropy import cross_entropy as fused  # imports triton lazily

        return fused(logits, targets, ignore_index, label_smoothing, reduction)
    V = logits.shape[-1]
    x = logits.reshape(-1, V)  # (N, V)
    t = targets.reshape(-1).long()  # (N,) F.cross_entropy wants int64 class indices
    if not torch.compiler.is_compiling():  # data-dependent: see the module docstring
        check_targets(t, V, ignore_index)
    if label_smoothing == 0.0 and not torch.compiler.is_compiling():
        total = _CrossEntropySum.apply(x, t, ignore_index)
    else:
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        total = F.cross_entropy(
            x, t, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction="sum"
        )
    if reduction == "sum":
        return total
    count = (t != ignore_index).sum()
    return total / count.clamp(min=1)  # all ignored: 0 / 1 = 0, not torch's 0 / 0 = nan


class _CrossEntropySum(torch.autograd.Function):
    """sum over kept rows of -log_softmax(x)[t]; x (N, V), t (N,) int64 -> 0-d (float32 for
    half-precision x). Backward reuses the saved log-probs as the gradient's memory (see above)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, t: torch.Tensor, ignore_index: int) -> torch.Tensor:
        half = x.dtype in (torch.float16, torch.bfloat16)
        logp = torch.log_softmax(x, -1, dtype=torch.float32 if half else None)  # (N, V)
        kept = t != ignore_index  # (N,)
        t = t.masked_fill(~kept, 0)[:, None]  # (N, 1): any valid column for ignored rows
        nll = -logp.gather(1, t).squeeze(1)  # (N,)
        ctx.save_for_backward(logp, t, kept)
        ctx.x_dtype = x.dtype
        return torch.where(kept, nll, 0.0).sum()  # where, not *: an ignored row may hold -inf

    @staticmethod
    def backward(ctx, dtotal: torch.Tensor):
        logp, t, kept = ctx.saved_tensors
        grad = logp.exp_()  # softmax, written over the log-probs (not needed again)
        grad.scatter_add_(1, t, grad.new_full(t.shape, -1.0))  # - onehot
        grad.mul_((kept * dtotal)[:, None])  # ignored rows -> 0, kept rows * dloss
        return grad.to(ctx.x_dtype), None, None


class CrossEntropyLoss(torch.nn.Module):
    def __init__(self, ignore_index: int = -100, label_smoothing: float = 0.0, reduction="mean"):
        super().__init__()
        check_loss_options(label_smoothing, reduction)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return cross_entropy(
            logits, targets, self.ignore_index, self.label_smoothing, self.reduction
        )

    def extra_repr(self) -> str:
        return (
            f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}, "
            f"reduction={self.reduction!r}"
        )
