"""Linear layer in PyTorch: y = x @ w.T + b, weight (out, in) like ``nn.Linear``.

``F.linear`` is one GEMM with the bias folded in (addmm), and autocast runs it in bf16.

Mixed-precision inference: a float32 ``x`` meeting bf16/fp16 weights (a model cast to bf16, whose
residual stream stays float32) is cast to the weights' dtype, as autocast would cast both: the GEMM
runs at the weights' precision and speed, its output is in that dtype.
"""

import torch
import torch.nn.functional as F
from torch import nn

from myllm101.checks import check_linear_dtypes, check_linear_shapes
from myllm101.fast import cpu_gemm

REDUCED_DTYPES = (torch.bfloat16, torch.float16)


def to_weight_dtype(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x cast to w's dtype when x is float32 and w is bf16/fp16 (see above), else x unchanged."""
    return x.to(w.dtype) if x.dtype == torch.float32 and w.dtype in REDUCED_DTYPES else x


def to_module_dtype(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """``to_weight_dtype(x, module.weight)``; a module without a ``weight`` tensor (a quantized
    projection, LoRA over an int8 base) casts its input itself: x unchanged."""
    w = getattr(module, "weight", None)
    return to_weight_dtype(x, w) if isinstance(w, torch.Tensor) else x


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x: (..., in), w: (out, in), b: (out,) or None -> (..., out)."""
    check_linear_shapes(x, w, b)
    # under autocast torch casts x and w to one dtype itself; outside it they must already agree,
    # except for float32 activations with reduced-precision weights (cast down, see above)
    if not torch.is_autocast_enabled(x.device.type):
        x = to_weight_dtype(x, w)
        check_linear_dtypes(x, w, b)
    if cpu_gemm.routes(x, w):
        return cpu_gemm.train_linear(x, w, b)
    return F.linear(x, w, b)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, init and state dict) whose forward validates its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
