"""Pieces the three fast models (gpt.py, llama.py, bert.py) share; the reference twin is
``reference/blocks.py``.

    ModelOutput(logits, loss)          what every model's forward returns (also unpacks as a pair)
    check_model_inputs(cfg, ids, ...)  ids / mask / labels / position_ids against the config and
                                       the KV cache; returns the number of cached tokens
    residual(x)                        embeddings entering the residual stream, in float32
    run_blocks(model, blocks, x, ...)  x through every block (gradient checkpointing if asked)
    set_recompute(model, mode)         what backward recomputes: "none", "mlp" or whole "blocks"
    run_mlp(mlp, fn, x)                an MLP's fn(x), recomputed in backward when it is asked to
    run_blocks_cached(...)             the same, reading and extending a KV cache
    keep_last(x, n)                    the last n positions only, for the LM head (prefill)
    causal_lm_loss(logits, labels)     next-token cross-entropy (labels shifted inside)
    scored_lm_loss(x, labels, ...)     the same loss with the LM head run on scored positions only
    shift_labels(labels)               labels[:, 1:] padded with -100: the targets of each position
    token_loss(logits, labels)         cross-entropy at every position (BERT's masked LM)
    init_gpt2_(model, n_layer, names)  the GPT-2 / nanoGPT initialization, in place
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from myllm101.checks import expect_int, expect_ndim, expect_shape
from myllm101.fast.embedding import Embedding, check_ids
from myllm101.fast.int8 import Int8Linear
from myllm101.fast.linear import Linear, to_module_dtype, to_weight_dtype
from myllm101.fast.loss import cross_entropy


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
    attention_mask (B, past + T) (it covers the cached tokens too), or, without a cache, (B, T, T)
    bool: which keys each query may see (packed examples; and-ed with the causal mask of a causal
    model); position_ids (B, T).
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
    if attention_mask is not None and getattr(attention_mask, "ndim", 2) == 3:
        if kv_cache is not None:
            raise ValueError("attention_mask: a (B, T, T) mask is for training (no kv_cache), "
                             "expected (B, past + T) with a cache")  # fmt: skip
        expect_shape("attention_mask", attention_mask, (B, T, T))
    elif attention_mask is not None:
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


def keep_last(x: torch.Tensor, logits_to_keep: int, labels=None) -> torch.Tensor:
    """x (B, T, C) -> its last ``logits_to_keep`` positions (B, keep, C), or all of x for 0:
    a prefill needs only the last position's logits (the LM head is the biggest GEMM)."""
    if logits_to_keep < 0:
        raise ValueError(f"logits_to_keep: expected an int >= 0 (0 = all), got {logits_to_keep}")
    if logits_to_keep == 0:
        return x
    if labels is not None:
        raise ValueError("logits_to_keep: expected 0 when labels are given (the loss needs all)")
    return x[:, -logits_to_keep:]


def shift_labels(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """(B, T) -> (B, T): row t holds labels[t + 1], the last column ``ignore_index``.
    [[5, 6, 7]] -> [[6, 7, -100]]"""
    return F.pad(labels[:, 1:], (0, 1), value=ignore_index)


@torch.compiler.disable
def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Position t predicts labels[t + 1]; -100 is ignored. logits (B, T, V), labels (B, T).

    The labels move, not the logits: ``logits[:, :-1]`` would copy the (B, T, V) logits in
    forward and zero-fill a (B, T, V) gradient in backward (64 MB each at T=256, B=8, V=8192:
    the loss took 107 ms instead of 62, 2 threads); the last position gets target -100 instead,
    the same loss and gradient (that row's is 0).

    Never compiled (``torch.compiler.disable``: a compiled model breaks its graph here). A graph
    that returns the logits and the loss gets no gradient for the logits output in backward, and
    AOTAutograd fills a (B, T, V) zero tangent for it and adds it in; outside the graph the loss
    hands the logits their real gradient (and runs ``cross_entropy``'s eager path). Compiled GPT
    step at the shape above, 2 threads: 4-7% faster."""
    expect_shape("labels", labels, logits.shape[:2])
    return token_loss(logits, shift_labels(labels))


@torch.compiler.disable
def scored_lm_loss(
    x: torch.Tensor, labels: torch.Tensor, final_norm: nn.Module, lm_head: nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """``causal_lm_loss(lm_head(final_norm(x)), labels)`` with the final norm, the LM head and the
    loss run only where a position is scored (labels[t + 1] != -100): x (B, T, C), labels (B, T)
    -> (logits (N, V) of the N scored positions in row-major order, loss).

    The same loss and gradients (the norm works per position; unscored positions give no loss
    and no gradient), for a fraction of the work when few positions are scored: fine-tuning on
    responses only scored 15 of 512 positions of the SmolLM2 benchmark batch, whose (512, 49152)
    logits, their log-softmax and their gradient are 96 MB each in float32. Not compiled: N
    depends on the labels."""
    expect_shape("labels", labels, x.shape[:2])
    target = shift_labels(labels)  # (B, T)
    keep = target != -100
    logits = lm_head(final_norm(x[keep]))  # (N, V)
    return logits, cross_entropy(logits, target[keep], ignore_index=-100)


@torch.compiler.disable
def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every position's logits (..., V) against labels (...), -100 ignored;
    never compiled, like ``causal_lm_loss`` (BERT's masked-LM loss)."""
    expect_shape("labels", labels, logits.shape[:-1])
    V = logits.shape[-1]
    return cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100)


def run_blocks(model: nn.Module, blocks: nn.ModuleList, x: torch.Tensor, *args) -> torch.Tensor:
    """x through every block; with ``model.gradient_checkpointing`` (and training), each block's
    activations are dropped after forward and recomputed in backward: memory for compute."""
    use_ckpt = model.gradient_checkpointing and model.training and torch.is_grad_enabled()
    for block in blocks:
        x = checkpoint(block, x, *args, use_reentrant=False) if use_ckpt else block(x, *args)
    return x


RECOMPUTE_MODES = ("none", "mlp", "blocks")


def set_recompute(model: nn.Module, mode: str) -> None:
    """What a training step keeps for backward and what it recomputes there, in place.

    "none": every activation is kept. "blocks": each block's (``model.gradient_checkpointing``):
    about one forward more, the least memory. "mlp": only each block's MLP is recomputed (its
    input kept, its (B, T, 4C)-wide hidden activations dropped): the GEMMs before the activation
    run again in backward (the down projection's output is not needed, and torch's non-reentrant
    checkpoint stops before it). Worth it when the MLP is frozen (LoRA on the attention): there the
    hidden activations are most of what a step keeps (SmolLM2, 30 layers, 512 tokens: 180 MB of
    ~400 MB), for ~20% more FLOPs."""
    if mode not in RECOMPUTE_MODES:
        raise ValueError(f"recompute: expected one of {', '.join(RECOMPUTE_MODES)}, got {mode!r}")
    if not hasattr(model, "gradient_checkpointing"):
        raise ValueError(f"recompute: expected one of our GPT / Llama / BERT models, got "
                         f"{type(model).__name__}")  # fmt: skip
    model.gradient_checkpointing = mode == "blocks"
    for m in model.modules():
        if hasattr(m, "recompute"):
            m.recompute = mode == "mlp"


def run_mlp(mlp: nn.Module, fn, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)``, or the same through a checkpoint when ``mlp.recompute`` and training (see
    ``set_recompute``)."""
    if mlp.recompute and mlp.training and torch.is_grad_enabled():
        return checkpoint(fn, x, use_reentrant=False)
    return fn(x)


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


# ---- the lean decode step (GPT.decode_step, Llama.decode_step) ------------------------------


def decode_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """A decode step's attention core: q (B, H, 1, D), k, v (B, Hkv, S, D) -> (B, H, 1, D). One
    query sees every cached key, so only padding is masked: mask (B, 1, 1, S) bool or None (a row
    always sees itself)."""
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1]
    )


def decode_attend(attention_mask: torch.Tensor | None):
    """The default attention core of a decode step: ``decode_attention`` hiding the padding keys
    of ``attention_mask`` (B, S) (left padding; None: every key)."""
    mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # (B,1,1,S)
    return functools.partial(decode_attention, mask=mask)


def embed(module: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """A token embedding's rows without the id check (``F.embedding`` directly) for a plain
    Embedding; any other table (an int8 one, tied to a quantized head) through its forward."""
    if type(module) in (Embedding, nn.Embedding):
        return F.embedding(ids, module.weight)
    return module(ids)


def project(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A Linear's output without its per-call checks (``F.linear`` directly); an Int8Linear
    through ``forward`` itself (module hooks do not run: the decode steps call this ~100 times a
    token); any other module (int4, LoRA) through its call, x cast to its weight's dtype as
    attention does (a LoRA layer over bf16 weights; a quantized one casts its input itself)."""
    if type(module) in (Linear, nn.Linear):
        return F.linear(to_weight_dtype(x, module.weight), module.weight, module.bias)
    if type(module) is Int8Linear:  # no weight to look up, no hooks: its forward directly
        return module.forward(x)
    return module(to_module_dtype(x, module))
