"""LLaMA, whole model: reference logits/loss == fast and every parameter gradient == torch
autograd, by state_dict name; grouped-query attention, tied and untied heads, a padding mask;
a finite-difference spot check of the reference backward.

Tolerances as in test_gpt.py (float64, rtol 1e-10; atol 1e-12 for gradients that are zero in exact
arithmetic and come out as ~1e-17 rounding noise on both sides).
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from myllm101.config import LlamaConfig
from myllm101.fast.llama import Llama
from myllm101.reference.llama import ReferenceLlama
from parity_tests.helpers import assert_close, examples, seeds
from parity_tests.test_gpt import (
    ATOL,
    RTOL,
    assert_float32_realistic,
    assert_grads_match,
    loss_spot_check,
    randomize_,
    state_numpy,
)


def tiny_cfg(**kw) -> LlamaConfig:
    # odd vocab, 11 positions, 6 query heads sharing 2 kv heads (GQA groups of 3), head_dim 4
    base = dict(
        vocab_size=37,
        block_size=11,
        n_layer=2,
        n_head=6,
        n_kv_head=2,
        n_embd=24,
        intermediate_size=37,
    )
    return LlamaConfig(**{**base, **kw})


def make_pair(cfg: LlamaConfig, seed: int):
    torch.manual_seed(seed)
    fast = Llama(cfg).double()
    randomize_(fast, seed)
    return fast, ReferenceLlama(cfg, params=state_numpy(fast))


@settings(max_examples=examples(6))
@given(
    seed=seeds,
    B=st.integers(1, 3),
    T=st.integers(2, 11),
    n_kv_head=st.sampled_from([1, 2, 6]),  # multi-query, grouped, plain multi-head
    tie=st.booleans(),
)
def test_logits_loss_and_every_gradient_match(seed, B, T, n_kv_head, tie):
    cfg = tiny_cfg(n_kv_head=n_kv_head, tie_word_embeddings=tie)
    fast, ref = make_pair(cfg, seed)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, cfg.vocab_size, (B, T))
    labels = ids.copy()
    labels[0, 1] = -100

    logits, loss, cache = ref.forward(ids, labels=labels)
    out = fast(torch.from_numpy(ids), labels=torch.from_numpy(labels))
    assert_close(logits, out.logits, rtol=RTOL, atol=ATOL, name="logits")
    assert_close(loss, out.loss, rtol=RTOL, name="loss")

    out.loss.backward()
    assert_grads_match(ref.backward(cache), fast)


def test_gqa_with_padding_mask_and_given_dlogits():
    cfg = tiny_cfg(rope_theta=500000.0)  # LLaMA 3's theta
    fast, ref = make_pair(cfg, 7)
    rng = np.random.default_rng(7)
    ids = rng.integers(0, cfg.vocab_size, (3, 10))
    mask = np.ones((3, 10), dtype=bool)
    mask[0, 7:] = False
    mask[2, 3:] = False
    dlogits = rng.standard_normal((3, 10, cfg.vocab_size))

    logits, _, cache = ref.forward(ids, attention_mask=mask)
    out = fast(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    assert_close(logits, out.logits, rtol=RTOL, atol=ATOL, name="logits")
    out.logits.backward(torch.from_numpy(dlogits))
    assert_grads_match(ref.backward(cache, dlogits), fast)


def test_float32_matches():
    # float32 through a 2-layer model: ~1e-7 per op, accumulated over a few dozen ops -> 1e-5
    cfg = tiny_cfg()
    fast, ref = make_pair(cfg, 5)
    ids = np.random.default_rng(5).integers(0, cfg.vocab_size, (2, 11))
    ref32 = ReferenceLlama(cfg, params={k: v.astype(np.float32) for k, v in ref.params.items()})
    logits32, loss32, _ = ref32.forward(ids, labels=ids)
    out32 = fast.float()(torch.from_numpy(ids), labels=torch.from_numpy(ids))
    assert logits32.dtype == np.float32 and out32.logits.dtype == torch.float32
    assert_close(logits32, out32.logits, rtol=1e-5, atol=1e-5, name="float32 logits")
    assert_close(loss32, out32.loss, rtol=1e-5, name="float32 loss")


def test_float32_realistic_width():
    # 2 layers at width 512: 8 query heads of 64 sharing 2 kv heads, SwiGLU width 1376, 2 x 64
    # tokens of a 1024-token vocabulary, weights of scale 0.02
    cfg = LlamaConfig(
        vocab_size=1024, block_size=64, n_layer=2, n_head=8, n_kv_head=2, n_embd=512,
        intermediate_size=1376,
    )  # fmt: skip
    torch.manual_seed(0)
    fast = Llama(cfg)
    randomize_(fast, 0, scale=0.02)
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, 1024, (2, 64)))
    assert_float32_realistic(
        fast, ReferenceLlama, cfg, lambda r: r.forward(ids.numpy(), labels=ids.numpy()),
        lambda f: f(ids, labels=ids),
    )  # fmt: skip


def test_rope_makes_the_model_order_aware():
    # one layer, no position table: without RoPE the last token's attention over its prefix is a
    # weighted set sum, blind to order. With RoPE, swapping two earlier tokens changes its logits.
    cfg = tiny_cfg(n_layer=1)
    fast, ref = make_pair(cfg, 1)
    ids = np.array([[3, 8, 5], [8, 3, 5]])
    logits, _, _ = ref.forward(ids)
    assert not np.allclose(logits[0, -1], logits[1, -1], rtol=1e-3)
    assert_close(logits, fast(torch.from_numpy(ids)).logits, rtol=RTOL, atol=ATOL, name="logits")


def test_reference_backward_matches_finite_differences():
    cfg = tiny_cfg(
        vocab_size=13, block_size=6, n_embd=12, n_head=3, n_kv_head=1, intermediate_size=7
    )
    _, ref = make_pair(cfg, 11)
    ids = np.random.default_rng(11).integers(0, cfg.vocab_size, (2, 6))
    _, _, cache = ref.forward(ids, labels=ids)
    grads = ref.backward(cache)
    picks = [
        ("embed_tokens.weight", (int(ids[1, 3]), 2)),
        ("layers.0.input_layernorm.weight", (4,)),
        ("layers.0.self_attn.q_proj.weight", (5, 9)),
        ("layers.0.self_attn.k_proj.weight", (3, 1)),  # one kv head shared by 3 query heads
        ("layers.1.self_attn.v_proj.weight", (2, 11)),
        ("layers.1.self_attn.o_proj.weight", (7, 0)),
        ("layers.0.mlp.gate_proj.weight", (6, 3)),
        ("layers.1.mlp.up_proj.weight", (0, 8)),
        ("layers.1.mlp.down_proj.weight", (10, 6)),
        ("layers.1.post_attention_layernorm.weight", (1,)),
        ("norm.weight", (11,)),
        ("lm_head.weight", (4, 5)),
    ]
    loss_spot_check(lambda: ref.forward(ids, labels=ids)[1], ref.params, grads, picks)


def test_bad_input():
    cfg = tiny_cfg()
    fast, ref = make_pair(cfg, 0)
    too_big = np.array([[1, 2, 40]])
    with pytest.raises(ValueError, match=r"ids: expected every id in \[0, 37\).*got id 40"):
        ref.forward(too_big)
    with pytest.raises(ValueError, match=r"ids: expected every id in \[0, 37\).*got id 40"):
        fast(torch.from_numpy(too_big))
    too_long = np.zeros((1, 12), dtype=np.int64)
    with pytest.raises(ValueError, match="sequence length <= block_size=11, got 12"):
        ref.forward(too_long)
    with pytest.raises(ValueError, match="sequence length <= block_size=11, got 12"):
        fast(torch.from_numpy(too_long))
    ids = np.zeros((2, 5), dtype=np.int64)
    with pytest.raises(ValueError, match=r"attention_mask: expected shape \(2, 5\), got \(1, 5\)"):
        ref.forward(ids, attention_mask=np.ones((1, 5), dtype=bool))
    with pytest.raises(ValueError, match=r"attention_mask: expected shape \(2, 5\), got \(1, 5\)"):
        fast(torch.from_numpy(ids), attention_mask=torch.ones(1, 5, dtype=torch.bool))
    params = dict(ref.params)
    params["layers.0.self_attn.k_proj.weight"] = np.zeros((24, 24))  # as if n_kv_head = n_head
    with pytest.raises(
        ValueError,
        match=r"layers.0.self_attn.k_proj.weight: expected shape \(8, 24\), got \(24, 24\)",
    ):
        ReferenceLlama(cfg, params=params)
    with pytest.raises(ValueError, match="n_head=6 must be divisible by n_kv_head=4"):
        tiny_cfg(n_kv_head=4)
