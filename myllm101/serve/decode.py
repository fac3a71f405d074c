"""One forward per scheduler turn for every active request at once (and, riding on it, a piece
of a new request's prompt), laid out so that a row's logits are the same bits whatever else is
in the batch.

Why a layout at all: float32 results depend on how a kernel splits its sums, and CPU kernels pick
their split by shape. Measured on this project's torch (tests/test_serve_batching.py checks it):

- ``F.linear`` with M = 1 row goes through a matrix-vector kernel whose sums differ in the last
  bits from the matrix-matrix kernel; with M a multiple of ``ROW_QUANTUM`` = 4 (4 .. 96 checked,
  1 and 2 threads, the tiny model's and SmolLM2's shapes) a row gets the same bits whatever M is
  and wherever it sits; other M (5, 6, 7 with 2 threads) do not. So the decoding rows are padded
  to a multiple of 4 (idle slots, their output ignored) and so is a prompt piece riding along.
- ``scaled_dot_product_attention`` over a padded key range (a mask hiding each row's unused
  tail) differs from the unpadded one, and depends on the padded length. So each decoding row
  attends alone, over exactly its own keys (one SDPA call per row and layer), and a prompt piece
  in one causal call over its own slot's keys: the same calls, with the same shapes, that they
  make with no other request running.

Everything else in a Llama step is row-wise (RMSNorm, RoPE, SwiGLU, the embedding lookup) and
does not depend on the batch. Result: under greedy decoding a request's tokens equal the ones it
gets alone on this server, bit for bit (``batch_step``; a prompt is always cut into the same
pieces, ``prefill_chunks``). A model without a Llama layout (our GPT) goes through
``model(...)``: its pieces alone, its steps with the slot cache and a per-row key mask
(``forward_rows_step``): the same tokens up to float32 rounding (~1e-6 relative), not bitwise.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from myllm101.fast.blocks import embed, project, residual
from myllm101.fast.llama import Llama
from myllm101.fast.rmsnorm import rms_norm
from myllm101.fast.rope import signed_sin_table
from myllm101.serve.slots import SlotKVCache

ROW_QUANTUM = 4  # a decode batch has a multiple of this many rows (see the module docstring)


def padded_rows(n_active: int, n_slots: int) -> int:
    """Rows of a step with ``n_active`` requests: the next multiple of ROW_QUANTUM (<= n_slots).
    1 -> 4, 4 -> 4, 5 -> 8."""
    return min(n_slots, -(-n_active // ROW_QUANTUM) * ROW_QUANTUM)


def slots_for(max_batch: int) -> int:
    """Slots a cache needs for ``max_batch`` requests: room for the padding rows too."""
    return -(-max_batch // ROW_QUANTUM) * ROW_QUANTUM


def prefill_chunks(n_tokens: int, chunk: int | None) -> list[tuple[int, int]]:
    """Where a prompt of ``n_tokens`` is cut: [start, end) pieces of at most ``chunk`` tokens
    (None: one piece). 10, 4 -> [(0, 4), (4, 8), (8, 10)]."""
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk: expected an int >= 1 or None, got {chunk}")
    step = chunk or max(1, n_tokens)
    return [(s, min(s + step, n_tokens)) for s in range(0, n_tokens, step)]


@torch.inference_mode()
def prefill_chunk(model: nn.Module, ids: list[int], cache: SlotKVCache, slot: int) -> torch.Tensor:
    """Append ``ids`` (a piece of a prompt) to ``slot``'s cached tokens, alone (B = 1) -> the next-
    token logits after its last id (V,) float. The queries see the slot's earlier keys and, among
    the new ones, those before them (bottom-right causal: fast/attention.py)."""
    cache.prefill_into(slot)
    x = torch.tensor([ids], dtype=torch.long, device=cache.device)  # (1, T)
    logits = model(x, kv_cache=cache, logits_to_keep=1).logits[0, -1]  # (V,)
    return logits.float()


def prefill(
    model: nn.Module, ids: list[int], cache: SlotKVCache, slot: int, chunk: int | None = None
) -> torch.Tensor:
    """A new request's whole prompt into ``slot``, ``chunk`` tokens at a time, with nothing else
    in the batch: what the scheduler runs for it (``prefill_chunks``, ``batch_step``) -> its
    next-token logits (V,) float."""
    if not ids:
        raise ValueError("ids: expected at least one prompt token, got none")
    cache.free(slot)
    logits = None
    for start, end in prefill_chunks(len(ids), chunk):
        last = end == len(ids)
        _, logits = batch_step(model, [], cache, ids[start:end], slot, last_piece=last)
    return logits


@torch.inference_mode()
def decode_rows_step(model: nn.Module, tokens: list[int], cache: SlotKVCache) -> torch.Tensor:
    """Each active slot's newest token (slots 0 .. len(tokens) - 1) -> logits (n_active, V) float.

    Llama: ``batch_step`` (the layout of the module docstring: bitwise batch-independent);
    other models: ``forward_rows_step``."""
    if isinstance(model, Llama):
        return batch_step(model, tokens, cache)[0]
    n = len(tokens)
    rows = padded_rows(n, cache.n_slots)
    cache.decode_rows(rows, n)
    ids = torch.zeros(rows, 1, dtype=torch.long, device=cache.device)
    ids[:n, 0] = torch.tensor(tokens, dtype=torch.long)
    return forward_rows_step(model, ids, cache)[:n].float()


def forward_rows_step(model: nn.Module, ids: torch.Tensor, cache: SlotKVCache) -> torch.Tensor:
    """Any of our causal LMs: ``model(ids, mask, position_ids, kv_cache)``; ids (rows, 1) ->
    logits (rows, V). The mask hides each row's keys past its own length."""
    mask = cache.key_mask()  # (rows, S)
    out = model(ids, attention_mask=mask, position_ids=cache.positions[:, None], kv_cache=cache)
    return out.logits[:, -1]


@torch.inference_mode()
def batch_step(
    model: nn.Module,
    tokens: list[int],
    cache: SlotKVCache,
    piece: list[int] | None = None,
    fill_slot: int | None = None,
    last_piece: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """One scheduler turn's model work: each active slot's newest token (slots 0 ..
    len(tokens) - 1) and, optionally, a ``piece`` of a prompt appended to ``fill_slot`` ->
    (logits (n_active, V) float or None without tokens, the logits after the piece's last token
    (V,) float when ``last_piece``, else None).

    Llama: ONE forward for both (a chunked prefill riding on the decoding step: the weights are
    read once), rows stacked as [decoding rows, padded to ROW_QUANTUM | the piece's tokens, padded
    to ROW_QUANTUM]. Every GEMM then has a multiple of ROW_QUANTUM rows, whose per-row bits do
    not depend on how many (tests/test_serve_batching.py checks it); decoding rows attend row by
    row over their own keys, the piece over its slot's keys (bottom-right causal, one call), so
    each request's bits are the same whether a piece rides along or not. Other models: the piece
    alone (``prefill_chunk``), then ``decode_rows_step``."""
    piece = piece or []
    if not isinstance(model, Llama):
        after = prefill_chunk(model, piece, cache, fill_slot) if piece else None
        rows = decode_rows_step(model, tokens, cache) if tokens else None
        return rows, after if last_piece else None
    n, T = len(tokens), len(piece)
    if n == 0 and T == 0:
        return None, None
    R = padded_rows(n, cache.n_slots) if n else 0
    Tp = -(-T // ROW_QUANTUM) * ROW_QUANTUM  # the piece's rows, padded (padding: not written)
    start = cache.lengths[fill_slot] if T else 0
    cache.mixed_rows(R, n, fill_slot if T else 0, T)
    ids = tokens + [0] * (R - n) + piece + piece[-1:] * (Tp - T)
    positions = cache.lengths[:R] + list(range(start, start + T)) + [start + T - 1] * (Tp - T)
    own = [length + 1 for length in cache.lengths[:n]]  # keys each decoding row sees
    device = cache.device
    ids_t = torch.tensor(ids, dtype=torch.long, device=device)[:, None]  # (M, 1)
    pos_t = torch.tensor(positions, dtype=torch.long, device=device)[:, None]  # (M, 1)
    rope = model.layers[0].self_attn.rope  # every layer's tables are the same
    cos, sin = rope.cos[pos_t][:, None], rope.sin[pos_t][:, None]  # (M, 1, 1, D)
    rot = (cos, signed_sin_table(sin))
    attend = functools.partial(
        mixed_attention, own=own, rows=R, fill_slot=fill_slot, start=start, n_piece=T
    )
    x = residual(embed(model.embed_tokens, ids_t))  # (M, 1, C)
    for i, layer in enumerate(model.layers):
        x = layer.decode(x, cache, i, rot, attend)  # fast/llama.py LlamaBlock.decode
    cache.advance(1)
    # the LM head: the decoding rows, and the piece's last ROW_QUANTUM rows if its last token's
    # logits are wanted (a multiple of ROW_QUANTUM rows again)
    keep = [x[:R]] + ([x[R + Tp - ROW_QUANTUM : R + Tp]] if last_piece and T else [])
    h = torch.cat(keep)  # (K, 1, C)
    if h.shape[0] == 0:
        return None, None
    logits = project(model.lm_head, rms_norm(h, model.norm.weight, model.norm.eps))[:, -1]
    rows_logits = logits[:n].float() if n else None
    after = logits[R + ROW_QUANTUM - 1 - (Tp - T)].float() if last_piece and T else None
    return rows_logits, after


def mixed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    own: list[int],
    rows: int,
    fill_slot: int | None,
    start: int,
    n_piece: int,
) -> torch.Tensor:
    """``batch_step``'s attention core: q (M, H, 1, D); k, v a layer's whole cache buffers
    (n_slots, Hkv, max_len, D) -> (M, H, 1, D). Decoding row r < len(own) attends to the first
    own[r] keys of slot r (as ``rows_attention``); query rows rows .. rows + n_piece - 1 are one
    prompt piece, attending to fill_slot's keys 0 .. start + n_piece - 1, causally (query j sees
    keys up to start + j). Padding rows keep a zero output (ignored)."""
    gqa = q.shape[1] != k.shape[1]
    o = torch.zeros_like(q)
    for r, length in enumerate(own):
        o[r : r + 1] = F.scaled_dot_product_attention(
            q[r : r + 1], k[r : r + 1, :, :length], v[r : r + 1, :, :length], enable_gqa=gqa
        )
    if n_piece:
        S = start + n_piece
        qp = q[rows : rows + n_piece].transpose(0, 2).contiguous()  # (1, H, T, D)
        kp, vp = k[fill_slot : fill_slot + 1, :, :S], v[fill_slot : fill_slot + 1, :, :S]
        if start == 0:
            op = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, enable_gqa=gqa)
        else:  # bottom-right causal: query j sees keys 0 .. start + j
            mask = torch.ones(n_piece, S, dtype=torch.bool, device=q.device).tril(start)
            op = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask, enable_gqa=gqa)
        o[rows : rows + n_piece] = op.transpose(0, 2)  # (T, H, 1, D)
    return o
