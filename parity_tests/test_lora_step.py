"""A LoRA fine-tuning step: the NumPy reference (reference model on merged weights, the chain rule
to A and B, reference AdamW) == the fast one (apply_lora on the fast model, autograd, torch AdamW),
in float64, for GPT-2 and LLaMA, over several steps.

The two are independent: the reference never builds an adapter layer, it runs the plain reference
model with W' = W + (alpha / r) B A and turns dW' into dA = s B^T dW', dB = s dW' A^T
(``reference.lora.lora_weight_backward``); the fast model runs x W^T + s (x A^T) B^T and autograd.

Tolerance: rtol 1e-10 as for the whole-model parity tests (test_gpt.py / test_llama.py): the same
float64 math summed in another order (merged weight vs two thin GEMMs: ~1e-16 relative per layer).
AdamW's first step moves each entry by about lr * g / |g|, which the tiny gradient differences do
not change beyond that; a gradient that is zero in exact arithmetic is zero on both sides too
(dA while B = 0), so Adam never amplifies rounding noise here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from myllm101.config import GPTConfig, LlamaConfig
from myllm101.fast.gpt import GPT
from myllm101.fast.llama import Llama
from myllm101.finetune.adapters import apply_lora, base_state, lora_modules
from myllm101.reference import lora as ref_lora
from myllm101.reference.gpt import ReferenceGPT
from myllm101.reference.llama import ReferenceLlama
from myllm101.reference.optim import AdamW
from parity_tests.helpers import assert_close, rng_array, seeds
from parity_tests.test_gpt import randomize_

RTOL, ATOL = 1e-10, 1e-12
LR, BETAS, EPS, WD = 1e-2, (0.9, 0.95), 1e-8, 0.1
ALPHA, R = 6.0, 3

MODELS = {
    # GPT-2 with its tied head; LLaMA with grouped-query heads and an untied head
    "gpt": (
        GPT,
        ReferenceGPT,
        GPTConfig(vocab_size=29, block_size=12, n_layer=2, n_head=2, n_embd=12),
        ["c_attn", "mlp.c_proj"],
    ),
    "llama": (
        Llama,
        ReferenceLlama,
        LlamaConfig(vocab_size=31, block_size=12, n_layer=2, n_head=4, n_kv_head=2, n_embd=16,
                    intermediate_size=20),
        ["q_proj", "v_proj", "down_proj"],
    ),
}  # fmt: skip


def make_pair(kind: str, seed: int, trained_b: bool):
    """(fast model with LoRA, reference model, reference adapters {weight name: (A, B)})."""
    fast_cls, ref_cls, cfg, targets = MODELS[kind]
    torch.manual_seed(seed)
    fast = fast_cls(cfg).double()
    randomize_(fast, seed)
    ref = ref_cls(cfg, params={k: v.numpy().copy() for k, v in fast.state_dict().items()})
    apply_lora(fast.train(), targets=targets, r=R, alpha=ALPHA, dropout=0.0)
    adapters = {}
    g = torch.Generator().manual_seed(seed + 1)
    for name, layer in lora_modules(fast).items():
        if trained_b:  # a fresh B is zero; a trained one is not, and then dA is not zero either
            with torch.no_grad():
                layer.lora_B.copy_(
                    torch.randn(layer.lora_B.shape, generator=g, dtype=torch.float64)
                )
        adapters[f"{name}.weight"] = (layer.lora_A.detach().numpy().copy(),
                                      layer.lora_B.detach().numpy().copy())  # fmt: skip
    return fast, ref, adapters


def fast_params(fast) -> list[torch.nn.Parameter]:
    """[A, B] per LoRA layer, in the order of the reference's adapters dict."""
    return [p for layer in lora_modules(fast).values() for p in (layer.lora_A, layer.lora_B)]


@pytest.mark.parametrize("kind", ["gpt", "llama"])
@pytest.mark.parametrize("trained_b", [False, True])
def test_reference_lora_steps_match_fast(kind, trained_b):
    fast, ref, adapters = make_pair(kind, seed=3, trained_b=trained_b)
    frozen_ref = {k: v.copy() for k, v in ref.params.items()}
    frozen_fast = {k: v.clone() for k, v in base_state(fast).items()}
    ref_opt = AdamW([t for ab in adapters.values() for t in ab], LR, BETAS, EPS, WD)
    start = [a.copy() for a in ref_opt.params]
    fast_opt = torch.optim.AdamW(fast_params(fast), LR, BETAS, EPS, WD)
    rng = np.random.default_rng(0)
    vocab = MODELS[kind][2].vocab_size
    for step in range(3):
        ids = rng.integers(0, vocab, (2, 9))
        ref_loss = ref_lora.lora_model_step(ref, adapters, ALPHA, ref_opt, ids, ids)

        t_ids = torch.from_numpy(ids)
        loss = fast(t_ids, labels=t_ids).loss
        fast_opt.zero_grad()
        loss.backward()
        fast_opt.step()

        assert_close(loss.item(), ref_loss, rtol=RTOL, name=f"loss, step {step}")
        for (name, (A, B)), layer in zip(adapters.items(), lora_modules(fast).values()):
            assert_close(layer.lora_A, A, rtol=RTOL, atol=ATOL, name=f"{name} A, step {step}")
            assert_close(layer.lora_B, B, rtol=RTOL, atol=ATOL, name=f"{name} B, step {step}")
    # the steps did move the adapters, and never the frozen weights (bitwise, on both sides)
    assert all(not np.allclose(a, a0) for a, a0 in zip(ref_opt.params, start))
    for k, v in frozen_ref.items():
        assert np.array_equal(ref.params[k], v), k
    for k, v in base_state(fast).items():
        assert torch.equal(v, frozen_fast[k]), k


@pytest.mark.parametrize("kind", ["gpt", "llama"])
def test_reference_adapter_gradients_match_autograd(kind):
    fast, ref, adapters = make_pair(kind, seed=5, trained_b=True)
    ids = np.random.default_rng(1).integers(0, MODELS[kind][2].vocab_size, (3, 7))
    frozen = {name: ref.params[name] for name in adapters}
    ref.params.update(
        {n: ref_lora.lora_merge(frozen[n], A, B, ALPHA) for n, (A, B) in adapters.items()}
    )
    _, loss, cache = ref.forward(ids, labels=ids)
    grads = ref.backward(cache)
    t_ids = torch.from_numpy(ids)
    fast_loss = fast(t_ids, labels=t_ids).loss
    fast_loss.backward()
    assert_close(fast_loss.item(), float(loss), rtol=RTOL, name="loss")
    for (name, (A, B)), layer in zip(adapters.items(), lora_modules(fast).values()):
        dA, dB = ref_lora.lora_weight_backward(grads[name], A, B, ALPHA)
        assert_close(layer.lora_A.grad, dA, rtol=RTOL, atol=ATOL, name=f"{name} dA")
        assert_close(layer.lora_B.grad, dB, rtol=RTOL, atol=ATOL, name=f"{name} dB")


@given(
    n=st.integers(1, 9),
    d_in=st.integers(1, 13),
    d_out=st.integers(1, 13),
    r=st.integers(1, 5),
    seed=seeds,
)
def test_weight_backward_equals_layer_backward(n, d_in, d_out, r, seed):
    """The chain rule through the merged weight == the adapter layer's own backward (whose
    finite-difference check is in test_lora.py), with dW' = dy^T x the weight gradient."""
    rng = np.random.default_rng(seed)
    x, dy = rng_array(rng, (n, d_in)), rng_array(rng, (n, d_out))
    w, A, B = rng_array(rng, (d_out, d_in)), rng_array(rng, (r, d_in)), rng_array(rng, (d_out, r))
    _, cache = ref_lora.lora_linear_forward(x, w, None, A, B, ALPHA)
    _, dA, dB = ref_lora.lora_linear_backward(dy, cache)
    got_dA, got_dB = ref_lora.lora_weight_backward(dy.T @ x, A, B, ALPHA)
    # sums of n * d products in another order: atol relative to the largest term's size
    scale = ALPHA / r * max(1.0, float(np.abs(dy).max() * np.abs(x).max() * np.abs(B).max()))
    tol = 1e-13 * scale * n * max(d_in, d_out, r)
    assert_close(got_dA, dA, rtol=1e-12, atol=tol, name="dA")
    assert_close(got_dB, dB, rtol=1e-12, atol=tol, name="dB")


def test_weight_backward_bad_input():
    with pytest.raises(ValueError, match=r"B: expected shape \(4, 2\), got \(4, 3\)"):
        ref_lora.lora_weight_backward(np.ones((4, 5)), np.ones((2, 5)), np.ones((4, 3)), 1.0)


def test_tolerance_catches_a_planted_error():
    """alpha off by 1e-8 (relative) in the reference step: rtol 1e-10 on the loss must see it."""
    fast, ref, adapters = make_pair("llama", seed=3, trained_b=True)
    ids = np.random.default_rng(0).integers(0, MODELS["llama"][2].vocab_size, (2, 9))
    opt = AdamW([t for ab in adapters.values() for t in ab], LR, BETAS, EPS, WD)
    ref_loss = ref_lora.lora_model_step(ref, adapters, ALPHA * (1 + 1e-8), opt, ids, ids)
    t_ids = torch.from_numpy(ids)
    with pytest.raises(AssertionError, match="loss: not close"):
        assert_close(fast(t_ids, labels=t_ids).loss.item(), ref_loss, rtol=RTOL, name="loss")
