"""Softmax and log-softmax in PyTorch along one dim: torch's fused, max-subtracting kernels.

One pass over the data each way (the max, the sum and the division are fused), against five NumPy
passes in the reference; the backward reuses the saved output, like the reference does.
"""

import torch

from myllm101.checks import expect_float, expect_in_range


def _check_dim(x: torch.Tensor, dim: int) -> None:
    expect_in_range("dim", dim, -x.ndim, x.ndim)


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """x: (..., K, ...) -> same shape and dtype, each slice along ``dim`` sums to 1."""
    expect_float("x", x)
    _check_dim(x, dim)
    return torch.softmax(x, dim)


def log_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """x: (..., K, ...) -> log(softmax(x)), same shape and dtype."""
    expect_float("x", x)
    _check_dim(x, dim)
    return torch.log_softmax(x, dim)
