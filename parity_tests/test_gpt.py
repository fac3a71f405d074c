"""GPT-2, whole model: reference logits/loss == fast, every parameter gradient == torch autograd
(by state_dict name), and the reference backward == finite differences on a few entries.

Tolerances (float64): rtol 1e-10, atol 1e-12 on logits, loss and every gradient. Both sides run
the same math in IEEE double (u = 1.1e-16) through ~10 layers in a different summation order: the
observed difference is at most ~1e-14 of each tensor's largest entry, and at most ~3e-11 relative
on entries that cancel down to 1e-5 of their tensor's scale (rule (S) in helpers.py: a sum's error
is relative to its terms, not to itself). rtol 1e-10 + atol 1e-12 leaves ~50x margin on the worst
entry measured (LLaMA's), while a 1e-6 relative error in any entry of size >= 1e-6 fails. The atol
also covers entries that are exactly zero in exact arithmetic (the key bias's gradient: adding the
same q.b to every score of a row leaves softmax unchanged), where both sides return rounding noise
of ~1e-17 that no rtol can compare.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from myllm101.config import GPTConfig
from myllm101.fast.gpt import GPT
from myllm101.reference.gpt import ReferenceGPT
from parity_tests.helpers import TOL, assert_catches_planted_error, assert_close, examples, seeds

RTOL, ATOL = 1e-10, 1e-12


# ---- helpers shared with test_llama.py and test_bert.py (imported there) ----


def randomize_(model: torch.nn.Module, seed: int, scale: float = 0.3) -> None:
    """Move every parameter away from its init (unit norms, zero biases, tiny weights) so that no
    gradient is trivially structured and the logits are far from uniform."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def state_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The fast model's state_dict as independent NumPy copies (tied names included)."""
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def fast_grads(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """.grad of every state_dict name (a tied Parameter under each of its names); None -> zeros
    (a parameter the forward did not use, e.g. the MLM head in a classification pass)."""
    named = dict(model.named_parameters(remove_duplicate=False))
    out = {}
    for k in model.state_dict():
        p = named[k]
        out[k] = np.zeros(p.shape) if p.grad is None else p.grad.detach().numpy()
    return out


def assert_grads_match(ref_grads: dict, model: torch.nn.Module) -> None:
    fast = fast_grads(model)
    assert set(ref_grads) == set(fast), sorted(set(ref_grads) ^ set(fast))
    for name, g in fast.items():
        assert_close(ref_grads[name], g, rtol=RTOL, atol=ATOL, name=f"d{name}")


def assert_float32_realistic(fast: torch.nn.Module, ref_cls, cfg, run_ref, run_fast) -> None:
    """float32 parity of a model at a realistic width (the test sizes it): ``fast`` is a float32
    model with small random weights, ``run_ref(ref) -> (logits, loss, cache)`` and
    ``run_fast(fast) -> output`` run one batch with labels.

    Logits and loss: TOL["float32"]. Gradients: within 2e-5 of each tensor's largest entry. Every
    gradient entry sums over the batch's positions products that carry float32 rounding from two
    layers: measured at width 512 the two sides differ by at most 1.8e-6 of their tensor's largest
    entry (each differs from float64 by about as much), so 2e-5 leaves ~10x, and a 1e-4 relative
    error in a tensor's largest entry fails (checked). Plus 1e-7 of the model's largest gradient
    entry for tensors that are zero in exact arithmetic (a key bias: measured noise 1e-9 of it).
    """
    ref = ref_cls(cfg, params=state_numpy(fast))
    logits, loss, cache = run_ref(ref)
    out = run_fast(fast)
    assert logits.dtype == np.float32 and out.logits.dtype == torch.float32
    assert_close(logits, out.logits, name="float32 logits", **TOL["float32"])
    assert_close(loss, out.loss, name="float32 loss", **TOL["float32"])
    out.loss.backward()
    ref_grads, got = ref.backward(cache), fast_grads(fast)
    assert set(ref_grads) == set(got)
    floor = 1e-7 * max(float(np.abs(g).max()) for g in ref_grads.values())
    for name, g in got.items():
        atol = 2e-5 * float(np.abs(ref_grads[name]).max()) + floor
        assert_close(ref_grads[name], g, rtol=0, atol=atol, name=f"float32 d{name}")
    # the bound is tight enough to see a 1e-4 relative error in the largest entry of a gradient
    name = max(got, key=lambda k: got[k].size)
    atol = 2e-5 * float(np.abs(ref_grads[name]).max()) + floor
    check = lambda v: assert_close(ref_grads[name], v, rtol=0, atol=atol, name=f"d{name}")
    assert_catches_planted_error(check, got[name], "float32")


def loss_spot_check(loss_fn, params: dict, grads: dict, picks, eps: float = 1e-6) -> None:
    """Central differences of the scalar ``loss_fn()`` at a few (name, index) parameter entries.

    Error budget as in helpers.check_finite_differences: O(eps^2) truncation + O(1e-16/eps)
    rounding, ~1e-9 absolute; rtol 1e-5 / atol 1e-8 keep a wide margin.
    """
    for name, idx in picks:
        p = params[name]
        old = p[idx]
        p[idx] = old + eps
        plus = loss_fn()
        p[idx] = old - eps
        minus = loss_fn()
        p[idx] = old
        num = (plus - minus) / (2 * eps)
        assert_close(grads[name][idx], num, rtol=1e-5, atol=1e-8, name=f"d{name}{idx} vs FD")


# ------------------------------------------------------------------------------------------


def tiny_cfg(**kw) -> GPTConfig:
    # odd sizes everywhere: vocab 37, 11 positions, head_dim 6
    base = dict(vocab_size=37, block_size=11, n_layer=2, n_head=2, n_embd=12)
    return GPTConfig(**{**base, **kw})


def make_pair(cfg: GPTConfig, seed: int):
    torch.manual_seed(seed)
    fast = GPT(cfg).double()
    randomize_(fast, seed)
    return fast, ReferenceGPT(cfg, params=state_numpy(fast))


@settings(max_examples=examples(6))
@given(
    seed=seeds,
    B=st.integers(1, 3),
    T=st.integers(2, 11),
    bias=st.booleans(),
    tie=st.booleans(),
)
def test_logits_loss_and_every_gradient_match(seed, B, T, bias, tie):
    cfg = tiny_cfg(bias=bias, tie_word_embeddings=tie)
    fast, ref = make_pair(cfg, seed)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, cfg.vocab_size, (B, T))
    labels = ids.copy()
    labels[:, -1] = -100  # an ignored target must contribute nothing on either side

    logits, loss, cache = ref.forward(ids, labels=labels)
    out = fast(torch.from_numpy(ids), labels=torch.from_numpy(labels))
    assert_close(logits, out.logits, rtol=RTOL, atol=ATOL, name="logits")
    assert_close(loss, out.loss, rtol=RTOL, name="loss")

    out.loss.backward()
    assert_grads_match(ref.backward(cache), fast)


def test_gradients_of_given_dlogits_and_padding_mask():
    # backward(cache, dlogits) is the gradient of sum(logits * dlogits); right padding masked out
    cfg = tiny_cfg()
    fast, ref = make_pair(cfg, 3)
    rng = np.random.default_rng(3)
    ids = rng.integers(0, cfg.vocab_size, (3, 9))
    mask = np.ones((3, 9), dtype=bool)
    mask[1, 6:] = False
    mask[2, 4:] = False
    dlogits = rng.standard_normal((3, 9, cfg.vocab_size))

    logits, loss, cache = ref.forward(ids, attention_mask=mask)
    assert loss is None
    out = fast(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    assert out.loss is None
    assert_close(logits, out.logits, rtol=RTOL, atol=ATOL, name="logits")
    out.logits.backward(torch.from_numpy(dlogits))
    assert_grads_match(ref.backward(cache, dlogits), fast)


def test_float32_matches_float64_reference_loosely():
    # float32 through a 2-layer model: ~1e-7 per op, accumulated over a few dozen ops -> 1e-5
    cfg = tiny_cfg()
    fast, ref = make_pair(cfg, 5)
    ids = np.random.default_rng(5).integers(0, cfg.vocab_size, (2, 11))
    ref32 = ReferenceGPT(cfg, params={k: v.astype(np.float32) for k, v in ref.params.items()})
    logits32, loss32, _ = ref32.forward(ids, labels=ids)
    out32 = fast.float()(torch.from_numpy(ids), labels=torch.from_numpy(ids))
    assert logits32.dtype == np.float32 and out32.logits.dtype == torch.float32
    assert_close(logits32, out32.logits, rtol=1e-5, atol=1e-5, name="float32 logits")
    assert_close(loss32, out32.loss, rtol=1e-5, name="float32 loss")


def test_float32_realistic_width():
    # 2 layers at width 512 (8 heads of 64, as in GPT-2), 2 x 64 tokens of a 1024-token vocabulary,
    # weights of GPT-2's init scale (0.02)
    cfg = GPTConfig(vocab_size=1024, block_size=64, n_layer=2, n_head=8, n_embd=512)
    torch.manual_seed(0)
    fast = GPT(cfg)
    randomize_(fast, 0, scale=0.02)
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, 1024, (2, 64)))
    assert_float32_realistic(
        fast, ReferenceGPT, cfg, lambda r: r.forward(ids.numpy(), labels=ids.numpy()),
        lambda f: f(ids, labels=ids),
    )  # fmt: skip


def test_reference_backward_matches_finite_differences():
    cfg = tiny_cfg(vocab_size=13, n_embd=8, block_size=6)
    _, ref = make_pair(cfg, 11)
    ids = np.random.default_rng(11).integers(0, cfg.vocab_size, (2, 6))
    _, _, cache = ref.forward(ids, labels=ids)
    grads = ref.backward(cache)
    picks = [
        ("wte.weight", (int(ids[0, 2]), 3)),  # used by the embedding *and* the tied LM head
        ("wte.weight", (int(np.setdiff1d(np.arange(13), ids)[0]), 1)),  # LM head only
        ("wpe.weight", (4, 0)),
        ("h.0.ln_1.weight", (5,)),
        ("h.0.attn.c_attn.weight", (2, 7)),  # a q row
        ("h.0.attn.c_attn.bias", (17,)),  # a v entry (rows 16..23 of 3C = 24)
        ("h.1.attn.c_proj.weight", (0, 6)),
        ("h.1.ln_2.bias", (2,)),
        ("h.1.mlp.c_fc.weight", (17, 4)),
        ("h.1.mlp.c_proj.bias", (3,)),
        ("ln_f.weight", (7,)),
    ]
    loss_spot_check(lambda: ref.forward(ids, labels=ids)[1], ref.params, grads, picks)


def test_dropout_backward_and_eval_mode():
    # training: with the mask fixed (same rng seed for every forward) the loss is a smooth function
    # of the parameters, so the reference backward through dropout is checked by finite differences
    cfg = tiny_cfg(vocab_size=13, n_embd=8, block_size=6, dropout=0.25)
    fast, ref = make_pair(cfg, 12)
    ids = np.random.default_rng(12).integers(0, cfg.vocab_size, (2, 6))

    def loss_fixed_mask():
        ref.dropout.rng = np.random.default_rng(0)
        return ref.forward(ids, labels=ids)[1]

    ref.dropout.rng = np.random.default_rng(0)
    train_logits, _, cache = ref.forward(ids, labels=ids)
    grads = ref.backward(cache)
    picks = [("wte.weight", (int(ids[0, 1]), 2)), ("h.0.attn.c_attn.weight", (19, 1))]
    picks += [("h.1.mlp.c_fc.weight", (5, 6)), ("wpe.weight", (2, 7))]
    loss_spot_check(loss_fixed_mask, ref.params, grads, picks)
    # eval: dropout is the identity on both sides, so they agree again
    eval_logits, _, _ = ref.eval().forward(ids)
    assert not np.allclose(train_logits, eval_logits)
    out = fast.eval()(torch.from_numpy(ids))
    assert_close(eval_logits, out.logits, rtol=RTOL, atol=ATOL, name="eval logits")


def test_tied_weight_is_one_array_reported_under_both_names():
    cfg = tiny_cfg()
    fast, ref = make_pair(cfg, 0)
    assert fast.lm_head.weight is fast.wte.weight
    assert ref.params["lm_head.weight"] is ref.params["wte.weight"]
    assert "lm_head.weight" not in ref.parameter_names()
    ids = np.arange(10).reshape(2, 5)
    _, _, cache = ref.forward(ids, labels=ids)
    grads = ref.backward(cache)
    np.testing.assert_array_equal(grads["lm_head.weight"], grads["wte.weight"])
    untied = ReferenceGPT(tiny_cfg(tie_word_embeddings=False), params=dict(ref.params))
    # untied (same values), the two uses get separate gradients: tied must be their sum
    _, _, c2 = untied.forward(ids, labels=ids)
    g2 = untied.backward(c2)
    assert_close(
        g2["wte.weight"] + g2["lm_head.weight"], grads["wte.weight"], rtol=1e-12, atol=1e-15
    )


def test_bad_input():
    cfg = tiny_cfg()
    fast, ref = make_pair(cfg, 0)
    too_big = np.array([[1, 2, 37]])
    with pytest.raises(ValueError, match=r"ids: expected every id in \[0, 37\).*got id 37"):
        ref.forward(too_big)
    with pytest.raises(ValueError, match=r"ids: expected every id in \[0, 37\).*got id 37"):
        fast(torch.from_numpy(too_big))
    too_long = np.zeros((1, 12), dtype=np.int64)
    with pytest.raises(ValueError, match="sequence length <= block_size=11, got 12"):
        ref.forward(too_long)
    with pytest.raises(ValueError, match="sequence length <= block_size=11, got 12"):
        fast(torch.from_numpy(too_long))
    ids = np.zeros((2, 5), dtype=np.int64)
    with pytest.raises(ValueError, match=r"attention_mask: expected shape \(2, 5\), got \(2, 4\)"):
        ref.forward(ids, attention_mask=np.ones((2, 4), dtype=bool))
    with pytest.raises(ValueError, match=r"attention_mask: expected shape \(2, 5\), got \(2, 4\)"):
        fast(torch.from_numpy(ids), attention_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="input_ids: expected dtype .*, got float64"):
        ref.forward(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="input_ids: expected dtype .*, got float32"):
        fast(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"labels: expected shape \(2, 5\), got \(2, 4\)"):
        ref.forward(ids, labels=np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=r"labels: expected shape \(2, 5\), got \(2, 4\)"):
        fast(torch.from_numpy(ids), labels=torch.zeros(2, 4, dtype=torch.long))
    _, _, cache = ref.forward(ids)
    with pytest.raises(
        ValueError, match="backward: expected dlogits, or a forward pass given labels"
    ):
        ref.backward(cache)
    params = dict(ref.params)
    del params["ln_f.bias"]
    with pytest.raises(ValueError, match=r"missing \['ln_f.bias'\]"):
        ReferenceGPT(cfg, params=params)
    params = dict(ref.params, **{"wpe.weight": np.zeros((10, 12))})
    with pytest.raises(ValueError, match=r"wpe.weight: expected shape \(11, 12\), got \(10, 12\)"):
        ReferenceGPT(cfg, params=params)
