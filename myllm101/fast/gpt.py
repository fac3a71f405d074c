"""GPT-2 (Radford et al., 2019) in PyTorch, built from the fast layers; autograd does the backward.

    x = wte(ids) + wpe(0..T-1)                                   # (B, T, C)
    for each block:  x = x + attn(ln_1(x))                       # causal self-attention (SDPA)
                     x = x + c_proj(gelu_tanh(c_fc(ln_2(x))))    # MLP, width 4C
    logits = lm_head(ln_f(x))                                    # (B, T, V), weight tied to wte
    loss = cross_entropy(logits[:, :-1], labels[:, 1:])          # labels shifted inside, like HF

``state_dict`` names (the reference ``ReferenceGPT`` reads the same dict)::

    wte.weight  wpe.weight  h.{i}.ln_1.*  h.{i}.attn.{q,k,v,o}_proj.*  h.{i}.ln_2.*
    h.{i}.mlp.c_fc.*  h.{i}.mlp.c_proj.*  ln_f.*  lm_head.weight

Weight tying: ``lm_head.weight`` *is* ``wte.weight`` (one Parameter). ``parameters()`` yields it
once; ``state_dict()`` lists it under both names (loading either one loads both).

Init follows the GPT-2 paper / nanoGPT: N(0, 0.02) for every weight matrix and embedding, zero
biases, and the two projections that write into the residual stream (attn.o_proj, mlp.c_proj)
scaled by 1/sqrt(2 * n_layer), so the residual's variance does not grow with depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from myllm101.checks import expect_int, expect_ndim, expect_shape
from myllm101.config import GPTConfig
from myllm101.fast.activations import gelu
from myllm101.fast.attention import MultiHeadAttention
from myllm101.fast.dropout import Dropout
from myllm101.fast.embedding import Embedding, check_ids
from myllm101.fast.layernorm import LayerNorm
from myllm101.fast.linear import Linear
from myllm101.fast.loss import cross_entropy

# ---------------------------------------------------------------------------------------------
# pieces shared by the three fast models (llama.py and bert.py import them)


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, T, V) for language models, (B, num_labels) for classification
    loss: torch.Tensor | None = None  # scalar, when labels were given

    def __iter__(self):  # logits, loss = model(...) also works
        return iter((self.logits, self.loss))


def check_model_inputs(cfg, input_ids, attention_mask=None, labels=None) -> None:
    """ids: (B, T) ints in [0, vocab_size), T <= block_size; mask and labels (B, T)."""
    expect_int("input_ids", input_ids)
    expect_ndim("input_ids", input_ids, 2)
    B, T = input_ids.shape
    if T > cfg.block_size:
        raise ValueError(
            f"input_ids: expected a sequence length <= block_size={cfg.block_size}, got {T}"
        )
    check_ids(input_ids, cfg.vocab_size)  # skipped inside torch.compile (data-dependent)
    if attention_mask is not None:
        expect_shape("attention_mask", attention_mask, (B, T))
    if labels is not None:
        expect_int("labels", labels)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Position t predicts labels[t + 1]; -100 is ignored. logits (B, T, V), labels (B, T)."""
    expect_shape("labels", labels, logits.shape[:2])
    V = logits.shape[-1]
    return cross_entropy(
        logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100
    )


def run_blocks(model: nn.Module, blocks: nn.ModuleList, x: torch.Tensor, *args) -> torch.Tensor:
    """x through every block; with ``model.gradient_checkpointing`` (and training), each block's
    activations are dropped after forward and recomputed in backward: memory for compute."""
    use_ckpt = model.gradient_checkpointing and model.training and torch.is_grad_enabled()
    for block in blocks:
        x = checkpoint(block, x, *args, use_reentrant=False) if use_ckpt else block(x, *args)
    return x


def init_gpt2_(model: nn.Module, n_layer: int, residual_names: tuple[str, ...]) -> None:
    """GPT-2 init in place: N(0, 0.02) weights and embeddings, zero biases, norms untouched
    (ones), residual-stream projections N(0, 0.02 / sqrt(2 * n_layer))."""
    for name, p in model.named_parameters():
        if p.dim() < 2:
            if name.endswith(".bias"):
                nn.init.zeros_(p)
            continue
        std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(residual_names) else 0.02
        nn.init.normal_(p, mean=0.0, std=std)


# ---------------------------------------------------------------------------------------------


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(gelu(self.c_fc(x), approximate="tanh"))  # (B, T, C)


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        C = cfg.n_embd
        self.ln_1 = LayerNorm(C, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.attn = MultiHeadAttention(C, cfg.n_head, bias=cfg.bias, max_seq_len=cfg.block_size)
        self.ln_2 = LayerNorm(C, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.mlp = MLP(cfg)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.dropout(
            self.attn(self.ln_1(x), causal=True, key_padding_mask=key_padding_mask)
        )
        return x + self.dropout(self.mlp(self.ln_2(x)))


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
        init_gpt2_(self, cfg.n_layer, ("attn.o_proj.weight", "mlp.c_proj.weight"))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> ModelOutput:
        """input_ids: (B, T) -> ModelOutput(logits (B, T, V), loss or None).

        attention_mask: (B, T), 1/True = real token (padding keys are never attended to).
        labels: (B, T), usually input_ids; -100 marks positions without a target.
        """
        check_model_inputs(self.cfg, input_ids, attention_mask, labels)
        T = input_ids.shape[1]
        mask = None if attention_mask is None else attention_mask.bool()
        pos = torch.arange(T, device=input_ids.device)
        x = self.drop(self.wte(input_ids) + self.wpe(pos))  # (B, T, C)
        x = run_blocks(self, self.h, x, mask)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        loss = None if labels is None else causal_lm_loss(logits, labels)
        return ModelOutput(logits, loss)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # the tied weight counts once
