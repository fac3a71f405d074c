"""Structured pruning of a LLaMA: whole attention heads and MLP neurons, removed from the weights.

    remove_heads(model, layer=3, kv_groups=[0, 5])        # kv heads 0 and 5 with their query heads
    remove_neurons(model, layer=3, neurons=[7, 42, 99])  # SwiGLU hidden units
    report = prune_structured(model, heads=0.25, neurons=0.25, calib_batches=batches)

Unlike a mask (prune/unstructured.py), the pruned rows and columns are gone: every projection of
the layer is a smaller matrix, so each matmul does less work, the checkpoint is smaller, and the
model's config records the new per-layer sizes (``LlamaConfig.layer_n_head``, ``layer_n_kv_head``,
``layer_intermediate_size``), from which ``train.checkpoint.load_model`` rebuilds it.

Heads, GQA-aware. Query head h reads kv head h // G (G = n_head / n_kv_head query heads per kv
head), so the unit removed is a group: kv head g (rows g*D .. of k_proj and v_proj) together with
query heads g*G .. g*G + G - 1 (their rows of q_proj, their columns of o_proj). What remains is
again a GQA layer with G query heads per kv head, in the same order::

    q_proj (H*D, C) -> (H'*D, C)   k_proj, v_proj (Hkv*D, C) -> (Hkv'*D, C)   o_proj (C, H*D) -> (C, H'*D)

Neurons. SwiGLU's hidden unit j is row j of gate_proj and of up_proj and column j of down_proj;
removing it removes exactly its term from the layer's output::

    gate_proj, up_proj (I, C) -> (I', C)     down_proj (C, I) -> (C, I')

So a pruned model computes what the original computes with those heads' outputs (or neurons'
activations) set to zero (tests/test_prune_structured.py checks exactly that).

Importance (``prune_structured``): one pass of the dense model over calibration batches gives the
L2 norm of every input feature of o_proj and down_proj (``prune.unstructured.collect_input_norms``);
a neuron scores ||x_j|| * ||down[:, j]|| and a kv group the sum of that score over its query heads'
o_proj columns (fast/prune.py ``neuron_scores``, ``head_scores``: Wanda's |W| * ||x|| per unit).
In every layer the lowest fraction of groups and of neurons goes, at least one group and one neuron
staying. Scores come from the dense model; layers are not re-calibrated after earlier ones shrink.

Prune before fusing, quantizing or adding LoRA adapters: fused projections (fast/fuse.py) are
pruned too, other modules in place of a Linear are refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from myllm101.checks.prune import check_sparsity


def _llama(model: nn.Module):
    """The model, checked to be a fast Llama (``myllm101.fast.llama.Llama``)."""
    from myllm101.fast.llama import Llama

    if not isinstance(model, Llama):
        raise TypeError(
            f"model: expected a fast Llama (myllm101.fast.llama.Llama), got {type(model).__name__}"
        )
    return model


def _layer(model: nn.Module, layer) -> nn.Module:
    n = len(model.layers)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise ValueError(f"layer: expected an int in [0, {n}), got {layer!r}")
    return model.layers[layer]


def _indices(name: str, values, n: int, unit: str) -> list[int]:
    """``values``: distinct ints in [0, n), not all n of them -> sorted list."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name}: expected a list of ints, got {type(values).__name__}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
            raise ValueError(f"{name}: expected ints in [0, {n}) ({n} {unit}), got {v!r}")
    if len(set(values)) != len(values):
        dup = sorted({v for v in values if list(values).count(v) > 1})
        raise ValueError(f"{name}: expected distinct indices, got duplicates {dup}")
    if len(values) == n:
        raise ValueError(
            f"{name}: cannot remove all {n} {unit} of a layer (at least one must stay), "
            f"got {len(values)} indices"
        )
    return sorted(values)


def _check_linear(module: nn.Module, name: str) -> nn.Linear:
    if not isinstance(module, nn.Linear):
        raise ValueError(
            f"{name}: expected an nn.Linear (prune before quantizing or adding adapters), "
            f"got {type(module).__name__}"
        )
    return module


@torch.no_grad()
def _sliced(linear: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None):
    """A new Linear of the same class, holding ``linear``'s weight rows ``rows`` and columns
    ``cols`` (None = all); the bias follows the rows."""
    w, b = linear.weight, linear.bias
    if rows is not None:
        w = w[rows.to(w.device)]
        b = None if b is None else b[rows.to(w.device)]
    if cols is not None:
        w = w[:, cols.to(w.device)]
    out = type(linear)(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    out.weight.copy_(w)
    if b is not None:
        out.bias.copy_(b)
    out.requires_grad_(linear.weight.requires_grad)
    return out


def _units(keep: list[int], size: int) -> torch.Tensor:
    """Indices of the features of the kept units, each ``size`` features wide: [0, 2], 3 ->
    [0, 1, 2, 6, 7, 8]."""
    idx = torch.tensor(keep, dtype=torch.long)
    return (idx[:, None] * size + torch.arange(size)).reshape(-1)


def _sizes_with(of, n_layer: int, layer: int, value: int) -> list[int]:
    """[of(0), .., of(n_layer - 1)] with ``value`` at ``layer`` (a config's per-layer list)."""
    return [value if i == layer else of(i) for i in range(n_layer)]


def remove_heads(model: nn.Module, layer: int, kv_groups: Sequence[int]) -> nn.Module:
    """Remove kv heads ``kv_groups`` of layer ``layer`` and the query heads that read them from
    q/k/v/o_proj (or a fused qkv_proj), in place; the attention's n_heads / n_kv_heads and
    ``model.cfg`` (a new config with per-layer lists) follow. Returns ``model``.

    kv_groups: distinct kv head indices in [0, n_kv_heads), not all of them; [] changes nothing.
    """
    model = _llama(model)
    attn = _layer(model, layer).self_attn
    H, Hkv, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
    drop = _indices("kv_groups", kv_groups, Hkv, "kv heads")
    if not drop:
        return model
    G = H // Hkv
    keep = [g for g in range(Hkv) if g not in drop]
    q_heads = [g * G + j for g in keep for j in range(G)]  # query head h reads kv head h // G
    q_rows, kv_rows = _units(q_heads, D), _units(keep, D)  # (H' * D,), (Hkv' * D,)
    o_proj = _check_linear(attn.o_proj, f"layers.{layer}.self_attn.o_proj")
    if attn.qkv_proj is None:
        for name in ("q_proj", "k_proj", "v_proj"):
            _check_linear(getattr(attn, name), f"layers.{layer}.self_attn.{name}")
        attn.q_proj = _sliced(attn.q_proj, rows=q_rows)
        attn.k_proj = _sliced(attn.k_proj, rows=kv_rows)
        attn.v_proj = _sliced(attn.v_proj, rows=kv_rows)
    else:  # fused rows [q (H*D) | k (Hkv*D) | v (Hkv*D)] (fast/fuse.py)
        qkv = _check_linear(attn.qkv_proj, f"layers.{layer}.self_attn.qkv_proj")
        rows = torch.cat([q_rows, H * D + kv_rows, (H + Hkv) * D + kv_rows])
        attn.qkv_proj = _sliced(qkv, rows=rows)
    attn.o_proj = _sliced(o_proj, cols=q_rows)
    attn.n_heads, attn.n_kv_heads = len(q_heads), len(keep)
    cfg = model.cfg
    model.cfg = dataclasses.replace(
        cfg,
        layer_n_head=_sizes_with(cfg.n_head_of, cfg.n_layer, layer, len(q_heads)),
        layer_n_kv_head=_sizes_with(cfg.n_kv_head_of, cfg.n_layer, layer, len(keep)),
    )
    return model


def remove_neurons(model: nn.Module, layer: int, neurons: Sequence[int]) -> nn.Module:
    """Remove SwiGLU hidden units ``neurons`` of layer ``layer``: rows of gate_proj and up_proj
    (or of a fused gate_up_proj), columns of down_proj, in place; ``model.cfg`` follows (a new
    config with ``layer_intermediate_size``). Returns ``model``.

    neurons: distinct indices in [0, intermediate size), not all of them; [] changes nothing.
    """
    model = _llama(model)
    mlp = _layer(model, layer).mlp
    down = _check_linear(mlp.down_proj, f"layers.{layer}.mlp.down_proj")
    I = down.in_features
    drop = _indices("neurons", neurons, I, "neurons")
    if not drop:
        return model
    gone = set(drop)
    keep = torch.tensor([j for j in range(I) if j not in gone], dtype=torch.long)  # (I',)
    if mlp.gate_up_proj is None:
        for name in ("gate_proj", "up_proj"):
            _check_linear(getattr(mlp, name), f"layers.{layer}.mlp.{name}")
        mlp.gate_proj = _sliced(mlp.gate_proj, rows=keep)
        mlp.up_proj = _sliced(mlp.up_proj, rows=keep)
    else:  # fused rows [gate (I) | up (I)] (fast/fuse.py)
        gate_up = _check_linear(mlp.gate_up_proj, f"layers.{layer}.mlp.gate_up_proj")
        mlp.gate_up_proj = _sliced(gate_up, rows=torch.cat([keep, I + keep]))
    mlp.down_proj = _sliced(down, cols=keep)
    cfg = model.cfg
    sizes = _sizes_with(cfg.intermediate_size_of, cfg.n_layer, layer, len(keep))
    model.cfg = dataclasses.replace(cfg, layer_intermediate_size=sizes)
    return model


def _fraction(name: str, value) -> float:
    try:
        check_sparsity(value)
    except ValueError:
        raise ValueError(f"{name}: expected a float in [0, 1), got {value!r}") from None
    return float(value)


def lowest(scores: torch.Tensor, fraction: float) -> list[int]:
    """Indices of the round(fraction * n) lowest of ``scores`` (n,), at most n - 1 (one always
    stays), ties broken as fast/prune.py ``prune_lowest`` breaks them; sorted."""
    from myllm101.checks.prune import prune_count
    from myllm101.fast.prune import prune_lowest

    n = scores.shape[0]
    k = min(prune_count(fraction, n), n - 1)
    keep = prune_lowest(scores.reshape(1, n), k)[0]  # (n,) bool
    return torch.nonzero(~keep).reshape(-1).tolist()


def prune_structured(
    model: nn.Module,
    heads: float,
    neurons: float,
    calib_batches: Sequence[torch.Tensor] | torch.Tensor,
) -> dict:
    """Remove the lowest-scoring ``heads`` fraction of kv groups and ``neurons`` fraction of SwiGLU
    neurons in every layer (see the module docstring), in place.

    calib_batches: (B, T) token-id batches the dense model is run on to score the units.
    Returns {"heads": heads, "neurons": neurons, "params_before": int, "params_after": int,
    "layers": [{"layer": i, "kv_groups_removed": [...], "neurons_removed": [...],
    "n_head": .., "n_kv_head": .., "intermediate_size": ..} per layer]} (indices of the
    dense layer; the sizes after pruning).
    """
    from myllm101.fast.prune import head_scores, neuron_scores
    from myllm101.prune.unstructured import collect_input_norms

    model = _llama(model)
    heads, neurons = _fraction("heads", heads), _fraction("neurons", neurons)
    n_layer = len(model.layers)
    o_names = [f"layers.{i}.self_attn.o_proj" for i in range(n_layer)]
    down_names = [f"layers.{i}.mlp.down_proj" for i in range(n_layer)]
    targets = (o_names if heads else []) + (down_names if neurons else [])
    norms = collect_input_norms(model, calib_batches, targets) if targets else {}
    before = sum(p.numel() for p in model.parameters())
    layers = []
    for i, block in enumerate(model.layers):
        attn, mlp = block.self_attn, block.mlp
        groups, units = [], []
        if heads:
            o_weight = attn.o_proj.weight.detach()
            scores = head_scores(o_weight, norms[o_names[i]], attn.n_heads, attn.n_kv_heads)
            groups = lowest(scores, heads)
        if neurons:
            scores = neuron_scores(mlp.down_proj.weight.detach(), norms[down_names[i]])
            units = lowest(scores, neurons)
        remove_heads(model, i, groups)
        remove_neurons(model, i, units)
        layers.append(
            {
                "layer": i,
                "kv_groups_removed": groups,
                "neurons_removed": units,
                "n_head": attn.n_heads,
                "n_kv_head": attn.n_kv_heads,
                "intermediate_size": block.mlp.down_proj.in_features,
            }
        )
    after = sum(p.numel() for p in model.parameters())
    return {
        "heads": heads,
        "neurons": neurons,
        "params_before": before,
        "params_after": after,
        "layers": layers,
    }
