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

Generation: ``forward(ids, kv_cache=cache)`` appends the new tokens' keys/values to a
``fast.generate.KVCache`` and attends to everything cached; positions continue from the cache's
length, or come per row from ``position_ids`` (left-padded batches). See fast/generate.py.
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


def check_model_inputs(
    cfg, input_ids, attention_mask=None, labels=None, kv_cache=None, position_ids=None
) -> int:
    """ids: (B, T) ints in [0, vocab_size), past + T <= block_size; labels (B, T);
    attention_mask (B, past + T) (it covers the cached tokens too); position_ids (B, T).
    Returns past, the number of tokens already in ``kv_cache`` (0 without one)."""
    expect_int("input_ids", input_ids)
    expect_ndim("input_ids", input_ids, 2)
    B, T = input_ids.shape
    past_length = cache_length(kv_cache, B)
    if past_length + T > cfg.block_size:
        cached = f" ({past_length} cached + {T} new)" if past_length else ""
        raise ValueError(
            f"input_ids: expected a sequence length <= block_size={cfg.block_size}, "
            f"got {past_length + T}{cached}"
        )
    check_ids(input_ids, cfg.vocab_size)  # skipped inside torch.compile (data-dependent)
    if attention_mask is not None:
        expect_shape("attention_mask", attention_mask, (B, past_length + T))
    if labels is not None:
        expect_int("labels", labels)
    if position_ids is not None:
        expect_int("position_ids", position_ids)
        expect_shape("position_ids", position_ids, (B, T))
    return past_length


def cache_length(kv_cache, batch_size: int) -> int:
    """Tokens already in ``kv_cache`` (0 without one); checks its batch size."""
    if kv_cache is None:
        return 0
    if kv_cache.batch_size != batch_size:
        raise ValueError(
            f"kv_cache: expected batch size {batch_size} (input_ids rows), "
            f"got {kv_cache.batch_size}"
        )
    return kv_cache.length


def residual(x: torch.Tensor) -> torch.Tensor:
    """Embeddings entering the residual stream: bf16/fp16 -> float32, wider dtypes unchanged.

    A model cast to bf16 keeps its weights (and so its GEMMs, via fast/linear.py) in bf16, but
    sums the residual stream, and so runs every norm, in float32: each layer's update is added
    without a bf16 rounding of the running sum (transformers rounds it at every layer), for a few
    elementwise ops per layer. Under autocast the embeddings are float32 already.
    """
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def run_blocks_cached(blocks: nn.ModuleList, x: torch.Tensor, mask, kv_cache, *args):
    """x through every block, block i reading and extending layer i of ``kv_cache``; then the
    cache's length moves past the T new tokens. No checkpointing: a cache is for inference."""
    for i, block in enumerate(blocks):
        x = block(x, mask, kv_cache.layer(i), *args)
    kv_cache.advance(x.shape[1])
    return x


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

    def forward(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None, kv_cache=None
    ) -> torch.Tensor:
        # kv_cache: this block's layer of a KVCache (positions already entered at the embedding)
        a = self.attn(self.ln_1(x), key_padding_mask, causal=True, kv_cache=kv_cache)
        x = x + self.dropout(a)
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
        kv_cache=None,
        position_ids: torch.Tensor | None = None,
    ) -> ModelOutput:
        """input_ids: (B, T) -> ModelOutput(logits (B, T, V), loss or None).

        attention_mask: (B, T), 1/True = real token (padding keys are never attended to); with
            a kv_cache it covers the cached tokens too: (B, past + T).
        labels: (B, T), usually input_ids; -100 marks positions without a target.
        kv_cache: a ``fast.generate.KVCache``: the new tokens attend to the cached ones, their
            keys/values are appended, and the cache's length grows by T.
        position_ids: (B, T) positions per row (left padding: cumsum(mask) - 1); None =
            past .. past + T - 1 for every row.
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
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        loss = None if labels is None else causal_lm_loss(logits, labels)
        return ModelOutput(logits, loss)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # the tied weight counts once
