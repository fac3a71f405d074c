"""The KV cache of fast/generate.py: every layer's keys and values, allocated once and written in
place.

    cache = KVCache.for_model(model, batch_size=2, max_len=512)
    logits = model(prompt_ids, kv_cache=cache)        # prefill: cache.length == T0 afterwards
    logits = model(next_ids, kv_cache=cache)          # one more token per row and step

The attention of each layer calls ``cache.layer(i).update(k, v)``, which copies the new keys and
values into their slots and returns views of everything cached so far; the model calls
``advance(T)`` once all layers wrote. serve/slots.py's ``SlotKVCache`` is the variant with one
length per row (continuous batching).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from myllm101.checks import expect_positive, expect_shape


def cache_shape(
    n_layer: int, rows: int, n_kv_heads: int, max_len: int, head_dim: int, rows_name="batch_size"
) -> tuple[int, int, int, int, int]:
    """A KV cache's (n_layer, rows, Hkv, max_len, D), each checked positive."""
    for name, value in (("n_layer", n_layer), (rows_name, rows), ("n_kv_heads", n_kv_heads),
                        ("max_len", max_len), ("head_dim", head_dim)):  # fmt: skip
        expect_positive(name, value)
    return (n_layer, rows, n_kv_heads, max_len, head_dim)


class KVCache:
    """Keys and values of every layer, pre-allocated: k, v (n_layer, B, Hkv, max_len, D).

    ``length`` tokens are filled (the same for every layer and row). A model forward writes layer
    i's new keys/values through ``layer(i).update(k, v)`` at slots length .. length + T - 1 and
    calls ``advance(T)`` once all layers are done. The buffers are allocated on the first update,
    in the dtype of the keys (so bf16 autocast gets a bf16 cache) unless ``dtype`` is given.
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        device=None,
        dtype: torch.dtype | None = None,
    ):
        self.shape = cache_shape(n_layer, batch_size, n_kv_heads, max_len, head_dim)
        self.batch_size, self.max_len = batch_size, max_len
        self.device, self.dtype = device, dtype
        self.k: torch.Tensor | None = None  # (n_layer, B, Hkv, max_len, D)
        self.v: torch.Tensor | None = None
        self.length = 0

    @classmethod
    def for_model(cls, model: nn.Module, batch_size: int, max_len: int, dtype=None) -> KVCache:
        """A cache shaped for ``model`` (a fast GPT or Llama: reads its ``cfg``)."""
        cfg = model.cfg
        n_kv = getattr(cfg, "n_kv_head", cfg.n_head)  # GPT-2: every head has its own k, v
        device = next(model.parameters()).device
        return cls(cfg.n_layer, batch_size, n_kv, max_len, cfg.head_dim, device, dtype)

    def layer(self, index: int) -> LayerKVCache:
        return LayerKVCache(self, index)

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v: (B, H, T, D) new -> (k_all, v_all): (B, H, length + T, D), views of the cache.

        H may be below the cache's Hkv: a layer with kv heads removed (prune/structured.py) uses
        the first H slots of its layer."""
        _, B, Hkv, max_len, D = self.shape
        expect_shape("k", k, (B, None, None, D))
        expect_shape("v", v, tuple(k.shape))
        H = k.shape[1]
        if H > Hkv:
            raise ValueError(f"k: expected at most {Hkv} kv heads (the cache's), got {H}")
        start, end = self.length, self.length + k.shape[2]
        if end > max_len:
            raise ValueError(
                f"kv_cache: expected at most max_len={max_len} tokens, got {start} cached + "
                f"{k.shape[2]} new"
            )
        if self.k is None:
            dtype = self.dtype or k.dtype
            self.k = torch.zeros(self.shape, dtype=dtype, device=self.device or k.device)
            self.v = torch.zeros_like(self.k)
        self.k[layer, :, :H, start:end] = k
        self.v[layer, :, :H, start:end] = v
        k_all, v_all = self.k[layer, :, :H, :end], self.v[layer, :, :H, :end]
        return k_all.to(k.dtype), v_all.to(v.dtype)  # no copy unless the cache dtype differs

    def advance(self, n_tokens: int) -> None:
        """Called by the model after every layer has written its n_tokens new entries."""
        self.length += n_tokens

    def reset(self) -> None:
        self.length = 0

    def __repr__(self) -> str:
        return f"KVCache(shape={self.shape}, length={self.length})"


@dataclass
class LayerKVCache:
    """One layer's window onto a KVCache: what ``MultiHeadAttention.forward(kv_cache=...)`` uses."""

    cache: KVCache
    index: int

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache.update(self.index, k, v)
