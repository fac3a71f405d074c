"""Optimizers in NumPy: SGD with momentum, AdamW (Loshchilov & Hutter, 2019), gradient clipping.

Each ``step(grads)`` updates the parameter arrays IN PLACE, like ``torch.optim`` does, with the same
math as torch's default (non-fused) code path:

    SGD:    g = grad + wd * p
            buf = g (first step) or momentum * buf + g;   p -= lr * buf

    AdamW:  p  -= lr * wd * p                      (decoupled weight decay: not part of the gradient)
            m   = b1 * m + (1 - b1) * g            (first moment)
            v   = b2 * v + (1 - b2) * g**2         (second moment)
            p  -= lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)   (bias-corrected)

``clip_grad_norm`` rescales all gradients together so that their global L2 norm is at most
``max_norm``, exactly like ``torch.nn.utils.clip_grad_norm_`` (coefficient max_norm / (norm + 1e-6),
capped at 1).
"""

from __future__ import annotations

import math

import numpy as np

from myllm101.checks import (
    check_adamw_options,
    check_sgd_options,
    expect_float,
    expect_positive,
    expect_same_shape,
)


def _check_params(params: list[np.ndarray]) -> list[np.ndarray]:
    params = list(params)
    for i, p in enumerate(params):
        expect_float(f"params[{i}]", p)
    return params


def _check_grads(params: list[np.ndarray], grads: list[np.ndarray]) -> list[np.ndarray]:
    """One gradient per parameter, each of its parameter's shape."""
    grads = list(grads)
    if len(grads) != len(params):
        raise ValueError(
            f"grads: expected {len(params)} arrays (one per parameter), got {len(grads)}"
        )
    for i, (p, g) in enumerate(zip(params, grads)):
        expect_same_shape(f"params[{i}]", p, f"grads[{i}]", g)
        expect_float(f"grads[{i}]", g)
    return grads


class SGD:
    """Stochastic gradient descent with (heavy-ball) momentum and L2 weight decay."""

    def __init__(
        self,
        params: list[np.ndarray],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ):
        check_sgd_options(lr, momentum, weight_decay)
        self.params = _check_params(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.momentum_buffers: list[np.ndarray | None] = [None] * len(self.params)

    def step(self, grads: list[np.ndarray]) -> None:
        grads = _check_grads(self.params, grads)
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if self.weight_decay:
                g = g + self.weight_decay * p  # L2 penalty: its gradient is wd * p
            if self.momentum:
                buf = self.momentum_buffers[i]
                # the first step starts the running sum at the gradient itself (as torch does)
                buf = g.copy() if buf is None else self.momentum * buf + g
                self.momentum_buffers[i] = buf
                g = buf
            p -= self.lr * g  # in place: the caller's array changes

    def state_dict(self) -> dict:
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "momentum_buffers": [None if b is None else b.copy() for b in self.momentum_buffers],
        }

    def load_state_dict(self, state: dict) -> None:
        bufs = state["momentum_buffers"]
        _check_state_arrays("momentum_buffers", self.params, bufs)
        self.lr, self.momentum = state["lr"], state["momentum"]
        self.weight_decay = state["weight_decay"]
        self.momentum_buffers = [None if b is None else b.copy() for b in bufs]


class AdamW:
    """Adam with decoupled weight decay, step for step what ``torch.optim.AdamW`` computes."""

    def __init__(
        self,
        params: list[np.ndarray],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ):
        check_adamw_options(lr, betas, eps, weight_decay)
        self.params = _check_params(params)
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay
        self.t = 0  # steps taken so far
        self.m = [np.zeros_like(p) for p in self.params]  # first moments (exp_avg)
        self.v = [np.zeros_like(p) for p in self.params]  # second moments (exp_avg_sq)

    def step(self, grads: list[np.ndarray]) -> None:
        grads = _check_grads(self.params, grads)
        b1, b2 = self.betas
        self.t += 1
        bias_correction1 = 1 - b1**self.t  # m is biased toward 0 early on: divide it out
        bias_correction2 = 1 - b2**self.t
        step_size = self.lr / bias_correction1
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            p *= 1 - self.lr * self.weight_decay  # decoupled decay shrinks p directly
            m[...] = b1 * m + (1 - b1) * g
            v[...] = b2 * v + (1 - b2) * (g * g)
            denom = np.sqrt(v) / math.sqrt(bias_correction2) + self.eps
            p -= step_size * (m / denom)

    def state_dict(self) -> dict:
        return {
            "lr": self.lr,
            "betas": self.betas,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "step": self.t,
            "exp_avg": [m.copy() for m in self.m],
            "exp_avg_sq": [v.copy() for v in self.v],
        }

    def load_state_dict(self, state: dict) -> None:
        _check_state_arrays("exp_avg", self.params, state["exp_avg"])
        _check_state_arrays("exp_avg_sq", self.params, state["exp_avg_sq"])
        self.lr, self.betas, self.eps = state["lr"], tuple(state["betas"]), state["eps"]
        self.weight_decay, self.t = state["weight_decay"], state["step"]
        self.m = [m.copy() for m in state["exp_avg"]]
        self.v = [v.copy() for v in state["exp_avg_sq"]]


def _check_state_arrays(name: str, params: list[np.ndarray], arrays: list) -> None:
    if len(arrays) != len(params):
        raise ValueError(
            f"{name}: expected {len(params)} arrays (one per parameter), got {len(arrays)}"
        )
    for i, (p, a) in enumerate(zip(params, arrays)):
        if a is not None:
            expect_same_shape(f"params[{i}]", p, f"{name}[{i}]", a)


def clip_grad_norm(grads: list[np.ndarray], max_norm: float) -> tuple[list[np.ndarray], float]:
    """-> (grads scaled by min(1, max_norm / (norm + 1e-6)), norm), norm = ||all grads||_2.

    Returns new arrays (the inputs are not modified) and the norm before clipping.
    """
    expect_positive("max_norm", max_norm)
    grads = list(grads)
    for i, g in enumerate(grads):
        expect_float(f"grads[{i}]", g)
    dtype = grads[0].dtype if grads else np.float64
    # one norm per array, then the norm of those norms (= the norm of everything concatenated)
    norms = np.array([np.sqrt(np.sum(g * g)) for g in grads], dtype=dtype)  # (len(grads),)
    total_norm = np.sqrt(np.sum(norms * norms))
    coef = min(max_norm / (total_norm + 1e-6), 1.0)  # 1e-6: no division by zero for zero grads
    return [g * np.asarray(coef, dtype=g.dtype) for g in grads], total_norm
