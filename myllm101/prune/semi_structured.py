"""2:4-pruned weights as torch's semi-structured sparse tensors: what makes 2:4 pay, on CUDA.

    masks = prune_unstructured(model, "2:4", calib_batches=batches)  # zeros in 2 of every 4 inputs
    model.to("cuda", torch.float16)
    report = to_semi_structured(model)      # {name: "sparse" | why it stays dense}; inference only

A 2:4 mask saves nothing in a dense GEMM: the zeros are multiplied like any other number. NVIDIA's
sparse tensor cores (Ampere and later) skip them: the weight is stored as its kept half plus 2-bit
positions and multiplied at up to twice the dense rate. torch exposes them as
``torch.sparse.to_sparse_semi_structured`` (CUTLASS, or cuSPARSELt where present), on CUDA only,
for 2-D contiguous float16 / bfloat16 weights (float32 and int8 on some backends) whose two
dimensions are multiples of the backend's minimum (CUTLASS float16: out % 32, in % 64). A Linear
whose weight does not qualify stays dense, and the report says why. CPUs have no such kernel:
there ``to_semi_structured`` refuses with the reason, and 2:4 models run dense (benchmarks/gpu.py
measures the CUDA speed; README's pruning table the CPU one).

Converting does not check the pattern on the GPU's side: a weight that is not 2:4 would be
compressed wrongly, so every weight is checked here first (``holds_two_four``).
"""

from __future__ import annotations

import torch
from torch import nn

from myllm101.prune.unstructured import block_linears

SPARSE_DTYPES = (torch.float16, torch.bfloat16)  # what every torch backend takes


def holds_two_four(w: torch.Tensor) -> bool:
    """Every group of 4 consecutive inputs of every row has at least 2 zeros. w (out, in)."""
    if w.dim() != 2 or w.shape[1] % 4:
        return False
    zeros = (w.detach().reshape(w.shape[0], -1, 4) == 0).sum(-1)  # (out, in / 4)
    return bool((zeros >= 2).all())


def min_shape(dtype: torch.dtype) -> tuple[int, int] | None:
    """(rows, cols) the weight's dims must be multiples of for torch's semi-structured tensor of
    this dtype (the CUTLASS backend's, the stricter one), or None if it takes no such dtype."""
    from torch.sparse import SparseSemiStructuredTensorCUTLASS as cutlass

    config = cutlass._DTYPE_SHAPE_CONSTRAINTS.get(dtype)
    return None if config is None else (config.sparse_min_rows, config.sparse_min_cols)


def why_dense(shape: tuple[int, ...], dtype: torch.dtype, device_type: str, two_four: bool) -> str:
    """Why a weight of this shape, dtype and device cannot be a semi-structured tensor; "" if it
    can. Pure: testable on a machine without a GPU."""
    if device_type != "cuda":
        return f"semi-structured sparse tensors need CUDA; the weight is on {device_type}"
    if dtype not in SPARSE_DTYPES:
        return f"dtype {str(dtype).removeprefix('torch.')}: expected float16 or bfloat16"
    if len(shape) != 2:
        return f"expected a 2-D weight, got shape {tuple(shape)}"
    rows, cols = min_shape(dtype)
    if shape[0] % rows or shape[1] % cols:
        return f"shape {tuple(shape)}: both dims must be multiples of ({rows}, {cols})"
    if not two_four:
        return "not 2:4 (a group of 4 inputs keeps more than 2 weights)"
    return ""


def to_semi_structured_tensor(w: torch.Tensor) -> torch.Tensor:
    """One 2:4 weight (out, in) on CUDA as a semi-structured sparse tensor; ValueError with the
    reason if it does not qualify (``why_dense``)."""
    reason = why_dense(tuple(w.shape), w.dtype, w.device.type, holds_two_four(w))
    if reason:
        raise ValueError(f"w: {reason}")
    from torch.sparse import to_sparse_semi_structured

    return to_sparse_semi_structured(w.detach().contiguous())


def to_semi_structured(model: nn.Module, names: list[str] | None = None) -> dict[str, str]:
    """Replace the weight of every qualifying Linear of the transformer blocks (``names``: these
    only) by a semi-structured sparse tensor, in place, frozen (inference only) -> {name:
    "sparse" or why it stayed dense}. Raises if nothing was converted, with the first reason."""
    targets = names if names is not None else block_linears(model)
    if not targets:
        raise ValueError("to_semi_structured: the model has no Linear in its blocks to convert")
    modules = dict(model.named_modules())
    report = {}
    for name in targets:
        linear = modules.get(name)
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"names: {name!r} is not a Linear of this model")
        w = linear.weight
        reason = why_dense(tuple(w.shape), w.dtype, w.device.type, holds_two_four(w))
        if not reason:
            linear.weight = nn.Parameter(to_semi_structured_tensor(w), requires_grad=False)
        report[name] = reason or "sparse"
    if all(v != "sparse" for v in report.values()):
        first = next(iter(report.items()))
        raise ValueError(f"to_semi_structured: no weight converted ({first[0]}: {first[1]})")
    return report
