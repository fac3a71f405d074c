"""Recovery fine-tuning after pruning: a short causal-LM run that ends with the pruned weights at 0.

    batches = calibration_batches(tok, vocab, n_windows=64, seed=1)   # quant/heldout.py
    losses = recover(model, batches, steps=50, lr=2e-5, masks=masks)  # masks: prune_unstructured's
    losses = recover_lora(model, batches, steps=50, lr=5e-4, masks=masks, r=8)
    print(mean_loss(model, batches[:4]))                              # before / after numbers

Two ways, both in place, both returning the loss of every training step:

- ``recover`` (full): every weight trains (AdamW from fast/optim.py, gradient clipping 1.0); with
  ``masks`` the pruned weights stay exactly 0 throughout (``fast.prune.keep_masks``: their
  gradients are zeroed and they are re-zeroed after every step).
- ``recover_lora``: the weights stay frozen; a LoRA adapter (finetune.run.prepare_model, rank r,
  on every Linear of the blocks) trains instead: (r * (in + out)) numbers per layer instead of
  in * out, so far less optimizer memory. After training each adapter is merged (W + (alpha/r) B A)
  and the layer turned back into a plain ``nn.Linear``; then the masks are applied again, so the
  pruned weights are exactly 0 in the saved model. The cost of that re-masking: B A is dense, and
  its entries at pruned positions (half of them at 50% sparsity) are dropped, so the saved model is
  not the one that was trained; ``recover_lora`` returns that difference too
  (``LoraRecovery.loss_unmasked`` vs the loss after re-masking, on the same batches).

A structurally pruned model needs no masks: what was removed is gone. The batches cycle in order;
each step is one batch of ids (B, T), scored on predicting every next token (labels = the ids; the
model shifts them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

RECOVER_METHODS = ("full", "lora")
DEFAULT_LR = {"full": 2e-5, "lora": 5e-4}


def _check(steps: int, lr: float, batches: Sequence[torch.Tensor]) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
    if not (isinstance(lr, float | int) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr: expected a finite float > 0, got {lr!r}")
    if len(batches) == 0:
        raise ValueError("batches: expected at least one batch of ids (B, T), got none")


@torch.no_grad()
def mean_loss(model: nn.Module, batches: Sequence[torch.Tensor]) -> float:
    """The mean next-token loss of ``model`` over ``batches`` (each (B, T) ids, equal weight)."""
    if len(batches) == 0:
        raise ValueError("batches: expected at least one batch of ids (B, T), got none")
    was_training = model.training
    model.eval()
    try:
        return sum(float(model(ids, labels=ids).loss) for ids in batches) / len(batches)
    finally:
        model.train(was_training)


def _train(model: nn.Module, opt, params: list, batches, steps: int, progress: bool) -> list[float]:
    """``steps`` AdamW steps on the batches in turn (clipping ``params`` to norm 1) -> losses."""
    from tqdm import tqdm

    from myllm101.fast.optim import clip_grad_norm

    losses = []
    model.train()
    for step in tqdm(range(steps), desc="recovery", unit="step", disable=not progress):
        ids = batches[step % len(batches)]
        loss = model(ids, labels=ids).loss
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ValueError(f"recovery step {step + 1}: the loss is {value}; lower --recover-lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm(params, 1.0)
        opt.step()
        losses.append(value)
    return losses


def recover(
    model: nn.Module,
    batches: Sequence[torch.Tensor],
    steps: int,
    lr: float = DEFAULT_LR["full"],
    masks: dict[str, torch.Tensor] | None = None,
    progress: bool = True,
) -> list[float]:
    """Full fine-tuning of ``model`` in place for ``steps`` steps -> the loss of every step."""
    from myllm101.fast.optim import make_adamw, param_groups
    from myllm101.fast.prune import keep_masks

    _check(steps, lr, batches)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_adamw(param_groups(model, 0.0), lr=lr, weight_decay=0.0)
    keeper = keep_masks(model, masks, opt) if masks else None
    try:
        return _train(model, opt, params, batches, steps, progress)
    finally:
        if keeper is not None:
            keeper.remove()
        model.eval()
        for p, flag in flags:  # as they were
            p.requires_grad_(flag)


@dataclass
class LoraRecovery:
    losses: list[float]  # every training step's loss
    loss_unmasked: float | None  # mean_loss(eval batches) after the merge, before re-masking


def _unwrap_lora(model: nn.Module) -> None:
    """Every (merged) LoRALinear back to a plain nn.Linear holding the merged weight, in place."""
    from myllm101.finetune.adapters import lora_modules

    for name, layer in lora_modules(model).items():
        parent_name, _, attr = name.rpartition(".")
        plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                          device=layer.weight.device, dtype=layer.weight.dtype)  # fmt: skip
        plain.weight = layer.weight
        if layer.bias is not None:
            plain.bias = layer.bias
        setattr(model.get_submodule(parent_name), attr, plain.train(layer.training))
    if hasattr(model, "lora_base_identity"):
        del model.lora_base_identity


def recover_lora(
    model: nn.Module,
    batches: Sequence[torch.Tensor],
    steps: int,
    lr: float = DEFAULT_LR["lora"],
    masks: dict[str, torch.Tensor] | None = None,
    r: int = 8,
    alpha: float | None = None,
    progress: bool = True,
    eval_batches: Sequence[torch.Tensor] | None = None,
) -> LoraRecovery:
    """LoRA recovery of ``model`` in place (module docstring): adapters of rank ``r`` (alpha
    default 2r) on every Linear of the blocks, ``steps`` steps, merged, unwrapped, re-masked.

    eval_batches: where ``loss_unmasked`` is measured (None: not measured). Afterwards ``model``
    has the same modules and parameter names as before, every pruned weight exactly 0."""
    from myllm101.fast.optim import make_adamw, param_groups
    from myllm101.fast.prune import apply_masks
    from myllm101.finetune.adapters import merge_lora
    from myllm101.finetune.run import prepare_model
    from myllm101.prune.unstructured import block_linears

    _check(steps, lr, batches)
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"r: expected an int >= 1, got {r!r}")
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    prepare_model(model, "sft", "lora", targets=block_linears(model), r=r,
                  alpha=float(2 * r if alpha is None else alpha), dropout=0.0,
                  recompute="none")  # fmt: skip
    params = [p for p in model.parameters() if p.requires_grad]  # the lora_A / lora_B factors
    opt = make_adamw(param_groups(model, 0.0), lr=lr, weight_decay=0.0)
    try:
        losses = _train(model, opt, params, batches, steps, progress)
    finally:
        merge_lora(model)  # W + (alpha / r) B A: dense, the zeros refilled
        _unwrap_lora(model)
        model.eval()
    unmasked = mean_loss(model, eval_batches) if eval_batches and masks else None
    if masks:
        apply_masks(model, masks)  # drops the merged update's entries at the pruned positions
    for name, p in model.named_parameters():
        p.requires_grad_(flags.get(name, False))
    return LoraRecovery(losses, unmasked)
