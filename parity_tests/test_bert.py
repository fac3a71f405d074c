"""BERT, whole model: reference logits/loss == fast and every parameter gradient == torch autograd,
by state_dict name, for the masked-LM head and the classification head, with padding masks and
token types; a finite-difference spot check of the reference backward (including the inline tanh).

Tolerances as in test_gpt.py (float64, rtol 1e-10; atol 1e-12 for gradients that are zero in exact
arithmetic, e.g. the k_proj bias, and come out as ~1e-17 rounding noise on both sides).
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from myllm101.config import BertConfig
from myllm101.fast.bert import Bert
from myllm101.reference.bert import ReferenceBert
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


def tiny_cfg(**kw) -> BertConfig:
    # odd vocab, 11 positions, 3 token types, 3 heads of width 4, 3 labels; eps 1e-12 like BERT
    base = dict(
        vocab_size=37,
        block_size=11,
        type_vocab_size=3,
        n_layer=2,
        n_head=3,
        n_embd=12,
        intermediate_size=29,
        num_labels=3,
    )
    return BertConfig(**{**base, **kw})


def make_pair(cfg: BertConfig, seed: int):
    torch.manual_seed(seed)
    fast = Bert(cfg).double()
    randomize_(fast, seed)
    return fast, ReferenceBert(cfg, params=state_numpy(fast))


def inputs(cfg, rng, B, T, pad: bool):
    """ids, right-padded attention mask (every row keeps >= 1 real token), token types, MLM labels."""
    ids = rng.integers(1, cfg.vocab_size, (B, T))
    mask = np.ones((B, T), dtype=bool)
    if pad:
        for b in range(B):
            mask[b, rng.integers(1, T + 1) :] = False
        ids[~mask] = cfg.pad_token_id
    types = rng.integers(0, cfg.type_vocab_size, (B, T))
    labels = np.where(rng.random((B, T)) < 0.4, ids, -100)  # ~40% of positions are targets
    labels[0, 0] = ids[0, 0]  # at least one target
    labels[~mask] = -100
    return ids, mask, types, labels


def run_both(fast, ref, ids, mask, types, labels, head):
    t = torch.from_numpy
    logits, loss, cache = ref.forward(ids, mask, labels, token_type_ids=types, head=head)
    out = fast(t(ids), t(mask), t(labels), token_type_ids=t(types), head=head)
    return logits, loss, cache, out


@settings(max_examples=examples(6))
@given(seed=seeds, B=st.integers(1, 3), T=st.integers(1, 11), pad=st.booleans())
def test_mlm_logits_loss_and_every_gradient_match(seed, B, T, pad):
    cfg = tiny_cfg()
    fast, ref = make_pair(cfg, seed)
    ids, mask, types, labels = inputs(cfg, np.random.default_rng(seed), B, T, pad)
    logits, loss, cache, out = run_both(fast, ref, ids, mask, types, labels, "mlm")
    assert logits.shape == (B, T, cfg.vocab_size)
    assert_close(logits, out.logits, rtol=RTOL, atol=ATOL, name="logits")
    assert_close(loss, out.loss, rtol=RTOL, name="loss")
    out.loss.backward()
    grads = ref.backward(cache)
    assert_grads_match(grads, fast)
    assert not grads["pooler.weight"].any()  # the classification head took no part


@settings(max_examples=examples(6))
@given(seed=seeds, B=st.integers(1, 4), T=st.integers(1, 11), pad=st.booleans())
def test_classification_logits_loss_and_every_gradient_match(seed, B, T, pad):
    cfg = tiny_cfg()
    fast, ref = make_pair(cfg, seed)
    rng = np.random.default_rng(seed)
    ids, mask, types, _ = inputs(cfg, rng, B, T, pad)
    labels = rng.integers(0, cfg.num_labels, (B,))
    logits, loss, cache, out = run_both(fast, ref, ids, mask, types, labels, "cls")
    assert logits.shape == (B, cfg.num_labels)
    assert_close(logits, out.logits, rtol=RTOL, atol=ATOL, name="logits")
    assert_close(loss, out.loss, rtol=RTOL, name="loss")
    out.loss.backward()
    grads = ref.backward(cache)
    assert_grads_match(grads, fast)
    assert not grads["mlm_head.dense.weight"].any()


def test_float32_realistic_width():
    # 2 layers at width 512 (8 heads of 64, MLP 2048, as in BERT), 2 x 64 tokens of a 1024-token
    # vocabulary with padding and token types, the masked-LM head, weights of scale 0.02
    cfg = tiny_cfg(
        vocab_size=1024, block_size=64, n_layer=2, n_head=8, n_embd=512, intermediate_size=2048
    )
    torch.manual_seed(0)
    fast = Bert(cfg)
    randomize_(fast, 0, scale=0.02)
    ids, mask, types, labels = inputs(cfg, np.random.default_rng(0), 2, 64, pad=True)
    t = torch.from_numpy
    assert_float32_realistic(
        fast, ReferenceBert, cfg, lambda r: r.forward(ids, mask, labels, token_type_ids=types),
        lambda f: f(t(ids), t(mask), t(labels), token_type_ids=t(types)),
    )  # fmt: skip


def test_padding_is_invisible_to_real_tokens():
    # what a real token sees must not depend on the pad tokens' ids: change them, same logits
    cfg = tiny_cfg()
    fast, ref = make_pair(cfg, 2)
    ids, mask, types, _ = inputs(cfg, np.random.default_rng(2), 3, 9, pad=True)
    mask[0, 5:] = False
    other = ids.copy()
    other[~mask] = 7
    a, _, _ = ref.forward(ids, mask, token_type_ids=types)
    b, _, _ = ref.forward(other, mask, token_type_ids=types)
    assert_close(a[mask], b[mask], rtol=1e-12, atol=1e-12, name="real-token logits")
    no_mask, _, _ = ref.forward(ids, token_type_ids=types)
    assert not np.allclose(no_mask[0, :5], a[0, :5])  # the mask really removed something
    fa = fast(
        torch.from_numpy(other), torch.from_numpy(mask), token_type_ids=torch.from_numpy(types)
    )
    assert_close(b, fa.logits, rtol=RTOL, atol=ATOL, name="logits")


def test_given_dlogits():
    cfg = tiny_cfg()
    fast, ref = make_pair(cfg, 4)
    rng = np.random.default_rng(4)
    ids, mask, types, _ = inputs(cfg, rng, 2, 7, pad=True)
    dlogits = rng.standard_normal((2, 7, cfg.vocab_size))
    logits, loss, cache = ref.forward(ids, mask, token_type_ids=types)
    assert loss is None
    out = fast(
        torch.from_numpy(ids), torch.from_numpy(mask), token_type_ids=torch.from_numpy(types)
    )
    out.logits.backward(torch.from_numpy(dlogits))
    assert_grads_match(ref.backward(cache, dlogits), fast)


@pytest.mark.parametrize("head", ["mlm", "cls"])
def test_reference_backward_matches_finite_differences(head):
    cfg = tiny_cfg(vocab_size=13, block_size=6, n_embd=8, n_head=2, intermediate_size=7)
    _, ref = make_pair(cfg, 11)
    rng = np.random.default_rng(11)
    ids, mask, types, labels = inputs(cfg, rng, 2, 6, pad=True)
    if head == "cls":
        labels = np.array([0, 2])
    _, _, cache = ref.forward(ids, mask, labels, token_type_ids=types, head=head)
    grads = ref.backward(cache)
    picks = [
        ("embeddings.word_embeddings.weight", (int(ids[0, 0]), 3)),
        ("embeddings.position_embeddings.weight", (0, 5)),
        ("embeddings.token_type_embeddings.weight", (int(types[0, 0]), 1)),
        ("embeddings.layer_norm.bias", (2,)),
        ("layers.0.attn.q_proj.weight", (3, 6)),
        ("layers.0.attn.v_proj.bias", (7,)),
        ("layers.0.attn_norm.weight", (4,)),
        ("layers.1.mlp.fc_in.weight", (5, 2)),
        ("layers.1.mlp.fc_out.bias", (0,)),
        ("layers.1.mlp_norm.weight", (6,)),
    ]
    if head == "mlm":
        picks += [
            ("mlm_head.dense.weight", (1, 7)),
            ("mlm_head.layer_norm.weight", (3,)),
            ("mlm_head.decoder.bias", (int(ids[0, 0]),)),
        ]
    else:
        picks += [("pooler.weight", (2, 5)), ("pooler.bias", (6,)), ("classifier.weight", (1, 4))]
    fwd = lambda: ref.forward(ids, mask, labels, token_type_ids=types, head=head)[1]
    loss_spot_check(fwd, ref.params, grads, picks)


def test_bad_input():
    cfg = tiny_cfg()
    fast, ref = make_pair(cfg, 0)
    t = torch.from_numpy
    too_big = np.array([[1, 2, 37]])
    with pytest.raises(ValueError, match=r"ids: expected every id in \[0, 37\).*got id 37"):
        ref.forward(too_big)
    with pytest.raises(ValueError, match=r"ids: expected every id in \[0, 37\).*got id 37"):
        fast(t(too_big))
    too_long = np.zeros((1, 12), dtype=np.int64)
    with pytest.raises(ValueError, match="sequence length <= block_size=11, got 12"):
        ref.forward(too_long)
    with pytest.raises(ValueError, match="sequence length <= block_size=11, got 12"):
        fast(t(too_long))
    ids = np.ones((2, 5), dtype=np.int64)
    bad_mask = np.ones((2, 6), dtype=bool)
    with pytest.raises(ValueError, match=r"attention_mask: expected shape \(2, 5\), got \(2, 6\)"):
        ref.forward(ids, bad_mask)
    with pytest.raises(ValueError, match=r"attention_mask: expected shape \(2, 5\), got \(2, 6\)"):
        fast(t(ids), t(bad_mask))
    with pytest.raises(ValueError, match=r"token_type_ids: expected shape \(2, 5\), got \(2, 4\)"):
        ref.forward(ids, token_type_ids=np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=r"token_type_ids: expected shape \(2, 5\), got \(2, 4\)"):
        fast(t(ids), token_type_ids=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"ids: expected every id in \[0, 3\).*got id 3"):
        ref.forward(ids, token_type_ids=np.full((2, 5), 3))
    with pytest.raises(ValueError, match=r"ids: expected every id in \[0, 3\).*got id 3"):
        fast(t(ids), token_type_ids=torch.full((2, 5), 3))
    with pytest.raises(ValueError, match=r"labels: expected shape \(2\), got \(2, 5\)"):
        ref.forward(ids, labels=ids, head="cls")
    with pytest.raises(ValueError, match=r"labels: expected shape \(2\), got \(2, 5\)"):
        fast(t(ids), labels=t(ids), head="cls")
    with pytest.raises(ValueError, match=r"head: expected one of \('mlm', 'cls'\), got 'ner'"):
        ref.forward(ids, head="ner")
    with pytest.raises(ValueError, match=r"head: expected one of \('mlm', 'cls'\), got 'ner'"):
        fast(t(ids), head="ner")
