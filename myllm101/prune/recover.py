"""Recovery fine-tuning after pruning: a short causal-LM run that keeps the pruned weights at 0.

    batches = calibration_batches(tok, vocab, n_windows=64, seed=1)   # quant/heldout.py
    losses = recover(model, batches, steps=50, lr=2e-5, masks=masks)  # masks: prune_unstructured's

Every weight trains (full fine-tuning, AdamW from fast/optim.py, gradient clipping 1.0); with
``masks`` the pruned weights stay exactly 0 (``fast.prune.keep_masks``: their gradients are zeroed
and they are re-zeroed after every step). A structurally pruned model needs no masks: what was
removed is gone. The batches cycle in order; each step is one batch of ids (B, T), scored on
predicting every next token (the labels are the ids; the model shifts them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def recover(
    model: nn.Module,
    batches: Sequence[torch.Tensor],
    steps: int,
    lr: float = 2e-5,
    masks: dict[str, torch.Tensor] | None = None,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` in place for ``steps`` steps -> the loss of every step."""
    from tqdm import tqdm

    from myllm101.fast.optim import clip_grad_norm, make_adamw, param_groups
    from myllm101.fast.prune import keep_masks

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
    if not (isinstance(lr, float | int) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr: expected a finite float > 0, got {lr!r}")
    if len(batches) == 0:
        raise ValueError("batches: expected at least one batch of ids (B, T), got none")
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_adamw(param_groups(model, 0.0), lr=lr, weight_decay=0.0)
    keeper = keep_masks(model, masks, opt) if masks else None
    losses = []
    model.train()
    try:
        for step in tqdm(range(steps), desc="recovery", unit="step", disable=not progress):
            ids = batches[step % len(batches)]
            loss = model(ids, labels=ids).loss
            value = float(loss.detach())
            if not math.isfinite(value):
                raise ValueError(f"recovery step {step + 1}: the loss is {value}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            clip_grad_norm(params, 1.0)
            opt.step()
            losses.append(value)
    finally:
        if keeper is not None:
            keeper.remove()
        model.eval()
        for p, flag in flags:  # as they were
            p.requires_grad_(flag)
    return losses
