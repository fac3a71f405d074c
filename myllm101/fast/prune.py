"""Pruning in PyTorch: the reference's scores and keep-masks (reference/prune.py has the math and
the tie rule), on the weights' device, plus what a model needs around them: an accumulator of
input norms for calibration hooks, applying masks to named Linears, keeping pruned weights at
exactly 0 through training, and measuring sparsity.

    up = model.layers[0].mlp.up_proj
    acc = InputNormAccumulator()
    handle = up.register_forward_hook(acc.hook)        # run the calibration batches, remove it
    mask = unstructured_mask(wanda_scores(up.weight, acc.norms()), 0.5, per_row=True)
    apply_masks(model, {"layers.0.mlp.up_proj": mask})
    keeper = keep_masks(model, {"layers.0.mlp.up_proj": mask}, optimizer)   # then train
    keeper.remove()

Every function computes the same values in the same steps as its reference twin: masks are
identical (the k-th smallest score by ``torch.kthvalue``, then the same running count of ties),
scores equal to float rounding. Scores and masks are computed without autograd.
"""

from __future__ import annotations

import torch
from torch import nn

from myllm101.checks import expect_float
from myllm101.checks.prune import (
    check_head_scores,
    check_nm,
    check_norms_for,
    check_score_dict,
    check_scores,
    prune_count,
)

# --------------------------------------------------------------------------------------------------
# scores


@torch.no_grad()
def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """|W|: weight (out, in) -> (out, in)."""
    expect_float("weight", weight)
    return weight.abs()


def _sum_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 for float64, else float32 (sums of squares in bf16/fp16 lose digits or overflow)."""
    return torch.promote_types(x.dtype, torch.float32)


@torch.no_grad()
def input_norms(x: torch.Tensor) -> torch.Tensor:
    """||X_j||_2 over every token: x (..., in) -> (in,), float32 (float64 for float64 input)."""
    expect_float("x", x)
    if x.dim() == 0:
        raise ValueError(f"x: expected shape (..., in), got {tuple(x.shape)}")
    x2 = x.reshape(-1, x.shape[-1]).to(_sum_dtype(x))  # (N, in)
    return (x2 * x2).sum(dim=0).sqrt()


class InputNormAccumulator:
    """``input_norms`` over many batches: adds each batch's sum of squares per input feature,
    ``norms()`` takes the root at the end. ``hook`` is a forward hook for a Linear (it reads the
    module's input)."""

    def __init__(self) -> None:
        self.sum_sq: torch.Tensor | None = None  # (in,)
        self.rows = 0

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Add x (..., in)'s rows."""
        expect_float("x", x)
        if x.dim() == 0 or (self.sum_sq is not None and x.shape[-1] != self.sum_sq.shape[0]):
            want = "(..., in)" if self.sum_sq is None else f"(..., {self.sum_sq.shape[0]})"
            raise ValueError(f"x: expected shape {want}, got {tuple(x.shape)}")
        x2 = x.detach().reshape(-1, x.shape[-1]).to(_sum_dtype(x))  # (N, in)
        batch = (x2 * x2).sum(dim=0)  # (in,)
        self.sum_sq = batch if self.sum_sq is None else self.sum_sq + batch
        self.rows += x2.shape[0]

    def hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        """``module.register_forward_hook(acc.hook)``: accumulate the module's input."""
        self.update(inputs[0])

    def norms(self) -> torch.Tensor:
        """(in,) the L2 norm of each input feature over every row seen."""
        if self.sum_sq is None:
            raise ValueError("InputNormAccumulator: no inputs seen yet (run calibration first)")
        return self.sum_sq.sqrt()


@torch.no_grad()
def wanda_scores(weight: torch.Tensor, in_norms: torch.Tensor) -> torch.Tensor:
    """|W_ij| * ||X_j||_2: weight (out, in), in_norms (in,) -> (out, in)."""
    check_norms_for("weight", weight, "in_norms", in_norms)
    return weight.abs() * in_norms.to(weight.device)[None, :]


@torch.no_grad()
def column_norms(weight: torch.Tensor) -> torch.Tensor:
    """||W[:, j]||_2 for every input column j: (out, in) -> (in,), in float32 at least."""
    w = weight.to(_sum_dtype(weight))
    return (w * w).sum(dim=0).sqrt()


@torch.no_grad()
def neuron_scores(down_weight: torch.Tensor, hidden_norms: torch.Tensor) -> torch.Tensor:
    """SwiGLU hidden neuron j: hidden_norms[j] * ||down_weight[:, j]||_2; down_weight (C, I),
    hidden_norms (I,) (``input_norms`` of down_proj's input) -> (I,)."""
    check_norms_for("down_weight", down_weight, "hidden_norms", hidden_norms)
    return hidden_norms.to(down_weight.device) * column_norms(down_weight)


@torch.no_grad()
def head_scores(
    o_weight: torch.Tensor, o_in_norms: torch.Tensor, n_head: int, n_kv_head: int
) -> torch.Tensor:
    """One Wanda-style score per GQA group (kv head g with query heads g*G .. g*G + G - 1):
    o_weight (C, n_head * D), o_in_norms (n_head * D,) -> (n_kv_head,). See the reference."""
    check_head_scores(o_weight, o_in_norms, n_head, n_kv_head)
    s = o_in_norms.to(o_weight.device) * column_norms(o_weight)  # (n_head * D,)
    per_head = s.reshape(n_head, -1).sum(dim=1)  # (n_head,)
    return per_head.reshape(n_kv_head, n_head // n_kv_head).sum(dim=1)  # (n_kv_head,)


# --------------------------------------------------------------------------------------------------
# masks


@torch.no_grad()
def prune_lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask of each row of ``scores`` (R, n) with its k lowest entries pruned, ties pruned in
    column order (the reference's steps: k-th smallest t, all < t, the first ties == t)."""
    R, n = scores.shape
    if k == 0 or n == 0:
        return torch.ones(R, n, dtype=torch.bool, device=scores.device)
    t = torch.kthvalue(scores, k, dim=1, keepdim=True).values  # (R, 1) the k-th smallest
    below = scores < t  # (R, n)
    at = scores == t  # -0.0 == +0.0: zeros of either sign tie
    room = k - below.sum(dim=1, keepdim=True)  # (R, 1) how many of the ties go
    prune = below | (at & (at.cumsum(dim=1) <= room))
    return ~prune


@torch.no_grad()
def unstructured_mask(scores: torch.Tensor, sparsity: float, per_row: bool = False) -> torch.Tensor:
    """scores (out, in) -> keep-mask (out, in) bool, exactly round(sparsity * out * in) False
    (per_row: round(sparsity * in) in every row); the lowest scores, ties by flat index."""
    check_scores(scores)
    out_f, in_f = scores.shape
    if per_row:
        return prune_lowest(scores, prune_count(sparsity, in_f))
    flat = scores.reshape(1, -1)  # (1, out * in), row-major
    return prune_lowest(flat, prune_count(sparsity, flat.shape[1])).reshape(out_f, in_f)


@torch.no_grad()
def global_masks(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """{name: scores (out, in)} -> {name: keep-mask}: exactly round(sparsity * total) False over
    all matrices together; ties in the dict's order, then row-major."""
    check_score_dict(scores)
    k = prune_count(sparsity, sum(s.numel() for s in scores.values()))
    flat = torch.cat([s.reshape(-1) for s in scores.values()])[None, :]  # promotes to one dtype
    keep = prune_lowest(flat, k)[0]
    masks, start = {}, 0
    for name, s in scores.items():
        masks[name] = keep[start : start + s.numel()].reshape(s.shape)
        start += s.numel()
    return masks


@torch.no_grad()
def nm_mask(scores: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """scores (out, in) -> keep-mask: every group of m consecutive input columns of each row keeps
    its n largest (2:4 by default); ties pruned in column order."""
    check_scores(scores)
    out_f, in_f = scores.shape
    check_nm(n, m, in_f)
    groups = scores.reshape(-1, m)  # (out * in / m, m)
    return prune_lowest(groups, m - n).reshape(out_f, in_f)


# --------------------------------------------------------------------------------------------------
# masks on a model


def _weight_of(modules: dict[str, nn.Module], name: str, arg: str = "masks") -> torch.Tensor:
    """The 2-D ``weight`` of the module called ``name`` (a Linear, or a module wrapping one);
    errors name the argument ``arg`` that held the name."""
    if name not in modules:
        linears = [k for k, m in modules.items() if isinstance(m, nn.Linear)]
        shown = ", ".join(linears[:6]) + (
            f", ... ({len(linears)} in all)" if len(linears) > 6 else ""
        )
        raise ValueError(f"{arg}: no module {name!r} in the model (linear modules: {shown})")
    weight = getattr(modules[name], "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(
            f"{arg}: module {name!r} is a {type(modules[name]).__name__} without a 2-D weight "
            f"(expected a Linear)"
        )
    return weight


def _checked_pairs(
    model: nn.Module, masks: dict[str, torch.Tensor]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(weight, pruned)] for every named mask, all validated before anything changes; ``pruned``
    = ~mask on the weight's device."""
    modules = dict(model.named_modules())
    pairs = []
    for name, mask in masks.items():
        weight = _weight_of(modules, name)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"masks[{name!r}]: expected a bool tensor, got {got}")
        if tuple(mask.shape) != tuple(weight.shape):
            raise ValueError(
                f"masks[{name!r}]: expected shape {tuple(weight.shape)} (the module's weight), "
                f"got {tuple(mask.shape)}"
            )
        pairs.append((weight, ~mask.to(weight.device)))
    return pairs


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Set each named module's weight to 0 where its mask is False, in place (names are module
    names, e.g. "layers.0.mlp.up_proj"; masks (out, in) bool, True = keep). Exact zeros: a
    masked fill, not a product (inf * 0 would be NaN)."""
    for weight, pruned in _checked_pairs(model, masks):
        weight.masked_fill_(pruned, 0)


class MaskKeeper:
    """What ``keep_masks`` registered: the gradient hooks and the optimizer hook. ``remove()``
    undoes them (the weights keep their zeros)."""

    def __init__(self, handles: list) -> None:
        self.handles = handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def keep_masks(
    model: nn.Module,
    masks: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None = None,
) -> MaskKeeper:
    """Keep pruned weights exactly 0 through training: applies the masks now, then
    - zeros the gradient of every pruned weight (a hook on each weight), so an optimizer's state
      for it (Adam's moments, SGD's momentum) stays 0 and its update is 0;
    - re-zeros the pruned weights after every ``optimizer.step()`` (a step post-hook), so no
      optimizer rule (a decay, an update that is not 0 for a 0 gradient) can move them.
    Returns a handle; ``.remove()`` unregisters both. Frozen weights (requires_grad False) get no
    gradient hook. Call it after moving the model to its device (the masks are moved once, here).
    A LoRA adapter's update B @ A is dense: merging it into a pruned weight refills the zeros."""
    pairs = _checked_pairs(model, masks)
    apply_masks(model, masks)
    handles = []
    for weight, pruned in pairs:
        if weight.requires_grad:
            handles.append(weight.register_hook(lambda g, p=pruned: g.masked_fill(p, 0)))
    if optimizer is not None:

        @torch.no_grad()
        def rezero(opt, args, kwargs) -> None:
            for weight, pruned in pairs:
                weight.masked_fill_(pruned, 0)

        handles.append(optimizer.register_step_post_hook(rezero))
    return MaskKeeper(handles)


@torch.no_grad()
def sparsity_of(x: nn.Module | torch.Tensor, names: list[str] | None = None) -> float:
    """The fraction of exact zeros: of a tensor, or of a model's Linear weights (every
    ``nn.Linear``, or the modules in ``names``) together. 0.0 for nothing to count."""
    if isinstance(x, torch.Tensor):
        tensors = [x]
    elif isinstance(x, nn.Module):
        modules = dict(x.named_modules())
        if names is None:
            names = [k for k, m in modules.items() if isinstance(m, nn.Linear)]
        weights = [_weight_of(modules, name, "names") for name in names]
        tensors = list({id(w): w for w in weights}.values())  # a tied weight counts once
    else:
        raise ValueError(f"x: expected an nn.Module or a torch.Tensor, got {type(x).__name__}")
    total = sum(t.numel() for t in tensors)
    zeros = sum(int((t == 0).sum()) for t in tensors)
    return zeros / total if total else 0.0
