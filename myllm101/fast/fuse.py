"""Fused projections for inference: fewer, wider GEMMs over the same weights.

    fuse_for_inference(model)   q/k/v_proj -> qkv_proj, gate/up_proj -> gate_up_proj (in place)
    unfuse(model)               the inverse: the original modules, bitwise the same weights

A decoding step multiplies one token's activations by every weight matrix (a GEMV per Linear),
so its time is the time to read the weights plus a fixed cost per call (dispatch, Python, the
thread pool waking up). Reading q, k and v's weights in one call (and gate and up's) leaves the
bytes read unchanged and removes 3 of the 7 GEMV calls of every LLaMA layer:

    qkv_proj.weight     = cat(q_proj.weight, k_proj.weight, v_proj.weight)   # ((H + 2 Hkv) D, C)
    gate_up_proj.weight = cat(gate_proj.weight, up_proj.weight)              # (2 I, C)

and the forward splits the output into views (fast/attention.py ``MultiHeadAttention``,
fast/llama.py ``LlamaMLP``). Each output element is still one dot product of the same row with
the same x, so the fused model computes the same function; float32 results agree to rounding (the
BLAS may block a wider GEMM differently), see tests/test_fast_decode.py. GPT-2 is fused already
(``attn.c_attn``).

Contract (one way, inference only): the fused model's ``state_dict`` names the fused modules
(``...self_attn.qkv_proj.weight``, ``...mlp.gate_up_proj.weight``), not Hugging Face's; to
save or train, ``unfuse(model)`` first. The fused modules are plain ``fast.linear.Linear``
(an ``nn.Linear``), so whole-model quantization that swaps ``nn.Linear`` modules by name quantizes
them like any other projection. A quantized model's ``Int8Linear`` projections fuse too: their
codes and scales are per output row, so the fused module holds the same rows, codes and scales
stacked, and computes the same function (the int8 decode's 7 calls per layer become 4). The
fused quantized model is for running only: its ``quantization["modules"]`` still names the
separate projections, so ``unfuse`` before saving it. The old weights are freed, not kept beside
the fused ones.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from myllm101.fast.attention import MultiHeadAttention
from myllm101.fast.int8 import Int8Linear
from myllm101.fast.linear import Linear
from myllm101.fast.llama import LlamaMLP

QKV, GATE_UP = ("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj")


def fuse_linears(linears: list[nn.Module]) -> nn.Module:
    """One Linear whose output is the given Linears' outputs side by side (same input width);
    per-channel ``Int8Linear`` modules of one mode give one such ``Int8Linear``."""
    first = linears[0]
    if not _fusable(linears):
        kinds = [type(m).__name__ for m in linears]
        raise ValueError(
            f"fuse: expected nn.Linear or Int8Linear modules (fuse before quantizing to int4), "
            f"got {kinds}"
        )
    if any(m.in_features != first.in_features for m in linears):
        widths = [m.in_features for m in linears]
        raise ValueError(f"fuse: expected Linears with one input width, got {widths}")
    has_bias = first.bias is not None
    if any((m.bias is not None) != has_bias for m in linears):
        raise ValueError("fuse: expected all Linears with a bias or none, got a mix")
    if isinstance(first, Int8Linear):
        return _fuse_int8(linears)
    w = first.weight
    out = sum(m.out_features for m in linears)
    fused = Linear(first.in_features, out, bias=has_bias, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([m.weight for m in linears], dim=0))  # (sum out, in)
        if has_bias:
            fused.bias.copy_(torch.cat([m.bias for m in linears], dim=0))
    fused.requires_grad_(w.requires_grad)
    return fused


def _fuse_int8(linears: list[Int8Linear]) -> Int8Linear:
    """Int8Linears stacked by output row: codes, scales and biases concatenated (per-row scales
    only, one mode: each row keeps its own codes and scale, so nothing is re-quantized)."""
    if any(m.mode != linears[0].mode for m in linears):
        raise ValueError(f"fuse: expected Int8Linears of one mode, got {[m.mode for m in linears]}")
    if any(m.weight_scale.ndim != 1 for m in linears):
        raise ValueError(
            "fuse: expected per-channel Int8Linears (one scale per row), got a per-tensor one"
        )
    bias = None if linears[0].bias is None else torch.cat([m.bias for m in linears])
    q = torch.cat([m.weight_q for m in linears])  # (sum out, in) int8
    scale = torch.cat([m.weight_scale for m in linears])  # (sum out,)
    return Int8Linear(q, scale, bias, mode=linears[0].mode, kernels=linears[0].kernels)


def split_linear(fused: nn.Module, sizes: list[int]) -> list[nn.Module]:
    """The inverse of ``fuse_linears``: Linears (or Int8Linears) of ``sizes`` output features each."""
    rows_total = fused.out_features
    if sum(sizes) != rows_total:
        raise ValueError(f"unfuse: expected sizes summing to {rows_total} rows, got {sizes}")
    if isinstance(fused, Int8Linear):
        bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        b = fused.bias
        return [
            Int8Linear(fused.weight_q[lo:hi].clone(), fused.weight_scale[lo:hi].clone(),
                       None if b is None else b[lo:hi].clone(), fused.mode, fused.kernels)
            for lo, hi in zip(bounds, bounds[1:])
        ]  # fmt: skip
    w, b = fused.weight, fused.bias
    parts, lo = [], 0
    for rows in sizes:
        part = Linear(w.shape[1], rows, bias=b is not None, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            part.weight.copy_(w[lo : lo + rows])
            if b is not None:
                part.bias.copy_(b[lo : lo + rows])
        part.requires_grad_(w.requires_grad)
        parts.append(part)
        lo += rows
    return parts


def _replace(module: nn.Module, old: tuple[str, ...], new: str) -> None:
    setattr(module, new, fuse_linears([getattr(module, name) for name in old]))
    for name in old:
        delattr(module, name)  # the separate weights go (no second copy in memory)


def _restore(module: nn.Module, fused: str, names: tuple[str, ...], sizes: list[int]) -> None:
    for name, part in zip(names, split_linear(getattr(module, fused), sizes)):
        setattr(module, name, part)
    setattr(module, fused, None)


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Fuse every attention's q/k/v and every LLaMA MLP's gate/up projections, in place; returns
    ``model`` (in eval mode). Fusing a fused model changes nothing. See the module docstring for
    the contract (inference only; ``unfuse`` before saving)."""
    for module, old, new in _unfused_groups(model):
        _replace(module, old, new)
    return model.eval()


def _unfused_groups(model: nn.Module) -> list[tuple[nn.Module, tuple[str, ...], str]]:
    """(module, its separate projections' names, the fused name) for every group not yet fused."""
    out = []
    for module in model.modules():
        if isinstance(module, MultiHeadAttention) and module.qkv_proj is None:
            out.append((module, QKV, "qkv_proj"))
        elif isinstance(module, LlamaMLP) and module.gate_up_proj is None:
            out.append((module, GATE_UP, "gate_up_proj"))
    return out


def _fusable(linears: list[nn.Module]) -> bool:
    """All float Linears, or all Int8Linears (``fuse_linears`` says why anything else is not)."""
    return all(isinstance(m, nn.Linear) for m in linears) or all(
        isinstance(m, Int8Linear) for m in linears
    )


def fused_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with its projections fused, to run (``eval``'s speed, the benchmarks'
    speed rows); ``model`` itself where a group cannot fuse (int4 modules) or there is none."""
    groups = [[getattr(m, n) for n in old] for m, old, _ in _unfused_groups(model)]
    if not groups or not all(_fusable(group) for group in groups):
        return model
    return fuse_for_inference(copy.deepcopy(model))


def unfuse(model: nn.Module) -> nn.Module:
    """Split the fused projections back into q/k/v_proj and gate/up_proj (Hugging Face's
    state_dict names again), in place; returns ``model``."""
    for module in model.modules():
        if isinstance(module, MultiHeadAttention) and module.qkv_proj is not None:
            kv = module.n_kv_heads * module.head_dim
            sizes = [module.n_heads * module.head_dim, kv, kv]
            _restore(module, "qkv_proj", QKV, sizes)
        elif isinstance(module, LlamaMLP) and module.gate_up_proj is not None:
            half = module.gate_up_proj.out_features // 2
            _restore(module, "gate_up_proj", GATE_UP, [half, half])
    return model


def is_fused(model: nn.Module) -> bool:
    """True when some projection of ``model`` is fused (its state_dict is not HF-named)."""
    return any(
        getattr(m, "qkv_proj", None) is not None or getattr(m, "gate_up_proj", None) is not None
        for m in model.modules()
    )
