"""LLaMA 2/3 (Touvron et al., 2023) in PyTorch, built from the fast layers.

    x = embed_tokens(ids)                                                  # (B, T, C)
    for each layer:  x = x + self_attn(input_layernorm(x))    # causal, RoPE, grouped-query (SDPA)
                     x = x + mlp(post_attention_layernorm(x))  # down(silu(gate(h)) * up(h))
    logits = lm_head(norm(x))                                              # (B, T, V)

``state_dict`` names are HF ``LlamaForCausalLM``'s without the ``model.`` prefix (see
reference/llama.py). RoPE tables are non-persistent buffers inside each attention block, rebuilt
in float64 on ``.double()``, so they never appear in the state_dict.

Generation: ``forward(ids, kv_cache=cache, position_ids=None)`` as in fast/gpt.py; RoPE rotates
the new q and k at positions cache.length.. (or at ``position_ids``) before k joins the cache.
``forward(..., logits_to_keep=1)`` computes the LM head for the last position only (a prefill).

``decode_step(ids, cache)`` is the same computation for one new token per row, written for speed:
a decoding step reads every weight once for a single token, so besides the weight reads its cost
is Python and dispatch work per op, which ``forward`` spends on input checks, kernel dispatch
queries, module hooks and RoPE table slicing in every layer. ``decode_step`` checks nothing (the
caller, fast/generate.py, checked the prompt once), builds the RoPE rows and the padding mask
once per step instead of once per layer, and calls the same torch ops in the same order, so
its float32 logits are bitwise those of ``forward`` with the cache (tests/test_fast_decode.py).
Quantized projections (any module in place of a Linear) are called as modules.

Per-layer shapes (a structurally pruned model, myllm101/prune/structured.py): layer i is built
with ``cfg.n_head_of(i)`` query heads, ``cfg.n_kv_head_of(i)`` kv heads of ``cfg.head_dim`` each
and ``cfg.intermediate_size_of(i)`` MLP neurons; every op reads its sizes from its own module.
A KV cache sized for the unpruned model (``KVCache.for_model``: ``cfg.n_kv_head`` heads in every
layer) serves a layer with fewer kv heads: they fill its first slots (``KVCache.update``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from myllm101.config import LlamaConfig
from myllm101.fast.activations import swiglu
from myllm101.fast.attention import MultiHeadAttention
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
from myllm101.fast.linear import Linear
from myllm101.fast.rmsnorm import RMSNorm, rms_norm
from myllm101.fast.rope import rotate, signed_sin_table


class LlamaMLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), hidden width ``cfg.intermediate_size_of(layer)``."""

    def __init__(self, cfg: LlamaConfig, layer: int = 0):
        super().__init__()
        C, I = cfg.n_embd, cfg.intermediate_size_of(layer)
        self.gate_proj = Linear(C, I, bias=False)
        self.up_proj = Linear(C, I, bias=False)
        self.down_proj = Linear(I, C, bias=False)
        # fast/fuse.py may replace gate/up_proj by one (2I, C) projection [gate | up] (inference)
        self.gate_up_proj: nn.Linear | None = None
        self.recompute = False  # blocks.set_recompute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_mlp(self, self._forward, x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is None:
            return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))  # (B, T, C)
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)  # (B, T, I) each: views of one GEMM
        return self.down_proj(swiglu(gate, up))  # (B, T, C)


class LlamaBlock(nn.Module):
    """Layer ``layer`` of a Llama, with that layer's head counts and MLP width."""

    def __init__(self, cfg: LlamaConfig, layer: int = 0):
        super().__init__()
        C = cfg.n_embd
        self.input_layernorm = RMSNorm(C, eps=cfg.rms_norm_eps)
        self.self_attn = MultiHeadAttention(
            C,
            cfg.n_head_of(layer),
            cfg.n_kv_head_of(layer),
            bias=False,
            rope_theta=cfg.rope_theta,
            max_seq_len=cfg.block_size,
            head_dim=cfg.head_dim,
        )
        self.post_attention_layernorm = RMSNorm(C, eps=cfg.rms_norm_eps)
        self.mlp = LlamaMLP(cfg, layer)
        self.dropout = Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        kv_cache=None,
        position_ids: torch.Tensor | None = None,
        offset: int = 0,
    ) -> torch.Tensor:
        """kv_cache: this layer of a KVCache; RoPE positions are position_ids (B, T) if given,
        else offset .. offset + T - 1 (offset = the number of cached tokens)."""
        h = self.self_attn(
            self.input_layernorm(x),
            key_padding_mask,
            causal=True,
            kv_cache=kv_cache,
            position_ids=position_ids,
            offset=offset,
        )
        x = x + self.dropout(h)
        return x + self.dropout(self.mlp(self.post_attention_layernorm(x)))

    def decode(self, x: torch.Tensor, cache, index: int, rot, attend) -> torch.Tensor:
        """Llama.decode_step's layer ``index``: x (B, 1, C) -> (B, 1, C); the same ops as forward
        (RMSNorm, projections, RoPE, cache append, SDPA, SwiGLU) without checks or dispatch.
        attend(q (B, H, 1, D), k, v (B, Hkv, S, D)) -> (B, H, 1, D): the attention core."""
        attn, mlp = self.self_attn, self.mlp
        B, H, Hkv, D = x.shape[0], attn.n_heads, attn.n_kv_heads, attn.head_dim
        h = rms_norm(x, self.input_layernorm.weight, self.input_layernorm.eps)
        if attn.qkv_proj is None:
            q, k, v = project(attn.q_proj, h), project(attn.k_proj, h), project(attn.v_proj, h)
        else:
            q, k, v = project(attn.qkv_proj, h).split((H * D, Hkv * D, Hkv * D), dim=-1)
        q = rotate(q.view(B, 1, H, D).transpose(1, 2), *rot)  # (B, H, 1, D)
        k = rotate(k.view(B, 1, Hkv, D).transpose(1, 2), *rot)  # (B, Hkv, 1, D)
        k, v = cache.update(index, k, v.view(B, 1, Hkv, D).transpose(1, 2))  # (B, Hkv, S, D)
        o = attend(q, k, v)
        x = x + project(attn.o_proj, o.transpose(1, 2).reshape(B, 1, H * D))
        norm = self.post_attention_layernorm
        h = rms_norm(x, norm.weight, norm.eps)
        if mlp.gate_up_proj is None:
            gate, up = project(mlp.gate_proj, h), project(mlp.up_proj, h)
        else:
            gate, up = project(mlp.gate_up_proj, h).chunk(2, dim=-1)
        return x + project(mlp.down_proj, F.silu(gate) * up)


class Llama(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.n_embd)
        self.layers = nn.ModuleList(LlamaBlock(cfg, i) for i in range(cfg.n_layer))
        # every layer's RoPE tables are the same (one head_dim, theta, length): one copy, shared,
        # not n_layer (SmolLM2: 30 x 4 MB of cos/sin for its 8192 positions)
        for layer in self.layers[1:]:
            layer.self_attn.rope = self.layers[0].self_attn.rope
        self.norm = RMSNorm(cfg.n_embd, eps=cfg.rms_norm_eps)
        self.lm_head = Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight  # one Parameter under two names
        self.gradient_checkpointing = False
        init_gpt2_(self, cfg.n_layer, ("self_attn.o_proj.weight", "mlp.down_proj.weight"))

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
        """input_ids: (B, T) -> ModelOutput(logits (B, T, V), loss or None); see GPT.forward
        (attention_mask covers the cached tokens too; position_ids (B, T) are RoPE positions;
        logits_to_keep > 0: logits of the last that many positions only, (B, keep, V);
        scored_only: with labels, logits (N, V) of the N scored positions: scored_lm_loss)."""
        past = check_model_inputs(
            self.cfg, input_ids, attention_mask, labels, kv_cache, position_ids
        )
        mask = None if attention_mask is None else attention_mask.bool()
        x = residual(self.embed_tokens(input_ids))  # (B, T, C); positions enter through RoPE
        if kv_cache is None and position_ids is None:
            x = run_blocks(self, self.layers, x, mask)
        elif kv_cache is None:
            x = run_blocks(self, self.layers, x, mask, None, position_ids)
        else:
            x = run_blocks_cached(self.layers, x, mask, kv_cache, position_ids, past)
        if scored_only:
            if labels is None:
                raise ValueError("scored_only: expected labels (it keeps the scored positions)")
            return ModelOutput(*scored_lm_loss(x, labels, self.norm, self.lm_head))
        x = keep_last(x, logits_to_keep, labels)
        logits = self.lm_head(self.norm(x))  # (B, T or keep, V)
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
        position_ids=position_ids).logits[:, -1]`` (see the module docstring), unchecked:
        attention_mask (B, past + 1) bool, left padding only; position_ids (B, 1). attend: the
        attention core (``LlamaBlock.decode``), default ``decode_attention`` with that mask
        (serve/decode.py passes one that attends row by row, each over its own keys)."""
        rope = self.layers[0].self_attn.rope  # every layer's tables are the same
        if position_ids is None:
            L = kv_cache.length  # tokens cached so far: the new one sits at position L
            cos, sin = rope.cos[L : L + 1], rope.sin[L : L + 1]  # (1, D)
        else:
            cos, sin = rope.cos[position_ids][:, None], rope.sin[position_ids][:, None]  # (B,1,1,D)
        rot = (cos, signed_sin_table(sin))  # RoPE's rotate_half sign, once for all layers
        attend = attend or decode_attend(attention_mask)
        x = residual(embed(self.embed_tokens, input_ids))  # (B, 1, C)
        for i, layer in enumerate(self.layers):
            x = layer.decode(x, kv_cache, i, rot, attend)
        kv_cache.advance(1)
        x = rms_norm(x, self.norm.weight, self.norm.eps)
        return project(self.lm_head, x)[:, -1]  # (B, V)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
