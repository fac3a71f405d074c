"""A NumPy training loop for the reference GPT: the same steps as myllm101/train/trainer.py.

    losses = train_gpt(ReferenceGPT(cfg, params), tokens, TrainSettings(steps=20, ...))

Per step: ``grad_accum`` micro-batches (``reference.data.random_window_batch``, index
step * grad_accum + m), gradients averaged, global-norm clipping, learning rate from ``lr_at``
(linear warm-up, then cosine / linear / constant), and AdamW with two groups like
``fast.optim.param_groups``: matrices decay, vectors (biases, norm scales) do not. Given the same
initial weights and seed, its losses equal the fast trainer's in float64 (see
parity_tests/test_reference_train.py). No dropout, no mixed precision: this is the readable twin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from myllm101.reference.data import random_window_batch
from myllm101.reference.optim import AdamW, clip_grad_norm


@dataclass
class TrainSettings:
    steps: int = 20
    seq_len: int = 16
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 0
    max_steps: int = 20  # the schedule's length (may exceed ``steps``)
    schedule: str = "cosine"
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 = off
    seed: int = 0


def lr_at(step: int, lr: float, min_lr: float, warmup: int, max_steps: int, kind: str) -> float:
    """Warm-up (step + 1) / warmup * lr, then decay to min_lr at step max_steps - 1."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if kind == "constant":
        return lr
    progress = min(1.0, (step - warmup) / max(1, max_steps - 1 - warmup))
    if kind == "linear":
        return lr + (min_lr - lr) * progress
    if kind == "cosine":
        return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"schedule: expected cosine, linear or constant, got {kind!r}")


def train_gpt(model, tokens: np.ndarray, s: TrainSettings) -> list[float]:
    """Train ``model`` (a ReferenceGPT, updated in place) for s.steps; returns each step's loss."""
    names = model.parameter_names()  # each array once (a tied head is the embedding)
    decay = [n for n in names if model.params[n].ndim >= 2]
    no_decay = [n for n in names if model.params[n].ndim < 2]
    groups = [(decay, AdamW([model.params[n] for n in decay], s.lr, s.betas, s.eps, s.weight_decay)),
              (no_decay, AdamW([model.params[n] for n in no_decay], s.lr, s.betas, s.eps, 0.0))]  # fmt: skip
    losses = []
    for step in range(s.steps):
        grads = {n: np.zeros_like(model.params[n]) for n in names}
        step_loss = 0.0
        for m in range(s.grad_accum):
            ids = random_window_batch(
                tokens, s.seq_len, s.batch_size, s.seed, step * s.grad_accum + m
            )
            _, loss, cache = model.forward(ids, labels=ids)
            g = model.backward(cache)
            for n in names:
                grads[n] += g[n] / s.grad_accum  # the mean over micro-batches
            step_loss += float(loss) / s.grad_accum
        losses.append(step_loss)
        flat = [grads[n] for n in names]
        if s.grad_clip > 0:
            flat, _ = clip_grad_norm(flat, s.grad_clip)
            grads = dict(zip(names, flat))
        lr = lr_at(step, s.lr, s.min_lr, s.warmup_steps, s.max_steps, s.schedule)
        for group_names, opt in groups:
            opt.lr = lr
            opt.step([grads[n] for n in group_names])
    return losses
