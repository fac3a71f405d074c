"""Scaled dot-product attention and the multi-head attention block in PyTorch.

    out = softmax(q k^T * scale + mask) v,   scale = 1/sqrt(D) by default

Same conventions as the NumPy reference: ``causal`` is aligned bottom-right (with S keys and T <= S
queries, query t sits at position S - T + t: the KV-cache case), ``key_padding_mask`` (B, S) is True
for real tokens, a query row with no allowed key outputs zeros (and gets zero gradients), and
grouped-query attention maps query head h to kv head h // (H // Hkv).

Speed: everything goes through ``F.scaled_dot_product_attention``, which on CPU is a fused flash
kernel (no (T, S) score matrix kept for backward) and on GPU picks flash / memory-efficient kernels.
Without padding, and when T == S, the causal mask is torch's own ``is_causal`` flag (no mask tensor
at all); torch aligns it top-left, which is only the same as bottom-right when T == S, so other
cases build an explicit boolean mask. A single query (T == 1, one decoding step) sees every key
under bottom-right causal masking, so it needs no causal mask at all.

Triton: with ``MYLLM101_KERNELS`` (or ``kernels=``) set so that ``kernels.dispatch.use_kernel``
agrees, ``scaled_dot_product_attention`` runs ``myllm101.kernels.attention.flash_attention`` instead
(same conventions; by default only for CUDA tensors).

KV cache (generation): ``MultiHeadAttention.forward`` takes ``kv_cache``, any object with
``update(k, v) -> (k_all, v_all)`` that appends this call's keys/values (B, Hkv, T, D) after the
cached ones and returns all of them (B, Hkv, past + T, D); ``fast/generate.py`` provides one
(``KVCache.layer(i)``). The queries are then the last T of past + T positions: bottom-right causal.
``position_ids`` (B, T) give each row its own RoPE positions (left-padded batches).
"""

import torch
import torch.nn.functional as F
from torch import nn

from myllm101.checks import (
    check_qkv,
    expect_dim,
    expect_divisible,
    expect_float,
    expect_ndim,
    expect_positive,
)
from myllm101.fast.linear import Linear, to_module_dtype
from myllm101.fast.rope import RotaryEmbedding
from myllm101.kernels.dispatch import kernel_supports, use_kernel


def attention_mask(
    T: int, S: int, causal: bool, key_padding_mask: torch.Tensor | None = None, device=None
) -> torch.Tensor | None:
    """Boolean (B or 1, 1, T, S) mask, True = query t may attend to key s; None = no masking.
    key_padding_mask: (B, S), or (B, T, S) for a mask per query (packed examples: each token sees
    its own example only; finetune/sft.py ``packed_attention_mask``), and-ed with the causal one."""
    mask = None
    if causal:
        # key s is visible to query t when s <= S - T + t (bottom-right aligned)
        mask = torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)[None, None]
    if key_padding_mask is not None:
        if key_padding_mask.ndim == 3:
            pad = key_padding_mask[:, None]  # (B, 1, T, S)
        else:
            pad = key_padding_mask[:, None, None, :]  # (B, 1, 1, S)
        mask = pad if mask is None else mask & pad  # (B, 1, T, S)
    return mask


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    kernels: str | None = None,
) -> torch.Tensor:
    """q: (B, H, T, D), k/v: (B, Hkv, S, D), key_padding_mask: (B, S) or (B, T, S) bool ->
    (B, H, T, D).

    kernels: "auto" | "on" | "off" (None = $MYLLM101_KERNELS): use the Triton flash-attention
    kernel (``myllm101.kernels.attention``) for float32/bf16/fp16, see ``kernels/dispatch.py``.
    """
    check_qkv(q, k, v, key_padding_mask, scale)
    per_query = key_padding_mask is not None and key_padding_mask.ndim == 3  # no kernel for it
    if (
        not per_query
        and kernel_supports(q)
        and use_kernel(q, k, v, key_padding_mask, kernels=kernels)
    ):
        from myllm101.kernels.attention import flash_attention  # imports triton only when used

        return flash_attention(q, k, v, causal, key_padding_mask, scale)
    T, S = q.shape[-2], k.shape[-2]
    gqa = q.shape[1] != k.shape[1]
    causal = causal and T > 1  # one query, bottom-right aligned, sees all S keys anyway
    if key_padding_mask is None and (not causal or T == S):
        return F.scaled_dot_product_attention(
            q, k, v, is_causal=causal, scale=scale, enable_gqa=gqa
        )
    mask = attention_mask(T, S, causal, key_padding_mask, q.device)  # (B or 1, 1, T, S)
    alive = mask.any(dim=-1, keepdim=True)  # (B or 1, 1, T, 1): does the row see any key?
    # dead rows attend to every key (a finite softmax, no NaN anywhere), then their output is zeroed,
    # so no gradient flows back through them either
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask | ~alive, scale=scale, enable_gqa=gqa
    )
    return out.masked_fill(~alive, 0.0)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    causal: bool = True,
    kv_cache=None,
) -> torch.Tensor:
    """The attention of a block whose q/k/v are projected (and rotated): q (B, H, T, D), k/v
    (B, Hkv, T, D) -> (B, T, H*D), heads side by side again, ready for the output projection.

    kv_cache: a layer cache (``update(k, v) -> (k_all, v_all)``, see the module docstring); k and
    v are appended to it first and the queries attend to every key so far.
    """
    if kv_cache is not None:
        k, v = kv_cache.update(k, v)  # (B, Hkv, past + T, D): keys and values so far
    out = scaled_dot_product_attention(q, k, v, causal, key_padding_mask)  # (B, H, T, D)
    B, H, T, D = out.shape
    return out.transpose(1, 2).reshape(B, T, H * D)


class MultiHeadAttention(nn.Module):
    """Multi-head (grouped-query) self-attention with optional RoPE.

    Submodules q_proj / k_proj / v_proj / o_proj, so the state_dict keys are the reference's params
    keys ("q_proj.weight", ...). n_kv_heads=None means n_kv_heads = n_heads (plain multi-head).
    head_dim=None means d_model // n_heads; given, q_proj is (H*D, C) and o_proj (C, H*D) with
    H*D free to differ from C (a model with heads removed, myllm101/prune/structured.py).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        bias: bool = False,
        rope_theta: float | None = None,
        max_seq_len: int = 2048,
        device=None,
        dtype=None,
        head_dim: int | None = None,
    ):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        expect_positive("d_model", d_model)
        expect_positive("n_heads", n_heads)
        expect_positive("n_kv_heads", n_kv_heads)
        if head_dim is None:
            expect_divisible("d_model", d_model, "n_heads", n_heads)
            head_dim = d_model // n_heads
        expect_positive("head_dim", head_dim)
        expect_divisible("n_heads", n_heads, "n_kv_heads", n_kv_heads)
        self.d_model, self.n_heads, self.n_kv_heads = d_model, n_heads, n_kv_heads
        self.head_dim = D = head_dim
        kw = dict(bias=bias, device=device, dtype=dtype)
        self.q_proj = Linear(d_model, n_heads * D, **kw)
        self.k_proj = Linear(d_model, n_kv_heads * D, **kw)
        self.v_proj = Linear(d_model, n_kv_heads * D, **kw)
        self.o_proj = Linear(n_heads * D, d_model, **kw)
        # fast/fuse.py may replace q/k/v_proj by one (H + 2 Hkv) * D projection (inference only)
        self.qkv_proj: nn.Linear | None = None
        self.rope = (
            None
            if rope_theta is None
            else RotaryEmbedding(D, max_seq_len, rope_theta, device=device, dtype=dtype)
        )

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        causal: bool = True,
        kv_cache=None,
        position_ids: torch.Tensor | None = None,
        offset: int = 0,
    ) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C).

        key_padding_mask: (B, S) bool, True = real token, S = T (+ the cached length with kv_cache).
        kv_cache: a layer cache with ``update(k, v) -> (k_all, v_all)`` (see the module docstring).
        position_ids: (B, T) RoPE positions per row; None = offset .. offset + T - 1 for every row.
        """
        expect_float("x", x)
        expect_ndim("x", x, 3)
        expect_dim("x", x, -1, self.d_model, "d_model")
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        if self.qkv_proj is None:
            x = to_module_dtype(x, self.q_proj)  # float32 residual, bf16 weights: cast once
            q, k, v = (
                self.q_proj(x),
                self.k_proj(x),
                self.v_proj(x),
            )  # (B, T, H*D), (B, T, Hkv*D) x2
        else:  # fused (fast/fuse.py): one GEMM reads all three weights, its output split in views
            x = to_module_dtype(x, self.qkv_proj)
            q, k, v = self.qkv_proj(x).split((H * D, Hkv * D, Hkv * D), dim=-1)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, Hkv, D).transpose(1, 2)  # (B, Hkv, T, D)
        v = v.view(B, T, Hkv, D).transpose(1, 2)  # (B, Hkv, T, D)
        if self.rope is not None:
            q, k = self.rope(q, k, offset, position_ids)  # fast/rope.py: kernel or eager
        return self.o_proj(attend(q, k, v, key_padding_mask, causal, kv_cache))  # (B, T, C)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, "
            f"head_dim={self.head_dim}"
        )
