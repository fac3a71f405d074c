"""What a training step keeps for backward, and that keeping less changes no number.

- ``scored_only=True`` (fast/blocks.py ``scored_lm_loss``): the LM head and loss on the scored
  positions only give the same loss and gradients as the whole (B, T, V) logits;
- ``swiglu`` keeps gate and up (not silu(gate) too), LoRA with dropout keeps x and a bool mask
  (not dropout(x) and a float mask): same outputs and gradients as the written-out forms;
- ``set_recompute`` ("mlp", "blocks"): same gradients, fewer bytes kept;
- ``prepare_model``'s recompute="auto": mlp for LoRA on a GPT / Llama, none for full.
Float64 throughout, so "the same" is tight: rtol 1e-10 (only the summation order differs).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from myllm101.config import GPTConfig, LlamaConfig
from myllm101.fast.activations import swiglu
from myllm101.fast.blocks import set_recompute
from myllm101.fast.dropout import dropout_mask, dropout_with_mask
from myllm101.fast.gpt import GPT
from myllm101.fast.llama import Llama
from myllm101.fast.lora import LoRALinear, _DroppedLoRAUpdate
from myllm101.finetune.run import prepare_model

RTOL, ATOL = 1e-10, 1e-12
V = 40


def tiny(kind: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "gpt":
        cfg = GPTConfig(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=16)
        model = GPT(cfg)
    else:
        cfg = LlamaConfig(vocab_size=V, block_size=16, n_layer=2, n_head=4, n_kv_head=2,
                          n_embd=16, intermediate_size=24)  # fmt: skip
        model = Llama(cfg)
    return model.double().train()


def batch(seed: int, B: int = 3, T: int = 10, unscored: float = 0.6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, T), generator=g)
    labels = ids.clone()
    labels[torch.rand(B, T, generator=g) < unscored] = -100
    mask = torch.ones(B, T, dtype=torch.long)
    mask[-1, -2:] = 0  # a padded row
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def loss_and_grads(model, b, **kw) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(**b, **kw)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def saved_bytes(fn) -> int:
    """Bytes of the distinct tensors autograd keeps for backward while ``fn()`` runs."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


# ---- scored positions only ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gpt", "llama"])
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), unscored=st.sampled_from([0.0, 0.5, 0.9]))
def test_scored_only_gives_the_same_loss_and_gradients(kind, seed, unscored):
    model = tiny(kind)
    b = batch(seed, unscored=unscored)
    if (b["labels"][:, 1:] != -100).sum() == 0:
        b["labels"][0, 1] = 3  # at least one scored position: the loss of none is nan
    full, g_full = loss_and_grads(model, b)
    mine, g_mine = loss_and_grads(model, b, scored_only=True)
    torch.testing.assert_close(mine.loss, full.loss, rtol=RTOL, atol=ATOL)
    assert g_mine.keys() == g_full.keys()
    for name in g_full:
        torch.testing.assert_close(g_mine[name], g_full[name], rtol=RTOL, atol=ATOL, msg=name)
    # the logits are those of the scored positions, in row-major order
    target = F.pad(b["labels"][:, 1:], (0, 1), value=-100)
    torch.testing.assert_close(mine.logits, full.logits[target != -100], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind", ["gpt", "llama"])
def test_scored_only_needs_labels_and_scores_nothing_like_the_whole(kind):
    model = tiny(kind)
    b = batch(0)
    with pytest.raises(ValueError, match="scored_only: expected labels"):
        model(b["input_ids"], scored_only=True)
    b["labels"][:] = -100  # nothing scored: what the whole-logits loss gives (fast/loss.py)
    whole, mine = model(**b).loss, model(**b, scored_only=True).loss
    torch.testing.assert_close(mine, whole, rtol=0, atol=0, equal_nan=True)


# ---- SwiGLU and LoRA keep less --------------------------------------------------------------


@settings(max_examples=10, deadline=None)
@given(shape=st.sampled_from([(5,), (2, 3, 4), (1, 7, 6)]), seed=st.integers(0, 1000))
def test_swiglu_keeps_two_tensors_and_matches_the_written_out_form(shape, seed):
    g = torch.Generator().manual_seed(seed)
    gate = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    up = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad(swiglu(gate, up), (gate, up), dy)
    plain = torch.autograd.grad(F.silu(gate) * up, (gate, up), dy)
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)
    one = gate.numel() * 8
    assert saved_bytes(lambda: swiglu(gate, up)) == 2 * one
    assert saved_bytes(lambda: F.silu(gate) * up) == 3 * one  # what it replaces
    # only one input needing a gradient still works (a frozen gate, say)
    (d_up,) = torch.autograd.grad(swiglu(gate.detach(), up), (up,), dy)
    torch.testing.assert_close(d_up, plain[1], rtol=RTOL, atol=ATOL)


@settings(max_examples=10, deadline=None)
@given(lead=st.sampled_from([(6,), (2, 5), (2, 3, 2)]), p=st.sampled_from([0.1, 0.5]),
       seed=st.integers(0, 1000))  # fmt: skip
def test_lora_dropout_update_matches_the_written_out_form(lead, p, seed):
    g = torch.Generator().manual_seed(seed)
    d_in, d_out, r, scale = 7, 5, 3, 2.5
    x = torch.randn(*lead, d_in, generator=g, dtype=torch.float64, requires_grad=True)
    A = torch.randn(r, d_in, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(d_out, r, generator=g, dtype=torch.float64, requires_grad=True)
    keep = dropout_mask(x, p, g)
    dy = torch.randn(*lead, d_out, generator=g, dtype=torch.float64)
    ours = _DroppedLoRAUpdate.apply(x, A, B, keep, p, scale)
    plain = scale * F.linear(F.linear(dropout_with_mask(x, keep, p), A), B)
    torch.testing.assert_close(ours, plain, rtol=RTOL, atol=ATOL)
    for a, b in zip(torch.autograd.grad(ours, (x, A, B), dy),
                    torch.autograd.grad(plain, (x, A, B), dy)):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)


def test_lora_layer_with_dropout_keeps_x_once_for_two_adapters():
    """q_proj and v_proj adapters read the same x: it is kept once, with 1-byte masks."""
    torch.manual_seed(0)
    q = LoRALinear(torch.nn.Linear(64, 64, bias=False), r=4, alpha=8, dropout=0.1).train()
    v = LoRALinear(torch.nn.Linear(64, 16, bias=False), r=4, alpha=8, dropout=0.1).train()
    x = torch.randn(8, 32, 64, requires_grad=True)
    kept = saved_bytes(lambda: (q(x), v(x)))
    x_bytes = x.numel() * 4
    assert kept < 2 * x_bytes  # written out: dropout(x) and a float mask each, 4 * x_bytes
    # eval mode, or p = 0, is the plain three-GEMM form (nothing random)
    q.eval()
    torch.testing.assert_close(
        q(x), F.linear(x, q.weight) + q.scale * (x @ q.lora_A.T) @ q.lora_B.T
    )


def test_lora_dropout_update_under_bf16_autocast_runs_and_is_close():
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(32, 16), r=4, alpha=8, dropout=0.2).train()
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(4, 6, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    y.float().sum().backward()
    assert layer.lora_A.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
    assert torch.isfinite(layer.lora_A.grad).all() and torch.isfinite(x.grad).all()


# ---- recompute -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gpt", "llama"])
@pytest.mark.parametrize("mode", ["mlp", "blocks"])
def test_recompute_gives_the_same_gradients_and_keeps_less(kind, mode):
    model = tiny(kind)
    b = batch(1, unscored=0.3)
    base, g_base = loss_and_grads(model, b)
    kept_base = saved_bytes(lambda: model(**b))
    set_recompute(model, mode)
    mine, g_mine = loss_and_grads(model, b)
    kept = saved_bytes(lambda: model(**b))
    torch.testing.assert_close(mine.loss, base.loss, rtol=RTOL, atol=ATOL)
    for name in g_base:
        torch.testing.assert_close(g_mine[name], g_base[name], rtol=RTOL, atol=ATOL, msg=name)
    assert kept < kept_base
    set_recompute(model, "none")
    assert saved_bytes(lambda: model(**b)) == kept_base


def test_set_recompute_refuses_unknown_modes_and_models():
    with pytest.raises(ValueError, match="recompute: expected one of none, mlp, blocks, got 'all'"):
        set_recompute(tiny("gpt"), "all")
    with pytest.raises(ValueError, match="recompute: expected one of our GPT / Llama / BERT"):
        set_recompute(torch.nn.Linear(2, 2), "mlp")


def test_prepare_model_recomputes_frozen_mlps_for_lora_only():
    lora = prepare_model(tiny("llama").float(), "sft", "lora", r=2, alpha=4)
    assert all(layer.mlp.recompute for layer in lora.layers) and not lora.gradient_checkpointing
    full = prepare_model(tiny("llama").float(), "sft", "full")
    assert not any(layer.mlp.recompute for layer in full.layers)
    blocks = prepare_model(tiny("gpt").float(), "sft", "lora", r=2, alpha=4, recompute="blocks")
    assert blocks.gradient_checkpointing and not any(b.mlp.recompute for b in blocks.h)
    with pytest.raises(ValueError, match="recompute: expected auto or one of"):
        prepare_model(tiny("gpt").float(), "sft", "lora", recompute="everything")
