"""Side-by-side runs of each component: the same inputs through the reference and the fast path.

Each module in this package builds ``Case`` objects for one component. The demo's parity table
(``myllm101 parity``) and the benchmarks (``benchmarks/``) both run these cases, so what is timed
is exactly what is checked. The thorough checks (hypothesis, finite differences) live in
``parity_tests/``; this is the short, always-on summary.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

# one module per component, named like the files in reference/ and fast/
COMPONENTS = (
    "linear",
    "embedding",
    "layernorm",
    "rmsnorm",
    "activations",
    "softmax",
    "loss",
    "dropout",
    "rope",
    "attention",
    "lora",
    "int8",
    "optim",
)
SIZES = ("small", "realistic")  # realistic: batch 8, seq 512, width 768, 12 heads


@dataclass
class Case:
    """One component variant at one size.

    ``ref_backward`` / ``fast_backward`` run forward *and* backward (what training pays for) and
    return a tuple of gradients, one per differentiable input, in the same order on both sides.
    They are None for components without a backward (e.g. an optimizer step).
    """

    component: str
    variant: str
    shape: str
    ref_forward: Callable[[], np.ndarray]
    fast_forward: Callable[[], torch.Tensor]
    ref_backward: Callable[[], tuple] | None = None
    fast_backward: Callable[[], tuple] | None = None

    @property
    def name(self) -> str:
        return (
            self.component if self.variant == self.component else f"{self.component}.{self.variant}"
        )


def torch_dtype(dtype: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[dtype]


def leaf(a: np.ndarray, requires_grad: bool = True) -> torch.Tensor:
    """A torch leaf tensor holding a copy of ``a`` (so the fast path never shares reference memory)."""
    t = torch.from_numpy(np.array(a, copy=True))
    return t.requires_grad_(requires_grad) if t.is_floating_point() else t


def grads_of(out: torch.Tensor, inputs: tuple[torch.Tensor, ...], dout: torch.Tensor) -> tuple:
    """Gradients of sum(out * dout) w.r.t. ``inputs``, without touching ``.grad``."""
    return torch.autograd.grad(out, inputs, dout)


def make_cases(component: str, size: str = "small", dtype: str = "float64", seed: int = 0):
    module = importlib.import_module(f"myllm101.compare.{component}")
    return module.make_cases(size=size, dtype=dtype, seed=seed)


def all_cases(size: str = "small", dtype: str = "float64", seed: int = 0) -> list[Case]:
    cases = []
    for component in COMPONENTS:
        try:
            cases += make_cases(component, size, dtype, seed)
        except ModuleNotFoundError as e:
            if e.name != f"myllm101.compare.{component}":
                raise
    return cases


def scaled_max_err(ref, fast) -> float:
    """max |ref - fast| / max |ref|: the worst error relative to the size of the values.

    Scaling by the largest value (not elementwise) keeps near-zero elements from dominating, and
    makes float32 sums over thousands of rows (e.g. a weight gradient) comparable across shapes.
    """
    a = np.asarray(ref.detach().cpu().numpy() if isinstance(ref, torch.Tensor) else ref, np.float64)
    b = np.asarray(
        fast.detach().cpu().numpy() if isinstance(fast, torch.Tensor) else fast, np.float64
    )
    if a.shape != b.shape:
        raise AssertionError(f"shape mismatch: reference {a.shape} vs fast {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))


def parity_row(case: Case) -> dict:
    """Scaled max error of the forward output and of every gradient, reference vs fast."""
    fwd = scaled_max_err(case.ref_forward(), case.fast_forward())
    bwd = None
    if case.ref_backward is not None:
        ref_g, fast_g = case.ref_backward(), case.fast_backward()
        bwd = max(scaled_max_err(r, f) for r, f in zip(ref_g, fast_g, strict=True))
    return {"name": case.name, "shape": case.shape, "forward": fwd, "backward": bwd}
