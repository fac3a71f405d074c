"""Learning-rate schedules: linear warm-up, then cosine / linear decay to min_lr, or constant.

    lr_at(step, lr=1e-3, min_lr=1e-4, warmup=100, max_steps=1000, kind="cosine")

Step s (0-based) trains with lr_at(s): warm-up (s + 1) / warmup * lr for s < warmup, so the first
step is not wasted on lr 0; then the decay, which reaches min_lr at s = max_steps - 1.
"""

from __future__ import annotations

import math

import torch

KINDS = ("cosine", "linear", "constant")


def lr_at(step: int, lr: float, min_lr: float, warmup: int, max_steps: int, kind: str) -> float:
    if kind not in KINDS:
        raise ValueError(f"schedule: expected one of {KINDS}, got {kind!r}")
    if step < warmup:
        return lr * (step + 1) / warmup
    if kind == "constant":
        return lr
    progress = min(1.0, (step - warmup) / max(1, max_steps - 1 - warmup))  # 0 -> 1
    if kind == "linear":
        return lr + (min_lr - lr) * progress
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer, lr, min_lr, warmup, max_steps, kind
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR giving every param group lr_at(step) (the groups' base lr must be ``lr``)."""
    lr_at(0, lr, min_lr, warmup, max_steps, kind)  # validates kind
    factor = lambda s: lr_at(s, lr, min_lr, warmup, max_steps, kind) / lr if lr > 0 else 0.0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
