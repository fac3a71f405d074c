"""Attention weights of one layer of our fast GPT / Llama, for the app's heatmap.

    w = attention_weights(model, ids, layer=0)       # (H, T, T), rows sum to 1, zero above the diagonal
    fig = attention_figure(w[head], labels)          # a matplotlib heatmap: query rows, key columns

Our attention never forms the (T, T) weights (fast/attention.py goes through torch's fused SDPA),
so they are recomputed: a forward hook keeps the layer's input x (B=1, T, C), the layer's own
projections (and RoPE for Llama) give q (H, T, D) and k (Hkv, T, D), and

    weights = softmax(q k^T / sqrt(D) + causal mask)        # mask: -inf where key s > query t

with grouped-query heads sharing their kv head (h -> h // (H / Hkv)). ``attention_output``
applies the same weights to v: it must equal the layer's real output (tests/test_ui.py checks it),
which shows the recomputed weights are the ones the model used.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from myllm101.fast.attention import MultiHeadAttention
from myllm101.fast.gpt import CausalSelfAttention
from myllm101.fast.linear import to_module_dtype


def attention_layers(model: nn.Module) -> list[nn.Module]:
    """The attention modules of ``model`` in layer order (Llama's self_attn, GPT's attn)."""
    layers = [
        m for m in model.modules() if isinstance(m, (MultiHeadAttention, CausalSelfAttention))
    ]
    if not layers:
        raise ValueError(
            f"model: expected a GPT or Llama of ours (fast/), got {type(model).__name__} "
            "without attention layers"
        )
    return layers


def layer_qkv(attn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (1, T, C), a layer's input -> q (H, T, D), k (Hkv, T, D), v (Hkv, T, D) as its forward
    computes them (positions 0 .. T-1)."""
    B, T, _ = x.shape
    if isinstance(attn, CausalSelfAttention):
        H = Hkv = attn.n_head
        D = attn.head_dim
        q, k, v = attn.c_attn(x).split(H * D, dim=-1)
    else:
        H, Hkv, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
        if attn.qkv_proj is None:
            x = to_module_dtype(x, attn.q_proj)
            q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
        else:  # fused projections (fast/fuse.py)
            x = to_module_dtype(x, attn.qkv_proj)
            q, k, v = attn.qkv_proj(x).split((H * D, Hkv * D, Hkv * D), dim=-1)
    q = q.view(B, T, H, D).transpose(1, 2)  # (1, H, T, D)
    k = k.view(B, T, Hkv, D).transpose(1, 2)  # (1, Hkv, T, D)
    v = v.view(B, T, Hkv, D).transpose(1, 2)  # (1, Hkv, T, D)
    if getattr(attn, "rope", None) is not None:
        q, k = attn.rope(q, k, 0)
    return q[0], k[0], v[0]


def causal_softmax(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q (H, T, D), k (Hkv, T, D) -> softmax(q k^T / sqrt(D)) with the causal mask, (H, T, T) in
    float32 at least (float64 stays float64; query head h reads kv head h // (H // Hkv))."""
    H, T, D = q.shape
    wide = torch.promote_types(q.dtype, torch.float32)  # bf16 weights: scores in float32
    k = k.repeat_interleave(H // k.shape[0], dim=0)  # (H, T, D)
    scores = q.to(wide) @ k.to(wide).transpose(-1, -2) / math.sqrt(D)  # (H, T, T)
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(diagonal=1)
    return torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)


@torch.inference_mode()
def layer_inputs(model: nn.Module, ids: list[int], layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` on ``ids`` once and keep layer ``layer``'s attention input and output."""
    layers = attention_layers(model)
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer: expected 0 <= layer < {len(layers)}, got {layer}")
    if not 1 <= len(ids) <= model.cfg.block_size:
        raise ValueError(
            f"ids: expected 1 to block_size={model.cfg.block_size} tokens, got {len(ids)}"
        )
    seen = {}

    def keep(module, args, output):
        seen["x"], seen["out"] = args[0], output

    device = next(model.parameters()).device
    handle = layers[layer].register_forward_hook(keep)
    try:
        model(torch.tensor([ids], device=device))
    finally:
        handle.remove()
    return seen["x"], seen["out"]


@torch.inference_mode()
def attention_weights(model: nn.Module, ids: list[int], layer: int = 0) -> torch.Tensor:
    """(H, T, T) attention weights (float32, or float64 for a float64 model) of layer ``layer`` on the prompt ``ids`` (see above)."""
    x, _ = layer_inputs(model, ids, layer)
    q, k, _ = layer_qkv(attention_layers(model)[layer], x)
    return causal_softmax(q, k)


@torch.inference_mode()
def attention_output(model: nn.Module, ids: list[int], layer: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(the recomputed weights applied to v and projected out, the layer's real output), both
    (1, T, C): equal when the weights are the ones the layer used."""
    x, real = layer_inputs(model, ids, layer)
    attn = attention_layers(model)[layer]
    q, k, v = layer_qkv(attn, x)
    w = causal_softmax(q, k)  # (H, T, T)
    H, T, _ = w.shape
    v = v.to(w.dtype).repeat_interleave(H // v.shape[0], dim=0)  # (H, T, D)
    heads = (w @ v).transpose(0, 1).reshape(1, T, -1)  # (1, T, H*D)
    out_proj = attn.c_proj if isinstance(attn, CausalSelfAttention) else attn.o_proj
    mine = out_proj(to_module_dtype(heads, out_proj))
    return mine.to(w.dtype), real.to(w.dtype)


def attention_figure(weights: torch.Tensor, labels: list[str], title: str = ""):
    """A matplotlib heatmap of one head's (T, T) weights: rows = queries, columns = keys."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state across requests

    w = weights.detach().cpu().float().numpy()
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] != len(labels):
        raise ValueError(
            f"weights: expected (T, T) with T = len(labels) = {len(labels)}, got {w.shape}"
        )
    T = len(labels)
    size = min(3 + 0.32 * T, 14)
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.subplots()
    image = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(T), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(T), labels, fontsize=8)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def heatmap_labels(pieces: list[str]) -> list[str]:
    """Token pieces as short axis labels: repr-like, spaces as "·", at most 12 characters."""
    out = []
    for i, p in enumerate(pieces):
        s = p.replace(" ", "·").replace("\n", "\\n").replace("\t", "\\t") or "▯"
        out.append(f"{s[:12]} ({i})")
    return out
