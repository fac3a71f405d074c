"""GPT-2 (Radford et al., 2019) in PyTorch, built from the fast layers; autograd does the backward.

    x = wte(ids) + wpe(0..T-1)                                   # (B, T, C)
    for each block:  x = x + attn(ln_1(x))                       # causal self-attention (SDPA)
                     x = x + c_proj(gelu_tanh(c_fc(ln_2(x))))    # MLP, width 4C
    logits = lm_head(ln_f(x))                                    # (B, T, V), weight tied to wte
    loss = cross_entropy(logits, shift_labels(labels))           # labels[t + 1]; last: -100, like HF

``state_dict`` names are GPT-2's own (the reference ``ReferenceGPT`` reads the same dict)::

    wte.weight  wpe.weight  h.{i}.ln_1.*  h.{i}.attn.c_attn.*  h.{i}.attn.c_proj.*  h.{i}.ln_2.*
    h.{i}.mlp.c_fc.*  h.{i}.mlp.c_proj.*  ln_f.*  lm_head.weight

``attn.c_attn`` is one (3C, C) projection whose output is [q | k | v] (one GEMM instead of three);
unlike HF's Conv1D, every weight is stored (out, in), as ``nn.Linear`` keeps it.

Weight tying: ``lm_head.weight`` *is* ``wte.weight`` (one Parameter). ``parameters()`` yields it
once; ``state_dict()`` lists it under both names (loading either one loads both).

Init follows the GPT-2 paper / nanoGPT: N(0, 0.02) for every weight matrix and embedding, zero
biases, and the two projections that write into the residual stream (attn.c_proj, mlp.c_proj)
scaled by 1/sqrt(2 * n_layer), so the residual's variance does not grow with depth.

Generation: ``forward(ids, kv_cache=cache)`` appends the new tokens' keys/values to a
``fast.kv_cache.KVCache`` and attends to everything cached; positions continue from the cache's
length, or come per row from ``position_ids`` (left-padded batches). See fast/generate.py.
``decode_step(ids, cache)`` is the same computation for one new token per row, written for speed
as Llama's is (fast/llama.py): the same torch ops in the same order, without ``forward``'s input
checks, dispatch and module calls in every layer, so its logits are bitwise ``forward``'s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from myllm101.checks import expect_ndim
from myllm101.config import GPTConfig
from myllm101.fast.activations import gelu
from myllm101.fast.attention import attend
from myllm101.fast.blocks import (
    ModelOutput,
    causal_lm_loss,
    check_model_inputs,
    decode_attend,
    embed,
    init_gpt2_,
    keep_last,
    project,
    residual,
    run_blocks,
    run_blocks_cached,
    run_mlp,
    scored_lm_loss,
)
from myllm101.fast.dropout import Dropout
from myllm101.fast.embedding import Embedding
from myllm101.fast.layernorm import LayerNorm, layernorm
from myllm101.fast.linear import Linear


class CausalSelfAttention(nn.Module):
    """GPT-2's attention: c_attn (C -> 3C) gives [q | k | v], n_head heads of head_dim each attend
    causally (fast/attention.py ``attend``: SDPA or the flash kernel), c_proj maps back to C."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        C = cfg.n_embd
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.c_attn = Linear(C, 3 * C, bias=cfg.bias)
        self.c_proj = Linear(C, C, bias=cfg.bias)

    def forward(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None, kv_cache=None
    ) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C); key_padding_mask (B, past + T); kv_cache: one layer's."""
        expect_ndim("x", x, 3)
        B, T, _ = x.shape
        # split + view + transpose: views of qkv, whose backward is one cat of the three grads
        # (permute(2, 0, 3, 1, 4).unbind(0) stacked them and copied once more: this attention's
        # backward took 34 ms instead of 29 at B=8, T=256, C=384, one thread)
        q, k, v = (
            t.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
            for t in self.c_attn(x).split(self.n_head * self.head_dim, dim=2)
        )
        return self.c_proj(attend(q, k, v, key_padding_mask, causal=True, kv_cache=kv_cache))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.recompute = False  # blocks.set_recompute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_mlp(self, self._forward, x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(gelu(self.c_fc(x), approximate="tanh"))  # (B, T, C)


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        C = cfg.n_embd
        self.ln_1 = LayerNorm(C, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = LayerNorm(C, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.mlp = MLP(cfg)
        self.dropout = Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None, kv_cache=None
    ) -> torch.Tensor:
        # kv_cache: this block's layer of a KVCache (positions already entered at the embedding)
        a = self.attn(self.ln_1(x), key_padding_mask, kv_cache)
        x = x + self.dropout(a)
        return x + self.dropout(self.mlp(self.ln_2(x)))

    def decode(self, x: torch.Tensor, cache, index: int, attend) -> torch.Tensor:
        """GPT.decode_step's layer ``index`` (inference: no dropout): x (B, 1, C) -> (B, 1, C);
        forward's ops (LayerNorm, c_attn, cache append, attention, c_proj, GELU MLP) unchecked.
        attend(q (B, H, 1, D), k, v (B, H, S, D)) -> (B, H, 1, D): the attention core."""
        attn, mlp = self.attn, self.mlp
        B, H, D = x.shape[0], attn.n_head, attn.head_dim
        q, k, v = (
            t.view(B, 1, H, D).transpose(1, 2)  # (B, H, 1, D)
            for t in project(attn.c_attn, _layer_norm(self.ln_1, x)).split(H * D, dim=2)
        )
        k, v = cache.update(index, k, v)  # (B, H, S, D)
        o = attend(q, k, v).transpose(1, 2).reshape(B, 1, H * D)
        x = x + project(attn.c_proj, o)
        h = project(mlp.c_fc, _layer_norm(self.ln_2, x))
        return x + project(mlp.c_proj, F.gelu(h, approximate="tanh"))


def _layer_norm(norm: LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` as a plain call of fast/layernorm.py's ``layernorm`` (no module dispatch)."""
    return layernorm(x, norm.weight, norm.bias, norm.eps)


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = Embedding(cfg.block_size, cfg.n_embd)
        self.drop = Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.lm_head = Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.wte.weight  # one Parameter under two names
        self.gradient_checkpointing = False
        init_gpt2_(self, cfg.n_layer, ("attn.c_proj.weight", "mlp.c_proj.weight"))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        kv_cache=None,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        scored_only: bool = False,
    ) -> ModelOutput:
        """input_ids: (B, T) -> ModelOutput(logits (B, T, V), loss or None).

        attention_mask: (B, T), 1/True = real token (padding keys are never attended to); with
            a kv_cache it covers the cached tokens too: (B, past + T).
        labels: (B, T), usually input_ids; -100 marks positions without a target.
        kv_cache: a ``fast.kv_cache.KVCache``: the new tokens attend to the cached ones, their
            keys/values are appended, and the cache's length grows by T.
        position_ids: (B, T) positions per row (left padding: cumsum(mask) - 1); None =
            past .. past + T - 1 for every row.
        logits_to_keep: > 0: the logits of the last that many positions only (B, keep, V), what
            a prefill needs (fast/generate.py); 0: all of them.
        scored_only: with labels, the final norm, LM head and loss run on the scored positions
            only (blocks.scored_lm_loss): the same loss, logits (N, V) of those N positions.
        """
        past = check_model_inputs(
            self.cfg, input_ids, attention_mask, labels, kv_cache, position_ids
        )
        T = input_ids.shape[1]
        mask = None if attention_mask is None else attention_mask.bool()
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=input_ids.device)  # (T,)
        x = self.drop(residual(self.wte(input_ids)) + residual(self.wpe(position_ids)))  # (B, T, C)
        if kv_cache is None:
            x = run_blocks(self, self.h, x, mask)
        else:
            x = run_blocks_cached(self.h, x, mask, kv_cache)
        if scored_only:
            if labels is None:
                raise ValueError("scored_only: expected labels (it keeps the scored positions)")
            return ModelOutput(*scored_lm_loss(x, labels, self.ln_f, self.lm_head))
        x = keep_last(x, logits_to_keep, labels)
        logits = self.lm_head(self.ln_f(x))  # (B, T or keep, V)
        loss = None if labels is None else causal_lm_loss(logits, labels)
        return ModelOutput(logits, loss)

    @torch.inference_mode()
    def decode_step(
        self,
        input_ids: torch.Tensor,
        kv_cache,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        attend=None,
    ) -> torch.Tensor:
        """One token per row after a prefilled cache: input_ids (B, 1) -> logits (B, V).

        Same arguments and result as ``forward(input_ids, attention_mask, kv_cache=kv_cache,
        position_ids=position_ids).logits[:, -1]`` in eval mode, unchecked: attention_mask
        (B, past + 1) bool, left padding only; position_ids (B, 1). attend: the attention core
        (``Block.decode``), default ``decode_attention`` with that mask."""
        if position_ids is None:
            L = kv_cache.length  # tokens cached so far: the new one sits at position L
            pos = self.wpe.weight[L : L + 1]  # (1, C): what wpe(arange(L, L + 1)) gathers
        else:
            pos = F.embedding(position_ids, self.wpe.weight)  # (B, 1, C)
        x = residual(embed(self.wte, input_ids)) + residual(pos)  # (B, 1, C)
        attend = attend or decode_attend(attention_mask)
        for i, block in enumerate(self.h):
            x = block.decode(x, kv_cache, i, attend)
        kv_cache.advance(1)
        return project(self.lm_head, _layer_norm(self.ln_f, x))[:, -1]  # (B, V)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # the tied weight counts once
