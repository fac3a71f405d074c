"""Fast decoding (issue 16): the lean ``Llama.decode_step`` and ``GPT.decode_step``, fused projections (fast/fuse.py), the
prefill's ``logits_to_keep`` and the in-place KV cache change the speed, not the result.

- ``decode_step`` runs ``forward``'s torch ops in the same order without its checks, so its
  float32 (and bf16) logits are bitwise those of ``forward`` with the cache: ``torch.equal``;
- fused vs separate projections: one wider GEMM per group. Each output is still one dot product
  of the same row and the same x, but the BLAS may block a wider matrix differently, so the sums
  can round differently: float64 to helpers.TOL["float64"] (the observed difference is ~1e-16),
  float32 to TOL["float32"] (observed ~5e-8), and greedy tokens identical;
- a left-padded batch == each prompt alone, on the lean and fused path;
- the cache buffers are allocated once and written in place (same data_ptr at every step).
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from myllm101.config import LlamaConfig
from myllm101.fast.bert import Bert
from myllm101.fast.fuse import fuse_for_inference, fuse_linears, is_fused, unfuse
from myllm101.fast.generate import generate, generation_steps
from myllm101.fast.gpt import GPT
from myllm101.fast.kv_cache import KVCache
from myllm101.fast.linear import Linear
from myllm101.fast.llama import Llama
from parity_tests.helpers import TOL, assert_close, examples, seeds
from parity_tests.test_generate import gpt_cfg, randomize_
from tests.weights import skip_without_smollm2

V = 41


def llama_cfg(n_kv_head: int = 2, **kw) -> LlamaConfig:
    # 6 query heads of width 4 sharing n_kv_head kv heads; an odd MLP width
    return LlamaConfig(vocab_size=V, block_size=24, n_layer=2, n_head=6, n_kv_head=n_kv_head,
                       n_embd=24, intermediate_size=37, **kw)  # fmt: skip


def make_llama(seed: int = 0, dtype=torch.float32, n_kv_head: int = 2, **kw) -> Llama:
    torch.manual_seed(seed)
    model = Llama(llama_cfg(n_kv_head, **kw)).to(dtype).eval()
    randomize_(model, seed)  # far from init: peaked logits, a stable argmax
    return model


def prompts_of(seed: int, lengths: list[int]) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (n,), generator=g).tolist() for n in lengths]


def step_logits(model, prompts, n: int, fast_decode: bool) -> list[torch.Tensor]:
    steps = generation_steps(model, prompts, n, temperature=0, fast_decode=fast_decode)
    return [s.logits.clone() for s in steps]


# ---- decode_step == forward with the cache, bitwise ------------------------------------------


@settings(max_examples=examples(10), deadline=None)
@given(
    seed=seeds,
    lengths=st.lists(st.integers(1, 7), min_size=1, max_size=3),
    n_kv_head=st.sampled_from([1, 3, 6]),
    fused=st.booleans(),
)
def test_decode_step_logits_are_bitwise_forwards(seed, lengths, n_kv_head, fused):
    model = make_llama(seed % 1000, n_kv_head=n_kv_head)
    if fused:
        fuse_for_inference(model)
    prompts = prompts_of(seed, lengths)  # several lengths: a left-padded batch
    lean = step_logits(model, prompts, 6, fast_decode=True)
    plain = step_logits(model, prompts, 6, fast_decode=False)
    assert len(lean) == len(plain) == 6
    for step, (a, b) in enumerate(zip(lean, plain)):
        assert torch.equal(a, b), f"step {step}: max |diff| {(a - b).abs().max():.3g}"


def test_decode_step_bf16_weights_are_bitwise_forwards():
    # bf16 weights, float32 residual stream: the same casts on both paths
    model = fuse_for_inference(make_llama(3, dtype=torch.bfloat16))
    prompts = prompts_of(3, [5, 2])
    for a, b in zip(step_logits(model, prompts, 5, True), step_logits(model, prompts, 5, False)):
        assert torch.equal(a, b)


def test_decode_step_direct_call_matches_forward():
    model = make_llama(4)
    ids = torch.tensor(prompts_of(4, [6]))
    cache_a, cache_b = KVCache.for_model(model, 1, 10), KVCache.for_model(model, 1, 10)
    with torch.inference_mode():
        model(ids[:, :5], kv_cache=cache_a)
        model(ids[:, :5], kv_cache=cache_b)
        lean = model.decode_step(ids[:, 5:], cache_a)  # (B, V)
        full = model(ids[:, 5:], kv_cache=cache_b).logits[:, -1]
    assert lean.shape == (1, V) and torch.equal(lean, full)
    assert cache_a.length == cache_b.length == 6 and torch.equal(cache_a.k, cache_b.k)


# ---- fused == unfused ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n_kv_head", [1, 2, 6])
def test_fused_logits_match_unfused(dtype, n_kv_head):
    model = make_llama(1, getattr(torch, dtype), n_kv_head)
    fused = fuse_for_inference(copy.deepcopy(model))
    assert is_fused(fused) and not is_fused(model)
    ids = torch.tensor(prompts_of(1, [9, 9]))
    with torch.inference_mode():
        want, got = model(ids).logits, fused(ids).logits
    assert_close(got, want, name=f"fused logits ({dtype})", **TOL[dtype])


@pytest.mark.parametrize("n_kv_head", [1, 3])
def test_fused_greedy_generation_equals_unfused(n_kv_head):
    model = make_llama(2, n_kv_head=n_kv_head)
    fused = fuse_for_inference(copy.deepcopy(model))
    prompts = prompts_of(2, [4, 7, 1])
    assert generate(fused, prompts, 12, temperature=0) == generate(
        model, prompts, 12, temperature=0
    )
    for a, b in zip(step_logits(fused, prompts, 12, True), step_logits(model, prompts, 12, False)):
        assert_close(a, b, name="fused step logits", **TOL["float32"])


def test_fused_bert_attention_matches_unfused():
    from myllm101.config import get_preset

    torch.manual_seed(0)
    model = Bert(get_preset("bert-tiny")).eval()
    fused = fuse_for_inference(copy.deepcopy(model))
    ids = torch.randint(0, model.cfg.vocab_size, (2, 8))
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    with torch.inference_mode():
        assert_close(fused(ids, mask).logits, model(ids, mask).logits, **TOL["float32"])


def test_unfuse_restores_hf_names_and_weights_bitwise():
    model = make_llama(5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_for_inference(copy.deepcopy(model))
    names = set(fused.state_dict())
    assert "layers.0.self_attn.qkv_proj.weight" in names
    assert "layers.0.mlp.gate_up_proj.weight" in names
    assert not any(n.endswith(("q_proj.weight", "gate_proj.weight")) for n in names)
    # plain Linears, so whole-model quantization (which swaps nn.Linear by name) finds them
    assert isinstance(fused.layers[0].self_attn.qkv_proj, Linear)
    assert isinstance(fused.layers[0].mlp.gate_up_proj, torch.nn.Linear)
    assert fuse_for_inference(fused) is fused and set(fused.state_dict()) == names  # idempotent
    back = unfuse(fused)
    assert not is_fused(back) and set(back.state_dict()) == set(before)
    for name, value in back.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_fuse_memory_is_not_doubled():
    model = make_llama(6)
    n = model.num_parameters()
    assert fuse_for_inference(model).num_parameters() == n


def test_fuse_linears_bad_input():
    a, b = Linear(4, 3), Linear(5, 3)
    with pytest.raises(ValueError, match=r"one input width, got \[4, 5\]"):
        fuse_linears([a, b])
    with pytest.raises(ValueError, match="a bias or none, got a mix"):
        fuse_linears([Linear(4, 3), Linear(4, 3, bias=False)])
    with pytest.raises(ValueError, match=r"nn.Linear or Int8Linear .*got \['Linear', 'Identity'\]"):
        fuse_linears([a, torch.nn.Identity()])


# ---- batches, the cache, the prefill ------------------------------------------------------------


def test_left_padded_batch_equals_one_by_one_on_the_fast_path():
    model = fuse_for_inference(make_llama(7))
    prompts = prompts_of(7, [3, 8, 1, 5])
    batch = generate(model, prompts, 10, temperature=0)
    alone = [generate(model, p, 10, temperature=0) for p in prompts]
    assert batch == alone


def test_cache_is_written_in_place(monkeypatch):
    model = fuse_for_inference(make_llama(8))
    seen = []  # (k data_ptr, v data_ptr, cache length) at every decode step
    original = model.decode_step

    def recording(ids, cache, *args):
        seen.append((cache.k.data_ptr(), cache.v.data_ptr(), cache.length))
        return original(ids, cache, *args)

    monkeypatch.setattr(model, "decode_step", recording)
    out = generate(model, prompts_of(8, [4])[0], 8, temperature=0)
    assert len(out) == 12 and len(seen) == 7  # the first new token comes from the prefill
    assert len({(k, v) for k, v, _ in seen}) == 1  # the same buffers every step
    assert [n for _, _, n in seen] == list(range(4, 11))


def test_decode_step_writes_the_cache_slot():
    model = make_llama(9)
    cache = KVCache.for_model(model, 2, 8)
    with torch.inference_mode():
        model(torch.tensor(prompts_of(9, [3, 3])), kv_cache=cache)
        k_ptr, before = cache.k.data_ptr(), cache.k.clone()
        model.decode_step(torch.tensor([[1], [2]]), cache)
    assert cache.k.data_ptr() == k_ptr and cache.length == 4
    assert torch.equal(cache.k[:, :, :, :3], before[:, :, :, :3])  # old slots untouched
    assert not torch.equal(cache.k[:, :, :, 3], before[:, :, :, 3])  # slot 3 written
    assert torch.equal(cache.k[:, :, :, 4:], before[:, :, :, 4:])  # later slots still empty


@pytest.mark.parametrize("kind", ["gpt", "llama"])
def test_logits_to_keep_gives_the_last_positions(kind):
    torch.manual_seed(0)
    model = (GPT(gpt_cfg()) if kind == "gpt" else Llama(llama_cfg())).double().eval()
    randomize_(model, 0)
    ids = torch.tensor(prompts_of(0, [7, 7]))
    with torch.inference_mode():
        full = model(ids).logits
        last = model(ids, logits_to_keep=1).logits
        two = model(ids, logits_to_keep=2).logits
    assert last.shape == (2, 1, V) and two.shape == (2, 2, V)
    # float64: the LM head over 1 or 7 rows (another GEMM shape) only rounds differently
    assert_close(last, full[:, -1:], name="logits_to_keep=1", **TOL["float64"])
    assert_close(two, full[:, -2:], name="logits_to_keep=2", **TOL["float64"])


def test_prefill_asks_for_the_last_logits_only(monkeypatch):
    model = make_llama(10)
    shapes = []
    original = model.lm_head.forward
    monkeypatch.setattr(model.lm_head, "forward", lambda x: shapes.append(x.shape) or original(x))
    generate(model, prompts_of(10, [6])[0], 3, temperature=0, fast_decode=False)
    assert shapes == [(1, 1, 24)] * 3  # the 6-token prefill too, not (1, 6, 24)
    shapes.clear()
    generate(model, prompts_of(10, [6])[0], 3, temperature=0)  # decode_step: F.linear directly
    assert shapes == [(1, 1, 24)]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(logits_to_keep=-1), r"logits_to_keep: expected an int >= 0 \(0 = all\), got -1"),
        (dict(logits_to_keep=1, labels=torch.zeros(1, 4, dtype=torch.long)), "expected 0 when"),
    ],
)
def test_logits_to_keep_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_llama(0)(torch.zeros(1, 4, dtype=torch.long), **kwargs)


def make_gpt(seed: int = 0, dtype=torch.float32, **kw) -> GPT:
    torch.manual_seed(seed)
    model = GPT(gpt_cfg(**kw)).to(dtype).eval()
    randomize_(model, seed)
    return model


@settings(max_examples=examples(8), deadline=None)
@given(seed=seeds, lengths=st.lists(st.integers(1, 7), min_size=1, max_size=3))
def test_gpt_decode_step_logits_are_bitwise_forwards(seed, lengths):
    model = make_gpt(seed % 1000)
    prompts = prompts_of(seed, lengths)  # several lengths: a left-padded batch, per-row positions
    lean = step_logits(model, prompts, 6, fast_decode=True)
    plain = step_logits(model, prompts, 6, fast_decode=False)
    assert len(lean) == len(plain) == 6
    for step, (a, b) in enumerate(zip(lean, plain)):
        assert torch.equal(a, b), f"step {step}: max |diff| {(a - b).abs().max():.3g}"


def test_gpt_decode_step_bf16_and_direct_call_match_forward(monkeypatch):
    model = make_gpt(3, dtype=torch.bfloat16)  # bf16 weights, float32 residual stream
    prompts = prompts_of(3, [5, 2])
    for a, b in zip(step_logits(model, prompts, 5, True), step_logits(model, prompts, 5, False)):
        assert torch.equal(a, b)
    model = make_gpt(4)
    ids = torch.tensor(prompts_of(4, [6]))
    cache_a, cache_b = KVCache.for_model(model, 1, 10), KVCache.for_model(model, 1, 10)
    with torch.inference_mode():
        model(ids[:, :5], kv_cache=cache_a)
        model(ids[:, :5], kv_cache=cache_b)
        lean = model.decode_step(ids[:, 5:], cache_a)  # (B, V), positions from the cache
        full = model(ids[:, 5:], kv_cache=cache_b).logits[:, -1]
    assert lean.shape == (1, gpt_cfg().vocab_size) and torch.equal(lean, full)
    assert cache_a.length == cache_b.length == 6
    # generate goes through it after the prefill, and greedy ids equal the cache-less ones
    calls = []
    original = model.decode_step
    monkeypatch.setattr(model, "decode_step", lambda *a, **k: calls.append(1) or original(*a, **k))
    assert generate(model, prompts_of(11, [5, 2]), 6, temperature=0) == generate(
        model, prompts_of(11, [5, 2]), 6, temperature=0, use_cache=False
    )
    assert len(calls) == 5  # every step after the prefill's


# ---- the real model -----------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_fused_fast_decode_equals_plain_decode():
    # SmolLM2-135M from its shipped GGUF: the lean step is bitwise the cached forward, and the
    # fused model picks the same greedy tokens with step logits within float32 rounding
    pytest.importorskip("gguf")
    from myllm101.hub.smollm2 import chat_prompt, load_smollm2

    skip_without_smollm2()
    model, tok = load_smollm2("fp32")
    fused = fuse_for_inference(copy.deepcopy(model))  # the cached model stays unfused
    prompt = tok.encode(chat_prompt([{"role": "user", "content": "What is a transformer?"}]))
    plain = step_logits(model, prompt, 8, fast_decode=False)
    lean = step_logits(model, prompt, 8, fast_decode=True)
    fast = step_logits(fused, prompt, 8, fast_decode=True)
    for a, b in zip(lean, plain):
        assert torch.equal(a, b)
    for a, b in zip(fast, plain):
        # 30 layers of fp32 rounding on logits of size ~20: absolute 1e-3 (observed ~1e-5)
        assert_close(a, b, rtol=1e-4, atol=1e-3, name="fused SmolLM2 step logits")
    assert generate(fused, prompt, 8, temperature=0) == generate(model, prompt, 8, temperature=0)


def test_decode_step_runs_lora_layers_over_bf16_weights():
    # a LoRA projection in a bf16 model gets the float32 residual cast to bf16 (as attention
    # casts it for plain Linears), in decode_step as in forward
    from myllm101.finetune import apply_lora

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                      intermediate_size=64)  # fmt: skip
    model = Llama(cfg).eval()
    apply_lora(model, targets=["q_proj", "down_proj"], r=4, alpha=8, dropout=0.0)
    model = model.to(torch.bfloat16)
    prompt = [3, 5, 7, 9]
    fast = generate(model, prompt, 6, temperature=0)
    slow = generate(model, prompt, 6, temperature=0, fast_decode=False)
    assert fast == slow and len(fast) == 10
