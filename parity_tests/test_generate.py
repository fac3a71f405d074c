"""Generation: the KV cache changes nothing but speed, batching changes nothing at all, and the fast
generator picks the same greedy tokens as the obviously-correct reference one.

- logits with the KV cache == logits of a full forward at every position, for GPT-2 and LLaMA
  (multi-head, grouped-query, multi-query), whatever the prefill/decode chunking;
- a left-padded batch == each prompt alone (greedy tokens identical, step logits close);
- fast greedy tokens == reference (NumPy, no cache) greedy tokens;
- top-k / top-p / repetition penalty: fast (batched, torch) == reference (one row, loops), on
  random logits and on hand-made ones with a known answer.

Tolerances: helpers.TOL. float64 with rtol 1e-7: the cached path runs the same math with keys and
values read back from the cache, only the attention sums run over differently-shaped blocks (the
observed error is ~1e-15). float32: TOL["float32"] (rtol/atol 1e-5) for the same reason.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from myllm101.config import GPTConfig, LlamaConfig
from myllm101.fast import generate as fast_gen
from myllm101.fast.generate import generation_steps
from myllm101.fast.gpt import GPT
from myllm101.fast.kv_cache import KVCache
from myllm101.fast.llama import Llama
from myllm101.reference import generate as ref_gen
from myllm101.reference.gpt import ReferenceGPT
from myllm101.reference.llama import ReferenceLlama
from parity_tests.helpers import TOL, assert_close, examples, seeds
from parity_tests.test_gpt import randomize_, state_numpy

V = 41  # odd vocabulary


def gpt_cfg(**kw) -> GPTConfig:
    return GPTConfig(vocab_size=V, block_size=24, n_layer=2, n_head=3, n_embd=12, **kw)


def llama_cfg(n_kv_head: int = 2, **kw) -> LlamaConfig:
    # 6 query heads of width 4 sharing n_kv_head kv heads (3 = GQA groups of 2, 1 = multi-query)
    return LlamaConfig(
        vocab_size=V,
        block_size=24,
        n_layer=2,
        n_head=6,
        n_kv_head=n_kv_head,
        n_embd=24,
        intermediate_size=37,
        **kw,
    )


CONFIGS = {
    "gpt": lambda: (GPT, gpt_cfg()),
    "llama-mha": lambda: (Llama, llama_cfg(6)),
    "llama-gqa": lambda: (Llama, llama_cfg(3)),
    "llama-mqa": lambda: (Llama, llama_cfg(1)),
}


def make_model(kind: str, seed: int = 0, dtype=torch.float64):
    cls, cfg = CONFIGS[kind]()
    torch.manual_seed(seed)
    model = cls(cfg).to(dtype).eval()
    randomize_(model, seed)  # far from init, so logits are far from uniform and argmax is stable
    return model


def random_ids(seed: int, shape) -> torch.Tensor:
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed))


# ---- the KV cache --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(CONFIGS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cached_logits_equal_full_forward_at_every_step(kind, dtype):
    torch_dtype = getattr(torch, dtype)
    model = make_model(kind, dtype=torch_dtype)
    B, T = 2, 19
    ids = random_ids(1, (B, T))
    with torch.no_grad():
        full = model(ids).logits  # (B, T, V)
        cache = KVCache.for_model(model, B, max_len=T)
        # an odd prefill, one token at a time, then a chunk of 3, then one at a time again
        chunks, got = [7, 1, 1, 1, 3, 1, 1, 1, 1, 1, 1], []
        start = 0
        for n in chunks:
            got.append(model(ids[:, start : start + n], kv_cache=cache).logits)
            start += n
            assert cache.length == start
    assert start == T
    assert cache.k.dtype == torch_dtype
    assert_close(torch.cat(got, dim=1), full, name=f"{kind} cached logits", **TOL[dtype])


@settings(max_examples=examples(6))
@given(seed=seeds, prefill=st.integers(1, 10), B=st.integers(1, 3))
def test_cached_logits_any_prefill_llama_gqa(seed, prefill, B):
    model = make_model("llama-gqa", seed=seed % 1000)
    T = prefill + 5
    ids = random_ids(seed, (B, T))
    with torch.no_grad():
        full = model(ids).logits
        cache = KVCache.for_model(model, B, max_len=T + 2)  # a cache longer than needed is fine
        got = [model(ids[:, :prefill], kv_cache=cache).logits]
        got += [model(ids[:, t : t + 1], kv_cache=cache).logits for t in range(prefill, T)]
    assert_close(torch.cat(got, dim=1), full, name="cached logits", **TOL["float64"])


@pytest.mark.parametrize("kind", ["gpt", "llama-gqa"])
def test_cached_logits_with_left_padding_and_position_ids(kind):
    """A left-padded row with positions cumsum(mask) - 1 gives the logits of the unpadded row."""
    model = make_model(kind)
    short, long_ = random_ids(2, (1, 5)), random_ids(3, (1, 9))
    ids = torch.cat([torch.cat([torch.zeros(1, 4, dtype=torch.long), short], 1), long_])  # (2, 9)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, :4] = False
    extra = random_ids(4, (2, 3))  # three decoded tokens per row
    all_mask = torch.cat([mask, torch.ones(2, 3, dtype=torch.bool)], 1)
    pos = (all_mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        cache = KVCache.for_model(model, 2, max_len=12)
        steps = [model(ids, mask, kv_cache=cache, position_ids=pos[:, :9]).logits[:, -1]]
        for t in range(3):
            out = model(
                extra[:, t : t + 1],
                all_mask[:, : 10 + t],
                kv_cache=cache,
                position_ids=pos[:, 9 + t : 10 + t],
            )
            steps.append(out.logits[:, -1])
        got = torch.stack(steps, 1)  # (2, 4, V): next-token logits after 0..3 decoded tokens
        for row, prompt in enumerate((short, long_)):
            alone = model(torch.cat([prompt, extra[row : row + 1]], 1)).logits[0]  # (n + 3, V)
            assert_close(got[row], alone[-4:], name=f"row {row}", **TOL["float64"])


# ---- generation: batched == one by one, fast == reference ----------------------------------


PROMPTS = [[3, 1, 4, 1, 5, 9, 2], [6], [5, 3, 5, 8], [9, 7, 9, 3, 2, 3, 8, 4, 6]]


@pytest.mark.parametrize("kind", ["gpt", "llama-gqa", "llama-mqa"])
@pytest.mark.parametrize("use_cache", [True, False])
def test_batched_left_padding_equals_one_by_one(kind, use_cache):
    model = make_model(kind)
    kw = dict(temperature=0, repetition_penalty=1.3, use_cache=use_cache)
    batch_steps = list(generation_steps(model, PROMPTS, 8, **kw))
    batched = fast_gen.generate(model, PROMPTS, 8, **kw)
    for row, prompt in enumerate(PROMPTS):
        alone_steps = list(generation_steps(model, prompt, 8, **kw))
        assert batched[row] == fast_gen.generate(model, prompt, 8, **kw)
        assert batched[row][len(prompt) :] == [int(s.tokens[0]) for s in alone_steps]
        for t, (b, a) in enumerate(zip(batch_steps, alone_steps)):
            assert_close(b.logits[row], a.logits[0], name=f"row {row} step {t}", **TOL["float64"])


def reference_twin(model):
    ref_cls = ReferenceGPT if isinstance(model, GPT) else ReferenceLlama
    return ref_cls(model.cfg, params=state_numpy(model))


@pytest.mark.parametrize("kind", ["gpt", "llama-gqa"])
def test_greedy_tokens_match_reference_generator(kind):
    model = make_model(kind, seed=1)  # seed 0's tied GPT falls into repeating one token at once
    ref = reference_twin(model)
    for penalty in (1.0, 1.5):
        kw = dict(temperature=0, repetition_penalty=penalty)
        want = ref_gen.generate(ref, PROMPTS, 10, **kw)
        assert fast_gen.generate(model, PROMPTS, 10, **kw) == want
        assert fast_gen.generate(model, PROMPTS, 10, use_cache=False, **kw) == want
        # not degenerate: the rows differ and use more than a couple of distinct tokens
        assert len({t for row in want for t in row[-10:]}) > 3


def test_greedy_float32_model_matches_float64_reference():
    # float32 logits differ from float64 by ~1e-6; randomized weights keep the top-2 gap far larger
    model = make_model("llama-gqa")
    ref = reference_twin(model)
    want = ref_gen.generate(ref, PROMPTS[:2], 8, temperature=0)
    assert fast_gen.generate(model.float(), PROMPTS[:2], 8, temperature=0) == want


def test_reference_stop_tokens_and_sampling_reproducible():
    model = make_model("gpt")
    ref = reference_twin(model)
    greedy = ref_gen.generate(ref, PROMPTS[0], 10, temperature=0)
    stop = greedy[len(PROMPTS[0]) + 2]  # the third new token
    first = greedy.index(stop, len(PROMPTS[0]))
    assert (
        ref_gen.generate(ref, PROMPTS[0], 10, temperature=0, stop_tokens=(stop,))
        == (greedy[: first + 1])
    )
    a = ref_gen.generate(ref, PROMPTS[0], 6, temperature=1.0, top_k=5, top_p=0.9, seed=3)
    assert a == ref_gen.generate(ref, PROMPTS[0], 6, temperature=1.0, top_k=5, top_p=0.9, seed=3)


# ---- next-token rules: fast == reference -----------------------------------------------------


@settings(max_examples=examples(15))
@given(
    seed=seeds,
    B=st.integers(1, 4),
    vocab=st.integers(2, 40),
    k=st.integers(1, 45),
    p=st.floats(0.05, 1.0),
    penalty=st.floats(0.5, 3.0),
)
def test_filters_match_reference(seed, B, vocab, k, p, penalty):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((B, vocab)) * 3  # continuous: no ties
    prev = rng.integers(0, vocab, (B, 6))
    mask = rng.random((B, 6)) < 0.7
    t_logits = torch.from_numpy(logits)
    fast_k = fast_gen.top_k_filter(t_logits, k).numpy()
    fast_p = fast_gen.top_p_filter(t_logits, p).numpy()
    fast_r = fast_gen.apply_repetition_penalty(
        t_logits, torch.from_numpy(prev), penalty, torch.from_numpy(mask)
    ).numpy()
    for b in range(B):
        np.testing.assert_array_equal(fast_k[b], ref_gen.top_k_filter(logits[b], k))
        np.testing.assert_array_equal(fast_p[b], ref_gen.top_p_filter(logits[b], p))
        want_r = ref_gen.apply_repetition_penalty(logits[b], prev[b][mask[b]], penalty)
        np.testing.assert_array_equal(fast_r[b], want_r)


def test_top_k_on_hand_made_logits():
    logits = torch.tensor([[1.0, 5.0, 3.0, -2.0, 4.0], [0.0, 0.0, 2.0, 0.0, -1.0]])
    inf = float("-inf")
    got = fast_gen.top_k_filter(logits, 2)
    # row 0 keeps 5 and 4; row 1 keeps 2 and every 0 tied with the 2nd largest
    want = torch.tensor([[inf, 5.0, inf, inf, 4.0], [0.0, 0.0, 2.0, 0.0, inf]])
    assert torch.equal(got, want)
    assert torch.equal(fast_gen.top_k_filter(logits, 99), logits)  # k > V keeps everything


def test_top_p_on_hand_made_probabilities():
    probs = torch.tensor([[0.1, 0.5, 0.15, 0.25], [0.7, 0.1, 0.1, 0.1]], dtype=torch.float64)
    logits = probs.log()
    # row 0 by rank: ids 1, 3, 2, 0 with probability ranked above them 0, 0.5, 0.75, 0.9
    # row 1 by rank: ids 0, 1, 2, 3 (ties keep id order) with 0, 0.7, 0.8, 0.9 ranked above
    # a token is kept while the mass above it is < p (p chosen away from those boundaries)
    kept_ids = {
        0.45: ({1}, {0}),
        0.6: ({1, 3}, {0}),
        0.72: ({1, 3}, {0, 1}),
        0.85: ({1, 3, 2}, {0, 1, 2}),
        0.95: ({0, 1, 2, 3}, {0, 1, 2, 3}),
    }
    for p, rows in kept_ids.items():
        got = fast_gen.top_p_filter(logits, p)
        kept = torch.isfinite(got)
        want = [[i in ids for i in range(4)] for ids in rows]
        assert kept.tolist() == want, p
        assert torch.equal(got[kept], logits[kept])  # kept logits are untouched
        ref_kept = [np.isfinite(ref_gen.top_p_filter(row.numpy(), p)).tolist() for row in logits]
        assert ref_kept == want, p


def test_repetition_penalty_follows_hf_semantics():
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0, 0.5]])
    prev = torch.tensor([[0, 1, 1, 4, 2]])
    mask = torch.tensor([[True, True, True, True, False]])  # token 2 sits in padding only
    got = fast_gen.apply_repetition_penalty(logits, prev, 2.0, mask)
    # seen: 0 (positive -> /2), 1 (negative -> *2, once despite two occurrences), 4 (positive)
    assert torch.equal(got, torch.tensor([[1.0, -4.0, 1.0, -1.0, 0.25]]))
    assert torch.equal(fast_gen.apply_repetition_penalty(logits, prev, 1.0), logits)
    ref = ref_gen.apply_repetition_penalty(logits[0].numpy(), [0, 1, 1, 4], 2.0)
    np.testing.assert_array_equal(ref, got[0].numpy())


def test_bad_input_for_the_filters():
    logits = torch.zeros(2, 5)
    with pytest.raises(ValueError, match=r"top_k: expected an int >= 1 or None, got 0"):
        fast_gen.top_k_filter(logits, 0)
    with pytest.raises(ValueError, match=r"top_p: expected a value in \(0, 1\] or None, got 1.5"):
        fast_gen.top_p_filter(logits, 1.5)
    with pytest.raises(ValueError, match=r"logits: expected a 2-D array, got shape \(5,\)"):
        fast_gen.top_k_filter(logits[0], 2)
    with pytest.raises(ValueError, match=r"repetition_penalty: expected a positive value, got 0"):
        fast_gen.apply_repetition_penalty(logits, torch.zeros(2, 1, dtype=torch.long), 0.0)
    with pytest.raises(ValueError, match=r"previous_ids: expected shape \(2, \*\), got \(3, 1\)"):
        fast_gen.apply_repetition_penalty(logits, torch.zeros(3, 1, dtype=torch.long), 2.0)
    with pytest.raises(ValueError, match=r"top_p: expected a value in \(0, 1\] or None, got 0"):
        ref_gen.top_p_filter(np.zeros(5), 0.0)
    with pytest.raises(ValueError, match=r"top_k: expected an int >= 1 or None, got 2.5"):
        ref_gen.top_k_filter(np.zeros(5), 2.5)
    with pytest.raises(ValueError, match=r"temperature: expected a value >= 0 .*, got -1"):
        ref_gen.choose_next_token(np.zeros(5), temperature=-1)


def test_top_p_one_keeps_every_token():
    """p = 1 keeps the whole distribution, even a token of probability ~1e-8 that a float32
    running total (which reaches 1.0 early) would have dropped."""
    logits = np.array([7.149216, 4.719683, 4.573968, -10.495037, 2.136629, -5.37648])
    for t in (torch.from_numpy(logits), torch.from_numpy(logits).float()):
        assert torch.isfinite(fast_gen.top_p_filter(t[None], 1.0)).all()
    np.testing.assert_array_equal(ref_gen.top_p_filter(logits, 1.0), logits)


@given(seed=st.integers(0, 10_000), p=st.sampled_from([1e-300, 5e-324, 1e-12]))
@settings(max_examples=20, deadline=None)
def test_a_tiny_top_p_keeps_exactly_the_most_likely_token(seed, p):
    """Float32 cumsums may leave a few ulps of "mass above" on the top token; a tiny p must not
    drop it (a server got every token dropped, then NaN probabilities, from top_p=3e-308)."""
    logits = torch.from_numpy(np.random.default_rng(seed).normal(0, 3, (3, 300))).float()
    got = fast_gen.top_p_filter(logits, p)
    kept = torch.isfinite(got)
    assert kept.sum(1).tolist() == [1, 1, 1]
    assert torch.equal(kept.float().argmax(1), logits.argmax(1))
    for row in logits.numpy():
        assert np.isfinite(ref_gen.top_p_filter(row, p)).sum() == 1
    token = fast_gen.choose_next_token(logits, 0.5, None, p)
    assert torch.equal(token, logits.argmax(1))
