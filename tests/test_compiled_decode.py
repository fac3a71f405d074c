"""The compiled decode step (fast/compiled_decode.py, ``generate(..., compile_step=True)``).

Two separate claims, tested separately:

- the static cache computes what the growing one does: ``static_decode_step`` run eagerly (torch.compile
  replaced by the identity) writes slot L in place and attends over every slot with the empty ones
  masked; its logits equal ``decode_step``'s to TOL (float64 rtol 1e-7, float32 1e-5: the masked
  softmax sums a few more exact zeros, which may change the BLAS's blocking, not the math), over
  drawn batches, left padding, GQA, GPT and a head-pruned layer;
- Inductor compiles it to the same function: compiled vs eager float32 logits to TOL["float32"]
  (Inductor's GEMMs and fused small ops may sum in another order; observed ~1e-7) and greedy
  tokens identical, without a recompile per generation length, and recompiled when a weight
  changes (frozen weights are constants in the graph). The Llama test compiles as ``generate``
  does, with GEMM autotuning (~30 s); the others set MYLLM101_COMPILE_AUTOTUNE=0 (the same graph
  with library GEMMs, a third of the time).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._dynamo.utils import counters

from myllm101.fast import compiled_decode
from myllm101.fast.compiled_decode import BUCKET, cache_slots, compiled_decoder
from myllm101.fast.generate import generation_steps
from myllm101.fast.gpt import GPT
from myllm101.fast.int4 import Int4Linear
from myllm101.fast.int8 import BF16_ACTIVATIONS, Int8Linear
from myllm101.fast.llama import Llama
from myllm101.fast.prepack import prepack_for_inference
from myllm101.prune.structured import remove_heads
from myllm101.quant.quantize import quantize
from parity_tests.helpers import TOL, TORCH_DTYPE, assert_close, examples, seeds
from parity_tests.test_generate import gpt_cfg, randomize_
from tests.test_fast_decode import llama_cfg, make_llama, prompts_of


def make_gpt(seed: int = 0, dtype=torch.float32) -> GPT:
    torch.manual_seed(seed)
    model = GPT(gpt_cfg()).to(dtype).eval()
    randomize_(model, seed)
    return model


def steps(model, prompts, n: int, **kw) -> list:
    return list(generation_steps(model, prompts, n, temperature=0, **kw))


def assert_same_steps(got: list, want: list, dtype: str) -> None:
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert_close(a.logits, b.logits, name=f"step {i} logits", **TOL[dtype])
        assert torch.equal(a.tokens[a.active], b.tokens[b.active]), f"step {i} tokens"


@contextlib.contextmanager
def eager_compile():
    """torch.compile as the identity: the static step runs eagerly (no Inductor, no seconds)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compiled_decode.torch, "compile", lambda fn, **kw: fn)
        yield


def test_cache_slots_round_up_to_a_bucket_within_the_block():
    assert cache_slots(1, 4096) == BUCKET
    assert cache_slots(BUCKET, 4096) == BUCKET
    assert cache_slots(BUCKET + 1, 4096) == 2 * BUCKET
    assert cache_slots(20, 24) == 24  # never past block_size
    assert cache_slots(4000, 4000) == 4000


@settings(max_examples=examples(12), deadline=None)
@given(seed=seeds, lengths=st.lists(st.integers(1, 8), min_size=1, max_size=3),
       n_new=st.integers(2, 8), kind=st.sampled_from(["llama", "llama-mqa", "gpt", "pruned"]),
       dtype=st.sampled_from(["float64", "float32"]))  # fmt: skip
def test_the_static_cache_step_equals_decode_step(seed, lengths, n_new, kind, dtype):
    torch_dtype = TORCH_DTYPE[dtype]
    if kind == "gpt":
        model = make_gpt(seed % 1000, torch_dtype)
    else:
        model = make_llama(seed % 1000, torch_dtype, n_kv_head=1 if kind == "llama-mqa" else 2)
    if kind == "pruned":  # layer 1 keeps 1 of its 2 kv heads: the cache's first slot only
        remove_heads(model, 1, [0])
    prompts = prompts_of(seed, lengths)
    want = steps(model, prompts, n_new)
    with eager_compile():
        got = steps(model, prompts, n_new, compile_step=True)
    assert_same_steps(got, want, dtype)


@pytest.fixture
def no_autotune(monkeypatch):
    monkeypatch.setenv("MYLLM101_COMPILE_AUTOTUNE", "0")


@pytest.mark.parametrize("kind", ["llama", "gpt"])
def test_the_compiled_step_equals_the_eager_one(kind, monkeypatch):
    if kind == "gpt":
        monkeypatch.setenv("MYLLM101_COMPILE_AUTOTUNE", "0")
    model = make_gpt(1) if kind == "gpt" else make_llama(1)
    prompts = prompts_of(3, [5, 2])  # left padding in the second row
    want = steps(model, prompts, 6)
    assert_same_steps(steps(model, prompts, 6, compile_step=True), want, "float32")
    decoder = compiled_decoder(model)
    step = decoder.step
    # another generation length, the same cache bucket (block_size 24): no new graph
    graphs = counters["stats"]["unique_graphs"]
    assert_same_steps(steps(model, prompts, 4, compile_step=True), steps(model, prompts, 4),
                      "float32")  # fmt: skip
    assert counters["stats"]["unique_graphs"] == graphs
    assert compiled_decoder(model) is decoder and decoder.step is step
    assert decoder.cpp_gemms == (kind == "llama")  # C++ GEMMs only where autotuning chooses


def test_cpp_gemms_follow_the_switches(monkeypatch):
    """Inductor's C++ GEMM template only (CPP_GEMMS) when autotuning; either switch keeps every
    backend (nothing compiles here: the decoder compiles on its first call)."""
    monkeypatch.delenv("MYLLM101_COMPILE_AUTOTUNE", raising=False)
    monkeypatch.delenv("MYLLM101_COMPILE_CPP_GEMMS", raising=False)
    fp32 = make_gpt(2)
    assert compiled_decoder(fp32).cpp_gemms
    for env in ("MYLLM101_COMPILE_CPP_GEMMS", "MYLLM101_COMPILE_AUTOTUNE"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(env, "0")
            assert not compiled_decoder(fp32).cpp_gemms, env
    assert compiled_decoder(fp32).cpp_gemms


def test_a_gemm_the_cpp_template_cannot_run_compiles_with_every_backend(monkeypatch):
    """If Inductor finds no allowed backend for a GEMM, compiling raises "No choices to select"
    (torch/_inductor/select_algorithm.py) before the graph runs; the decoder then compiles again
    with every backend and decodes as eager does. Any other error propagates. torch.compile is
    replaced by a stand-in that raises Inductor's message while CPP_GEMMS is in force (then runs
    the step eagerly), so this checks the decoder's side in milliseconds."""
    monkeypatch.delenv("MYLLM101_COMPILE_AUTOTUNE", raising=False)
    monkeypatch.delenv("MYLLM101_COMPILE_CPP_GEMMS", raising=False)
    message = ["NoValidChoicesError: No choices to select. Provided reason: No choices exist"]

    def compile_failing_on_cpp_gemms(fn, **kw):
        def step(*args):
            if torch._inductor.config.max_autotune_gemm_backends == compiled_decode.CPP_GEMMS:
                raise RuntimeError("compiling failed") from RuntimeError(message[0])
            return fn(*args)

        return step

    monkeypatch.setattr(compiled_decode.torch, "compile", compile_failing_on_cpp_gemms)
    model = make_gpt(3)
    prompts = prompts_of(7, [4, 2])
    want = steps(model, prompts, 3)
    assert_same_steps(steps(model, prompts, 3, compile_step=True), want, "float32")
    decoder = compiled_decoder(model)
    assert decoder.cpp_gemms_failed and not decoder.cpp_gemms
    message[0] = "another error"  # not a missing GEMM backend: raised as it is
    with pytest.raises(RuntimeError, match="compiling failed"):
        steps(make_gpt(4), prompts, 2, compile_step=True)


def test_a_changed_weight_recompiles(no_autotune):
    model = make_llama(2)
    prompts = prompts_of(4, [4])
    steps(model, prompts, 3, compile_step=True)
    before = compiled_decoder(model).step
    with torch.no_grad():
        model.norm.weight.mul_(-1.5)  # in place: same tensor, new version
    want = steps(model, prompts, 3)
    assert_same_steps(steps(model, prompts, 3, compile_step=True), want, "float32")
    assert compiled_decoder(model).step is not before
    # a plain attribute too: the graph does not guard on modules (GUARDS), refresh() sees it
    before = compiled_decoder(model).step
    model.norm.eps = 0.5
    want = steps(model, prompts, 3)
    assert_same_steps(steps(model, prompts, 3, compile_step=True), want, "float32")
    assert compiled_decoder(model).step is not before


def test_bf16_compiled_is_no_further_from_fp32_than_eager_bf16(no_autotune):
    """bf16 weights (8-bit mantissas) move the logits from fp32's by far more than any summation
    order, so no fixed tolerance against eager bf16 holds; the yardstick is eager bf16's own
    distance from fp32 on the first decode step (the same prefill and token for all three):
    the compiled step, which Inductor computes with fp32 intermediates, stays within 2x it."""
    fp32 = make_llama(5)
    bf16 = make_llama(5).to(torch.bfloat16)
    prompts = prompts_of(6, [6])
    want = steps(fp32, prompts, 2)[1].logits
    eager = steps(bf16, prompts, 2)[1].logits
    compiled = steps(bf16, prompts, 2, compile_step=True)[1].logits
    eager_err = (eager.float() - want).abs().max().item()
    assert 0 < eager_err < 0.1 * want.abs().max().item()  # bf16 rounding, not a broken model
    assert (compiled.float() - want).abs().max().item() <= 2 * eager_err


@pytest.mark.parametrize("scheme", ["int8", "w8a8"])
def test_int8_models_compile_around_their_packed_kernels(scheme, monkeypatch):
    """Each Int8Linear runs its packed CPU kernel as one opaque op (fast/int8.py's
    int8_linear_packed_op): the same sums as eager, the ops around it fused, so float32 rounding
    (TOL["float32"]) and identical greedy tokens; a deep copy gets handles of its own."""
    monkeypatch.setenv("MYLLM101_COMPILE_AUTOTUNE", "0")  # no float GEMMs left to tune
    model = quantize(make_llama(3), scheme=scheme)
    prompts = prompts_of(5, [5, 3])
    want = steps(model, prompts, 5)
    assert_same_steps(steps(model, prompts, 5, compile_step=True), want, "float32")
    linears = [m for m in model.modules() if type(m) is Int8Linear]
    handles = {m._compile_handle for m in linears}
    assert None not in handles and len(handles) == len(linears)
    twin = copy.deepcopy(model)
    assert all(m._compile_handle is None for m in twin.modules() if type(m) is Int8Linear)


def test_int8_weight_only_compiles_to_bf16_activations_when_autotuning():
    """With autotuning on (generate's default), a weight-only Int8Linear whose width is a multiple
    of 16 runs fast/int8.py's int8_linear_bf16_activations in the graph (1 byte per weight), the
    others (this model's o_proj) their packed kernel. Its bf16 roundings (2**-9 relative, on the
    activations and on each sum) are far above float32's, so the yardstick is a tolerance, not
    TOL: the first compiled step's logits within 2% of the largest (~3 roundings a layer, 2
    layers and the head; observed 0.6%), and away from eager by more than float32 reordering
    would be (the path did run)."""
    torch.manual_seed(3)
    cfg = replace(llama_cfg(), n_embd=48, intermediate_size=64)  # widths % 16 == 0
    model = Llama(cfg).eval()
    randomize_(model, 3)
    model = quantize(model, scheme="int8")
    prompts = prompts_of(5, [5, 3])
    want = steps(model, prompts, 2)[1].logits
    got = steps(model, prompts, 2, compile_step=True)[1].logits
    linears = [m for m in model.modules() if type(m) is Int8Linear]
    bf16 = [m._compile_kernel == BF16_ACTIVATIONS for m in linears]
    assert bf16 == [m.in_features % 16 == 0 for m in linears]
    assert any(bf16) and not all(bf16)  # o_proj's width is 24: both paths in one graph
    err = (got - want).abs().max().item()
    print(f"compiled vs eager: {err / want.abs().max().item():.2e} of the largest logit")
    assert 1e-5 * want.abs().max().item() < err < 0.02 * want.abs().max().item()
    # the switches that turn it off (registration happens on refresh; nothing compiles here)
    for env in ("MYLLM101_COMPILE_INT8_BF16", "MYLLM101_COMPILE_AUTOTUNE"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(env, "0")
            compiled_decoder(model)
            assert not any(m._compile_kernel == BF16_ACTIVATIONS for m in linears), env


def test_int4_models_compile_to_int4pack():
    """int4-g32 layers run torch's int4pack kernel inside the graph, its layout folded to a
    constant (fast/int4.py's register_for_compile), which autotuning turns into Inductor's int4
    C++ GEMM. Both it and eager's ATen kernel round the activations and each sum to bf16
    (2**-9 relative), in their own orders, so no float32 tolerance holds between them: the first
    compiled step's logits (same prefill, same input token) within 3% of the largest (observed
    1.1% on these random weights; a wrong scale or layout is off by far more)."""
    torch.manual_seed(4)
    cfg = replace(llama_cfg(), n_embd=64, intermediate_size=64, n_head=8, head_dim=8)
    model = Llama(cfg).eval()
    randomize_(model, 4)
    model = quantize(model, scheme="int4-g32")
    linears = [m for m in model.modules() if type(m) is Int4Linear]
    assert linears and all(
        m.cpu_kernel(torch.zeros(1, m.in_features)) == "int4pack" for m in linears
    )
    prompts = prompts_of(6, [5, 3])
    want = steps(model, prompts, 2)[1].logits
    got = steps(model, prompts, 2, compile_step=True)[1].logits
    assert all(m._compile_int4pack for m in linears)
    err = (got - want).abs().max().item()
    print(f"compiled vs eager: {err / want.abs().max().item():.2e} of the largest logit")
    assert err < 0.03 * want.abs().max().item()


def test_models_it_cannot_compile_are_refused():
    with pytest.raises(ValueError, match=r"compile_step: .*PackedLinear.*unpack\(model\) first"):
        steps(prepack_for_inference(make_llama(0)), [[1, 2]], 2, compile_step=True)
    with pytest.raises(ValueError, match="compile_step: expected a model with a decode_step"):
        compiled_decoder(torch.nn.Linear(2, 2))
