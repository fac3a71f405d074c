"""fast/prepack.py: Linears prepacked for oneDNN compute F.linear's result to float32 rounding,
whole models keep their logits and greedy tokens, and unpack restores every weight bitwise."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from myllm101.fast.generate import generate
from myllm101.fast.gpt import GPT
from myllm101.fast.linear import Linear
from myllm101.fast.llama import Llama
from myllm101.fast.prepack import PackedLinear, can_prepack, prepack_for_inference, unpack
from parity_tests.helpers import examples, seeds
from parity_tests.test_generate import gpt_cfg, llama_cfg, randomize_

pytestmark = pytest.mark.skipif(not can_prepack(), reason="this torch build has no oneDNN")


@settings(max_examples=examples(20), deadline=None)
@given(seed=seeds, lead=st.lists(st.integers(1, 5), min_size=1, max_size=2),
       n_in=st.integers(1, 70), n_out=st.integers(1, 70), bias=st.booleans())  # fmt: skip
def test_packed_linear_is_f_linear_to_float32_rounding(seed, lead, n_in, n_out, bias):
    torch.manual_seed(seed % 2**31)
    linear = Linear(n_in, n_out, bias=bias)
    x = torch.randn(*lead, n_in)
    want = F.linear(x.double(), linear.weight.double(), None if not bias else linear.bias.double())
    with torch.inference_mode():
        got = PackedLinear(linear)(x)
        plain = linear(x)
    assert got.shape == plain.shape == (*lead, n_out) and got.dtype == torch.float32
    # both against the float64 product: float32 sums of n_in terms, |error| ~ n_in * 6e-8 * scale
    scale = (x.abs().double() @ linear.weight.abs().double().T).max().item() + 1e-30
    for out in (got, plain):
        assert (out.double() - want).abs().max().item() <= 2e-6 * max(n_in, 8) ** 0.5 * scale


def _models():
    torch.manual_seed(0)
    gpt = GPT(gpt_cfg()).eval()
    llama = Llama(llama_cfg(2)).eval()
    for m in (gpt, llama):
        randomize_(m, 0)
    return {"gpt": gpt, "llama": llama}


@pytest.mark.parametrize("kind", ["gpt", "llama"])
def test_prepacked_model_keeps_logits_and_greedy_tokens_and_unpacks_bitwise(kind):
    model = _models()[kind]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    packed = prepack_for_inference(copy.deepcopy(model))
    n_packed = sum(isinstance(m, PackedLinear) for m in packed.modules())
    assert n_packed == sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    ids = torch.randint(0, model.cfg.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want, got = model(ids).logits, packed(ids).logits
    assert (got - want).abs().max().item() <= 1e-5 * want.abs().max().item()
    prompts = [[3, 1, 4, 1, 5], [9, 2]]
    # the lean decode_step (fast/blocks.py project) runs the packed projections too
    assert generate(packed, prompts, 6, temperature=0) == generate(model, prompts, 6, temperature=0)
    unpack(packed)
    assert not any(isinstance(m, PackedLinear) for m in packed.modules())
    after = packed.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    if model.cfg.tie_word_embeddings:  # the LM head is its embedding again, one Parameter
        emb = packed.wte if kind == "gpt" else packed.embed_tokens
        assert packed.lm_head.weight is emb.weight


def test_prepack_refuses_training_mode_and_leaves_other_dtypes():
    model = _models()["llama"]
    with pytest.raises(ValueError, match=r"model: expected eval mode .*call \.eval\(\)"):
        prepack_for_inference(model.train())
    bf16 = prepack_for_inference(copy.deepcopy(model).eval().to(torch.bfloat16))
    assert not any(isinstance(m, PackedLinear) for m in bf16.modules())
    layer = PackedLinear(Linear(4, 3))
    with pytest.raises(ValueError, match=r"x: expected \(\.\.\., 4\), got \(2, 5\)"):
        layer(torch.randn(2, 5))
    with pytest.raises(ValueError, match="x: expected float32"):
        layer(torch.randn(2, 4, dtype=torch.float64))
