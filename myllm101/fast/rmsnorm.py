"""RMSNorm in PyTorch: y = x / sqrt(mean(x**2, -1) + eps) * weight.

Uses torch's fused ``F.rms_norm`` (one pass forward, one backward; it accumulates in float32 for
bf16 inputs), about 2x faster on CPU than the same math spelled as pow/mean/rsqrt/mul ops, and
torch.compile lowers it to a single fused kernel on GPU.

Dispatch: when ``myllm101.kernels.use_kernel`` says so (CUDA tensors and triton, or
``MYLLM101_KERNELS=on`` / ``kernels="on"``), float16/bfloat16/float32 inputs go to the Triton kernel
in ``kernels/rmsnorm.py`` instead; float64 always stays here.
"""

import torch
import torch.nn.functional as F
from torch import nn

from myllm101.checks import check_rmsnorm, expect_positive
from myllm101.kernels.dispatch import kernel_supports, use_kernel


def rmsnorm(
    x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, kernels: str | None = None
) -> torch.Tensor:
    """x: (..., C), weight: (C,) -> (..., C) in x's dtype. ``kernels``: "auto" | "on" | "off"."""
    check_rmsnorm(x, weight, eps)
    if kernel_supports(x) and use_kernel(x, weight, kernels=kernels):
        from myllm101.kernels.rmsnorm import rmsnorm as rmsnorm_kernel  # imports triton

        return rmsnorm_kernel(x, weight.to(x.dtype), eps)
    return rms_norm(x, weight, eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``rmsnorm``'s torch path, unchecked (the decode step's, fast/llama.py): torch's fused kernel
    with the weight in x's dtype."""
    return F.rms_norm(x, (x.shape[-1],), weight.to(x.dtype), eps)


class RMSNorm(nn.Module):
    def __init__(
        self, dim: int, eps: float = 1e-6, device=None, dtype=None, kernels: str | None = None
    ):
        super().__init__()
        expect_positive("dim", dim)
        expect_positive("eps", eps)
        self.eps = eps
        self.kernels = kernels  # None: follow $MYLLM101_KERNELS
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rmsnorm(x, self.weight, self.eps, kernels=self.kernels)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
