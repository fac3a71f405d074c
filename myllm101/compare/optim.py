"""One optimizer step, reference vs fast, on the parameters of a GPT (forward = one step).

The parameters are a few big arrays (each kind of matrix stacked over the layers), and they are
views into one flat buffer: the optimizer updates the views in place and the case returns the flat
buffer, so every parameter is compared without a copy in the timed call. The buffers are built on
the first call, so building the (realistic: 85M parameters, 340 MB per copy) cases is free.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from myllm101.compare import Case
from myllm101.fast import optim as fast
from myllm101.reference import optim as ref

# (layers, width): realistic is GPT-2 small's 12 blocks of width 768 (embeddings left out)
SHAPES = {"small": (2, 32), "realistic": (12, 768)}
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
SGD = dict(lr=0.1, momentum=0.9, weight_decay=0.01)
MAX_NORM = 1.0


def gpt_param_shapes(n_layer: int, C: int) -> list[tuple[int, ...]]:
    """Per block: qkv (C, 3C), attention out (C, C), MLP (C, 4C) and (4C, C), and 13C vector
    parameters (2 norms x (weight, bias), the four biases), stacked over the blocks."""
    L = n_layer
    return [(L, C, 3 * C), (L, C, C), (L, C, 4 * C), (L, 4 * C, C), (L, 13 * C)]


def _views(flat, shapes):
    """Consecutive views of a flat NumPy array or torch tensor, one per shape."""
    out, start = [], 0
    for shape in shapes:
        n = math.prod(shape)
        out.append(flat[start : start + n].reshape(shape))
        start += n
    return out


@functools.cache
def _initial(size: str, dtype: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat initial parameters and gradients, shared (read-only) by every variant."""
    n = sum(math.prod(s) for s in gpt_param_shapes(*SHAPES[size]))
    rng = np.random.default_rng(seed)
    params = rng.standard_normal(n, dtype=np.float64 if dtype == "float64" else np.float32)
    grads = rng.standard_normal(n, dtype=params.dtype)
    return params * 0.02, grads  # GPT-2's init scale


def _reference_runner(variant: str, size: str, dtype: str, seed: int):
    shapes = gpt_param_shapes(*SHAPES[size])
    state = {}

    def run() -> np.ndarray:
        if not state:
            p0, g = _initial(size, dtype, seed)
            flat = p0 if variant == "clip_grad_norm" else p0.copy()  # clipping leaves params alone
            params, grads = _views(flat, shapes), _views(g, shapes)
            if variant == "adamw":
                state["opt"] = ref.AdamW(params, **ADAMW)
            elif variant == "sgd":
                state["opt"] = ref.SGD(params, **SGD)
            state.update(flat=flat, grads=grads)
        if variant == "clip_grad_norm":
            _, total_norm = ref.clip_grad_norm(state["grads"], MAX_NORM)
            return np.asarray(total_norm)
        state["opt"].step(state["grads"])
        return state["flat"]

    return run


def _fast_runner(variant: str, size: str, dtype: str, seed: int):
    shapes = gpt_param_shapes(*SHAPES[size])
    state = {}

    def run() -> torch.Tensor:
        if not state:
            p0, g = _initial(size, dtype, seed)
            flat = torch.from_numpy(p0 if variant == "clip_grad_norm" else p0.copy())
            # nn.Parameter of a view shares its storage: stepping the parameters updates ``flat``
            params = [nn.Parameter(v) for v in _views(flat, shapes)]
            # the optimizers only read the gradients (shared with the reference, never written);
            # clipping scales them in place, so it gets its own copy
            flat_grad = torch.from_numpy(g.copy() if variant == "clip_grad_norm" else g)
            for p, gv in zip(params, _views(flat_grad, shapes)):
                p.grad = gv
            if variant == "adamw":
                state["opt"] = fast.make_adamw(params, **ADAMW)
            elif variant == "sgd":
                state["opt"] = fast.make_sgd(params, **SGD)
            state.update(flat=flat, params=params)
        if variant == "clip_grad_norm":
            return fast.clip_grad_norm(state["params"], MAX_NORM)
        state["opt"].step()
        return state["flat"]

    return run


def make_cases(size: str, dtype: str, seed: int) -> list[Case]:
    L, C = SHAPES[size]
    n = sum(math.prod(s) for s in gpt_param_shapes(L, C))
    shape = f"L={L} C={C} ({n / 1e6:.1f}M params)" if n >= 1e6 else f"L={L} C={C} ({n} params)"
    return [
        Case(
            "optim",
            variant,
            shape,
            ref_forward=_reference_runner(variant, size, dtype, seed),
            fast_forward=_fast_runner(variant, size, dtype, seed),
        )
        for variant in ("adamw", "sgd", "clip_grad_norm")
    ]
