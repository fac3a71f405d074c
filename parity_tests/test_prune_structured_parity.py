"""A structurally pruned LLaMA config (per-layer head counts and MLP widths, H*D != C): the NumPy
reference model == the fast model, logits, loss and every gradient, float64.

Tolerances as in test_llama.py / test_gpt.py (rtol 1e-10, atol 1e-12 for gradients that are zero
in exact arithmetic): both sides do the same float64 math, only summation order differs. A model
pruned by ``remove_heads`` / ``remove_neurons`` is compared through its own ``model.cfg``, so the
config the pruning records is the one the reference rebuilds the shapes from.
"""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from myllm101.config import LlamaConfig
from myllm101.fast.llama import Llama
from myllm101.prune.structured import remove_heads, remove_neurons
from myllm101.reference.llama import ReferenceLlama, param_shapes
from parity_tests.helpers import assert_close, examples, seeds
from parity_tests.test_gpt import ATOL, RTOL, assert_grads_match, randomize_, state_numpy


def pruned_cfg(**kw) -> LlamaConfig:
    # 3 layers of different shapes: 6/2 heads (G=3), 3/1 (G=3), 2/2 (G=1); head_dim 4, C = 24
    base = dict(
        vocab_size=37,
        block_size=11,
        n_layer=3,
        n_head=6,
        n_kv_head=2,
        n_embd=24,
        intermediate_size=37,
        layer_n_head=[6, 3, 2],
        layer_n_kv_head=[2, 1, 2],
        layer_intermediate_size=[37, 11, 1],
    )
    return LlamaConfig(**{**base, **kw})


def check_pair(fast: Llama, ref: ReferenceLlama, ids: np.ndarray, mask=None) -> None:
    labels = ids.copy()
    labels[0, 1] = -100
    logits, loss, cache = ref.forward(ids, attention_mask=mask, labels=labels)
    m = None if mask is None else torch.from_numpy(mask)
    out = fast(torch.from_numpy(ids), attention_mask=m, labels=torch.from_numpy(labels))
    assert_close(logits, out.logits, rtol=RTOL, atol=ATOL, name="logits")
    assert_close(loss, out.loss, rtol=RTOL, name="loss")
    out.loss.backward()
    assert_grads_match(ref.backward(cache), fast)


@settings(max_examples=examples(6), deadline=None)
@given(seed=seeds, B=st.integers(1, 3), T=st.integers(2, 11), tie=st.booleans())
def test_pruned_config_reference_equals_fast(seed, B, T, tie):
    cfg = pruned_cfg(tie_word_embeddings=tie)
    torch.manual_seed(seed)
    fast = Llama(cfg).double()
    randomize_(fast, seed)
    assert {k: tuple(v.shape) for k, v in fast.state_dict().items()} == param_shapes(cfg)
    ref = ReferenceLlama(cfg, params=state_numpy(fast))
    ids = np.random.default_rng(seed).integers(0, cfg.vocab_size, (B, T))
    check_pair(fast, ref, ids)


def test_explicit_head_dim_with_padding_mask():
    # head_dim 6 with 6 heads of C = 24: q_proj is (36, 24), o_proj (24, 36)
    cfg = pruned_cfg(head_dim=6, rope_theta=500000.0)
    torch.manual_seed(3)
    fast = Llama(cfg).double()
    randomize_(fast, 3)
    ref = ReferenceLlama(cfg, params=state_numpy(fast))
    ids = np.random.default_rng(3).integers(0, cfg.vocab_size, (2, 9))
    mask = np.ones((2, 9), dtype=np.int64)
    mask[1, :4] = 0  # left padding
    check_pair(fast, ref, ids, mask)


def test_model_pruned_in_place_matches_reference_of_its_config():
    cfg = pruned_cfg(layer_n_head=None, layer_n_kv_head=None, layer_intermediate_size=None)
    torch.manual_seed(5)
    fast = Llama(cfg).double()
    randomize_(fast, 5)
    remove_heads(fast, 0, [1])
    remove_heads(fast, 2, [0])
    remove_neurons(fast, 1, [0, 5, 36])
    assert fast.cfg.layer_n_head == [3, 6, 3] and fast.cfg.layer_intermediate_size[1] == 34
    ref = ReferenceLlama(fast.cfg, params=state_numpy(fast))
    ids = np.random.default_rng(5).integers(0, cfg.vocab_size, (2, 11))
    check_pair(fast, ref, ids)
