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
"""

from __future__ import annotations

import torch
from torch import nn

from myllm101.config import LlamaConfig
from myllm101.fast.activations import swiglu
from myllm101.fast.attention import MultiHeadAttention
from myllm101.fast.blocks import (
    ModelOutput,
    causal_lm_loss,
    check_model_inputs,
    init_gpt2_,
    residual,
    run_blocks,
    run_blocks_cached,
)
from myllm101.fast.dropout import Dropout
from myllm101.fast.embedding import Embedding
from myllm101.fast.linear import Linear
from myllm101.fast.rmsnorm import RMSNorm


class LlamaMLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), hidden width ``intermediate_size``."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        C, I = cfg.n_embd, cfg.intermediate_size
        self.gate_proj = Linear(C, I, bias=False)
        self.up_proj = Linear(C, I, bias=False)
        self.down_proj = Linear(I, C, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))  # (B, T, C)


class LlamaBlock(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        C = cfg.n_embd
        self.input_layernorm = RMSNorm(C, eps=cfg.rms_norm_eps)
        self.self_attn = MultiHeadAttention(
            C,
            cfg.n_head,
            cfg.n_kv_head,
            bias=False,
            rope_theta=cfg.rope_theta,
            max_seq_len=cfg.block_size,
        )
        self.post_attention_layernorm = RMSNorm(C, eps=cfg.rms_norm_eps)
        self.mlp = LlamaMLP(cfg)
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


class Llama(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.n_embd)
        self.layers = nn.ModuleList(LlamaBlock(cfg) for _ in range(cfg.n_layer))
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
    ) -> ModelOutput:
        """input_ids: (B, T) -> ModelOutput(logits (B, T, V), loss or None); see GPT.forward
        (attention_mask covers the cached tokens too; position_ids (B, T) are RoPE positions)."""
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
        logits = self.lm_head(self.norm(x))  # (B, T, V)
        loss = None if labels is None else causal_lm_loss(logits, labels)
        return ModelOutput(logits, loss)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
