"""Per-request KV cache slots for continuous batching: one buffer, one row (slot) per request.

    cache = SlotKVCache.for_model(model, n_slots=16, max_len=2048)
    cache.prefill_into(3)          # the next forward (B = 1) writes slot 3 from its length on
    model(prompt_ids, kv_cache=cache, logits_to_keep=1)
    cache.decode_rows(4, n_active=3)   # the next step: one token for each of slots 0..3
    logits = decode_rows_step(model, last_ids, cache)     # serve/decode.py

fast/kv_cache.py's ``KVCache`` keeps one length for the whole batch (left padding lines every row
up in the last column). A server's rows start and end at different times, so here every slot has
its own ``lengths[s]``: a decoding step writes row r's new key at position lengths[r] (its own
next position), and row r's query attends to keys 0 .. lengths[r] of its own slot only.

The interface is the one the attention layers call (fast/attention.py, fast/llama.py):
``layer(i).update(k, v) -> (k_all, v_all)``, ``advance(n)``, ``length`` and ``batch_size``.
In decode mode ``length`` is the longest row's (the mask a generic forward needs covers that
many cached keys, ``key_mask`` hides each row's unused tail).

Slots are kept packed: the active requests sit in slots 0 .. n-1, so a step's batch is a prefix
view of the buffer (no gather); when a request leaves, the last one moves into its slot
(``move``: a copy of that slot's filled keys and values).
"""

from __future__ import annotations

import torch
from torch import nn

from myllm101.fast.kv_cache import cache_shape


class SlotKVCache:
    """k, v: (n_layer, n_slots, Hkv, max_len, D), allocated on the first write; lengths (n_slots,)."""

    def __init__(
        self,
        n_layer: int,
        n_slots: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        device=None,
        dtype: torch.dtype | None = None,
    ):
        self.shape = cache_shape(n_layer, n_slots, n_kv_heads, max_len, head_dim, "n_slots")
        self.n_slots, self.max_len = n_slots, max_len
        self.device, self.dtype = device, dtype
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.lengths = [0] * n_slots  # tokens filled in each slot
        self._slot: int | None = None  # prefill mode: the slot being written
        self._rows = 0  # decode mode: slots 0 .. rows - 1 step together
        self._active = 0  # ... of which the first ``active`` hold requests (the rest: padding)
        self._positions: torch.Tensor | None = None  # (rows,) each row's write position
        self._longest = 0
        self._fill: tuple[int, int] | None = None  # mixed mode: (slot, tokens) of a prompt piece

    @classmethod
    def for_model(cls, model: nn.Module, n_slots: int, max_len: int, dtype=None) -> SlotKVCache:
        """A cache shaped for ``model`` (a fast GPT or Llama: reads its ``cfg``)."""
        cfg = model.cfg
        n_kv = getattr(cfg, "n_kv_head", cfg.n_head)
        device = next(model.parameters()).device
        return cls(cfg.n_layer, n_slots, n_kv, max_len, cfg.head_dim, device, dtype)

    # ---- modes --------------------------------------------------------------------------------

    def prefill_into(self, slot: int) -> None:
        """The next forward is one request (B = 1) appending its tokens to ``slot``."""
        if not 0 <= slot < self.n_slots:
            raise ValueError(f"slot: expected 0 <= slot < {self.n_slots}, got {slot}")
        self._slot, self._fill = slot, None

    def decode_rows(self, rows: int, n_active: int) -> None:
        """The next forward is one token for each of slots 0 .. rows - 1; slots n_active .. are
        padding rows (the batch is padded to a fixed row count, see serve/decode.py)."""
        if not 1 <= n_active <= rows <= self.n_slots:
            raise ValueError(
                f"rows: expected 1 <= n_active <= rows <= {self.n_slots}, got {n_active}, {rows}"
            )
        self._slot, self._rows, self._active, self._fill = None, rows, n_active, None
        self._positions = torch.tensor(self.lengths[:rows], dtype=torch.long, device=self.device)
        self._longest = max(self.lengths[:rows])  # fixed for the step (advance changes lengths)

    def mixed_rows(self, rows: int, n_active: int, slot: int, n_tokens: int) -> None:
        """The next forward (serve/decode.py ``batch_step``) is one token for each of slots
        0 .. rows - 1 (n_active of them real, the rest padding; rows may be 0) and, stacked
        after them as rows of their own, ``n_tokens`` prompt tokens appended to ``slot`` (0: none).
        ``update`` then returns the layer's whole buffers: the caller slices each row's keys."""
        if not 0 <= n_active <= rows <= self.n_slots or (
            n_tokens and not rows <= slot < self.n_slots
        ):
            raise ValueError(
                f"rows: expected 0 <= n_active <= rows <= {self.n_slots} and, with prompt tokens, "
                f"rows <= slot < {self.n_slots}; got {n_active}, {rows}, {slot}"
            )
        self._slot, self._rows, self._active = None, rows, n_active
        self._fill = (slot, n_tokens)
        self._positions = torch.tensor(self.lengths[:rows], dtype=torch.long, device=self.device)
        self._longest = max(self.lengths[:rows], default=0)

    @property
    def positions(self) -> torch.Tensor:
        """(rows,) where each decoding row writes its new token: its slot's length (its RoPE
        position too: a request's first token is position 0)."""
        return self._positions

    @property
    def batch_size(self) -> int:
        return 1 if self._slot is not None else self._rows

    @property
    def length(self) -> int:
        """Prefill: the slot's length. Decode: the longest row's before this step (``key_mask``
        covers length + 1 keys)."""
        if self._slot is not None:
            return self.lengths[self._slot]
        return self._longest

    def key_mask(self) -> torch.Tensor:
        """Decode mode: (rows, length + 1) bool, True where a row's key is its own (0 .. its
        length, the new token included)."""
        span = self.length + 1
        keys = torch.arange(span, device=self.device)  # (S,)
        return keys[None, :] <= self._positions[:, None]  # (rows, S)

    # ---- what the attention layers call -------------------------------------------------------

    def layer(self, index: int) -> _LayerSlots:
        return _LayerSlots(self, index)

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefill: k, v (1, H, T, D) -> (1, H, length + T, D) of the slot. Decode: k, v
        (rows, H, 1, D), each row written at its own position -> (rows, H, max length + 1, D)."""
        H = k.shape[1]
        if self.k is None:
            dtype = self.dtype or k.dtype
            self.k = torch.zeros(self.shape, dtype=dtype, device=self.device or k.device)
            self.v = torch.zeros_like(self.k)
        if self._fill is not None:
            return self._update_mixed(layer, k, v)
        if self._slot is not None:
            s, start = self._slot, self.lengths[self._slot]
            end = start + k.shape[2]
            if end > self.max_len:
                raise ValueError(
                    f"kv_cache: expected at most max_len={self.max_len} tokens, got {start} "
                    f"cached + {k.shape[2]} new"
                )
            self.k[layer, s, :H, start:end] = k[0]
            self.v[layer, s, :H, start:end] = v[0]
            k_all, v_all = self.k[layer, s : s + 1, :H, :end], self.v[layer, s : s + 1, :H, :end]
        else:
            rows, pos = self._rows, self._positions
            if self._longest >= self.max_len:
                raise ValueError(f"kv_cache: a slot is full (max_len={self.max_len} tokens)")
            index = torch.arange(rows, device=pos.device)
            # advanced indices (slot, position) around a slice: (rows, H, D) <- k[:, :, 0]
            self.k[layer][index, :H, pos] = k[:, :, 0].to(self.k.dtype)
            self.v[layer][index, :H, pos] = v[:, :, 0].to(self.v.dtype)
            span = self.length + 1
            k_all, v_all = self.k[layer, :rows, :H, :span], self.v[layer, :rows, :H, :span]
        return k_all.to(k.dtype), v_all.to(v.dtype)  # no copy unless the cache dtype differs

    def _update_mixed(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixed mode: k, v (rows + T', H, 1, D): rows 0 .. rows - 1 at their own positions, the
        next n_tokens appended to the fill slot (any rows after them are padding, not written)
        -> the layer's buffers (n_slots, H, max_len, D)."""
        H, rows = k.shape[1], self._rows
        slot, n = self._fill
        start = self.lengths[slot]
        if self._longest >= self.max_len or start + n > self.max_len:
            raise ValueError(f"kv_cache: a slot is full (max_len={self.max_len} tokens)")
        if rows:
            index = torch.arange(rows, device=k.device)
            self.k[layer][index, :H, self._positions] = k[:rows, :, 0].to(self.k.dtype)
            self.v[layer][index, :H, self._positions] = v[:rows, :, 0].to(self.v.dtype)
        if n:  # (n, H, 1, D) -> (H, n, D)
            self.k[layer, slot, :H, start : start + n] = k[rows : rows + n, :, 0].transpose(0, 1)
            self.v[layer, slot, :H, start : start + n] = v[rows : rows + n, :, 0].transpose(0, 1)
        return self.k[layer, :, :H].to(k.dtype), self.v[layer, :, :H].to(v.dtype)

    def advance(self, n_tokens: int) -> None:
        """After every layer wrote: the prefilled slot grows by n_tokens, or each active
        decoding row by one (padding rows stay empty); mixed: both, the fill slot by its piece."""
        if self._slot is not None:
            self.lengths[self._slot] += n_tokens
            return
        for r in range(self._active):
            self.lengths[r] += 1
        if self._fill is not None:
            slot, n = self._fill
            self.lengths[slot] += n
            self._fill = None

    # ---- slot bookkeeping ---------------------------------------------------------------------

    def free(self, slot: int) -> None:
        """Forget ``slot``'s tokens (its buffer is overwritten by the next request)."""
        self.lengths[slot] = 0

    def move(self, src: int, dst: int) -> None:
        """Slot ``src``'s filled keys/values and length into slot ``dst``; src is then empty."""
        if src == dst:
            return
        n = self.lengths[src]
        if self.k is not None and n:
            with torch.inference_mode():  # the buffers were made in inference mode (a forward)
                self.k[:, dst, :, :n] = self.k[:, src, :, :n]
                self.v[:, dst, :, :n] = self.v[:, src, :, :n]
        self.lengths[dst], self.lengths[src] = n, 0

    def __repr__(self) -> str:
        return f"SlotKVCache(shape={self.shape}, lengths={self.lengths})"


class _LayerSlots:
    """One layer's window onto a SlotKVCache (what ``MultiHeadAttention.forward`` calls)."""

    def __init__(self, cache: SlotKVCache, index: int):
        self.cache, self.index = cache, index

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache.update(self.index, k, v)
