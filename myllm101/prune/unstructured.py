"""Prune a whole model's weights to zeros: magnitude, Wanda or 2:4 (the shapes stay the same).

    masks = prune_unstructured(model, "magnitude", 0.5)                  # each Linear: 50% zeros
    masks = prune_unstructured(model, "magnitude", 0.5, scope="global")  # 50% of all of them
    masks = prune_unstructured(model, "wanda", 0.5, calib_batches=batches)   # per output row
    masks = prune_unstructured(model, "2:4", calib_batches=batches)      # 2 of every 4 inputs
    keeper = keep_masks(model, masks, optimizer)   # (fast/prune.py) recovery training keeps them

Methods (scores and masks from fast/prune.py; the math is in reference/prune.py):

| method    | score                          | scope "layer"                  | scope "global"          |
|-----------|--------------------------------|--------------------------------|-------------------------|
| magnitude | abs(W)                         | the lowest s of each matrix    | the lowest s of all     |
| wanda     | abs(W) * input norms (calib.)  | the lowest s of each row       | the lowest s of all     |
| 2:4       | wanda with calib., else abs(W) | 2 of every 4 consecutive inputs kept, per row (s = 0.5) |

Wanda compares the weights of one output row with each other, as in its paper (Sun et al. 2023):
an output's inputs share its scale, while different outputs and layers need not. The input norms
come from one pass of the dense model over the calibration batches (forward hooks on the targets);
the paper's code instead feeds each layer the outputs of the already pruned layers before it.

Targets: by default every ``nn.Linear`` inside the transformer blocks (the children of the model's
``nn.ModuleList``: "layers.*" in LLaMA and BERT, "h.*" in GPT-2), not the embeddings and not
the LM head (often tied to the embedding, and the layer whose errors reach the logits undamped).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from myllm101.checks.prune import check_sparsity
from myllm101.fast.prune import (
    InputNormAccumulator,
    apply_masks,
    global_masks,
    magnitude_scores,
    nm_mask,
    unstructured_mask,
    wanda_scores,
)

METHODS = ("magnitude", "wanda", "2:4")
SCOPES = ("layer", "global")


def block_linears(model: nn.Module) -> list[str]:
    """Names of every ``nn.Linear`` inside a ``nn.ModuleList`` of the model (its blocks)."""
    modules = dict(model.named_modules())
    lists = [name for name, m in modules.items() if isinstance(m, nn.ModuleList) and name]
    return [
        name
        for name, m in modules.items()
        if isinstance(m, nn.Linear) and any(name.startswith(p + ".") for p in lists)
    ]


def check_targets(model: nn.Module, targets: Sequence[str] | None) -> list[str]:
    """``targets`` (None: ``block_linears``) as a list of Linear module names of ``model``."""
    modules = dict(model.named_modules())
    if targets is None:
        names = block_linears(model)
        if not names:
            raise ValueError(
                f"targets: the {type(model).__name__} has no nn.Linear inside an nn.ModuleList of "
                f"blocks; pass the module names to prune"
            )
        return names
    if isinstance(targets, str) or len(targets) == 0:
        raise ValueError(f"targets: expected a non-empty list of module names, got {targets!r}")
    for name in targets:
        if name not in modules:
            linears = [k for k, m in modules.items() if isinstance(m, nn.Linear)]
            shown = ", ".join(linears[:6]) + (f", ... ({len(linears)})" if len(linears) > 6 else "")
            raise ValueError(f"targets: no module {name!r} in the model (linear modules: {shown})")
        if not isinstance(modules[name], nn.Linear):
            raise ValueError(
                f"targets: {name!r} is a {type(modules[name]).__name__}, expected an nn.Linear"
            )
    return list(targets)


@torch.no_grad()
def collect_input_norms(
    model: nn.Module, batches: Sequence[torch.Tensor] | torch.Tensor, targets: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Run ``model`` (in eval mode) on each batch of ids (B, T) and return, for each named Linear,
    the L2 norm of each of its input features over every token it received: {name: (in,)}
    (float32; float64 for a float64 model)."""
    names = check_targets(model, targets)
    if isinstance(batches, torch.Tensor):
        batches = [batches]
    if len(batches) == 0:
        raise ValueError("calib_batches: expected at least one batch of ids (B, T), got none")
    modules = dict(model.named_modules())
    accs = {name: InputNormAccumulator() for name in names}
    handles = [modules[name].register_forward_hook(accs[name].hook) for name in names]
    device = next(model.parameters()).device
    was_training = model.training
    try:
        model.eval()
        for batch in batches:
            model(batch.to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: acc.norms() for name, acc in accs.items()}


def check_prune_options(method: str, sparsity: float | None, scope: str, has_calib: bool) -> None:
    """A known method and scope; sparsity in [0, 1) (2:4: None or 0.5); Wanda has calibration."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {list(METHODS)}, got {method!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope: expected one of {list(SCOPES)}, got {scope!r}")
    if method == "2:4":
        if sparsity is not None and sparsity != 0.5:
            raise ValueError(
                f"sparsity: method '2:4' prunes exactly 0.5 (2 of every 4), got {sparsity!r}"
            )
        if scope != "layer":
            raise ValueError(
                f"scope: method '2:4' works per group of 4 (scope 'layer'), got {scope!r}"
            )
    else:
        check_sparsity(sparsity)
    if method == "wanda" and not has_calib:
        raise ValueError(
            "calib_batches: method 'wanda' needs calibration batches of ids (B, T) for its input "
            "norms, got None"
        )


@torch.no_grad()
def prune_unstructured(
    model: nn.Module,
    method: str,
    sparsity: float | None = None,
    scope: str = "layer",
    calib_batches: Sequence[torch.Tensor] | torch.Tensor | None = None,
    targets: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Prune ``model``'s target Linears in place and return their keep-masks {name: (out, in)
    bool} (True = kept). See the module docstring for the methods; magnitude ignores
    ``calib_batches``."""
    check_prune_options(method, sparsity, scope, calib_batches is not None)
    names = check_targets(model, targets)
    modules = dict(model.named_modules())
    norms = None
    if method != "magnitude" and calib_batches is not None:
        norms = collect_input_norms(model, calib_batches, names)

    def scores_of(name: str) -> torch.Tensor:
        weight = modules[name].weight
        return magnitude_scores(weight) if norms is None else wanda_scores(weight, norms[name])

    if method == "2:4":
        masks = {}
        for name in names:
            try:
                masks[name] = nm_mask(scores_of(name), 2, 4)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
    elif scope == "global":
        masks = global_masks({name: scores_of(name) for name in names}, sparsity)
    else:  # per layer: Wanda per output row, magnitude per matrix
        per_row = method == "wanda"
        masks = {name: unstructured_mask(scores_of(name), sparsity, per_row) for name in names}
    apply_masks(model, masks)
    return masks
