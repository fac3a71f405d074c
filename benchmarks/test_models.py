"""Whole models: reference (NumPy) vs fast (PyTorch fp32, bf16 autocast, torch.compile), training
throughput against Hugging Face transformers, and generation with vs without the KV cache.

    pytest benchmarks/test_models.py --benchmark-only                  # everything (minutes)
    pytest benchmarks/test_models.py -k "smoke" --benchmark-disable    # tiny shapes, seconds

Three families, each row's baseline measured in the same run (``benchmark.group`` pairs them;
``benchmarks/ratio_report.py`` writes MODELS.md with ratios, tokens/s and MFU against the matmul
peak that ``test_matmul_peak`` measures in the same run):

- ``test_model``: forward and forward+backward of GPT / LLaMA / BERT at the tiny preset and at a
  GPT-2-small-like width (768, 12 heads, real vocabularies) shortened to 4 layers and B=2, T=128
  so the NumPy reference finishes in seconds (stated in ``extra_info["note"]``).
- ``test_training_throughput``: one AdamW step of the fast GPT vs HF ``GPT2LMHeadModel`` and the
  fast LLaMA vs HF ``LlamaForCausalLM`` at the same config (6 layers, width 384, T=256, vocab 8192,
  batch 8), fp32 and bf16 autocast; transformers is the baseline (a benchmark peer only).
- ``test_generation``: greedy tokens/s of the fast GPT for 128 and 512 new tokens, with the KV
  cache against the no-cache baseline.

The "smoke" ids run the same code at tiny shapes (tests/test_generate.py runs them, no timings).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

from benchmarks.matmul_peak import test_matmul_peak  # noqa: F401  (MFU denominator, same run)
from benchmarks.memory import peak_numpy_mb, peak_torch_mb
from myllm101.config import BertConfig, GPTConfig, LlamaConfig, get_preset
from myllm101.fast.bert import Bert
from myllm101.fast.generate import generate
from myllm101.fast.gpt import GPT
from myllm101.fast.llama import Llama
from myllm101.reference import bert as ref_bert
from myllm101.reference import gpt as ref_gpt
from myllm101.reference import llama as ref_llama
from myllm101.train.metrics import matmul_params, train_flops_per_token

# ---- forward / forward+backward, reference vs fast ------------------------------------------

ARCH = {  # fast class, reference module (its Reference* class and init_params)
    "gpt": (GPT, ref_gpt, ref_gpt.ReferenceGPT),
    "llama": (Llama, ref_llama, ref_llama.ReferenceLlama),
    "bert": (Bert, ref_bert, ref_bert.ReferenceBert),
}
SHORTENED = "GPT-2-small width and vocab, shortened to 4 layers, B=2, T=128 (NumPy reference time)"
SIZES = {  # name -> (configs per arch, batch, seq, note)
    "tiny": (
        {a: get_preset(f"{a}-tiny") for a in ARCH},
        2,
        16,
        "the -tiny presets (parity-test size)",
    ),
    "gpt2-small-like": (
        {
            "gpt": GPTConfig(n_layer=4),  # 768 wide, 12 heads, vocab 50257
            "llama": LlamaConfig(
                vocab_size=32000,
                n_layer=4,
                n_head=12,
                n_kv_head=4,
                n_embd=768,
                intermediate_size=2048,
            ),  # fmt: skip
            "bert": BertConfig(n_layer=4),  # bert-base width, vocab 30522
        },
        2,
        128,
        SHORTENED,
    ),
}
IMPLS = ("reference", "fast-fp32", "fast-bf16", "fast-compile")
MODES = ("forward", "forward+backward")


COMPILE_NOTE = "torch.compile: decoder LMs, large shape, forward+backward only (compile time)"


def _compile_ok(arch: str, size: str, impl: str, mode: str) -> bool:
    # compiling costs ~20 s (forward) to ~60 s (forward+backward) per model on a 2-core CPU: only
    # the training step of the decoder LMs at the large shape, where fusion has something to win
    if impl != "fast-compile":
        return True
    return size != "tiny" and arch in ("gpt", "llama") and mode == "forward+backward"


MODEL_PARAMS = [
    pytest.param(
        arch, size, impl, mode, id=f"{arch}-{size}-{impl}-{mode}" + ("-smoke" * (size == "tiny"))
    )
    for size in SIZES
    for arch in ARCH
    for impl in IMPLS
    for mode in MODES
    if _compile_ok(arch, size, impl, mode)
]


def _flops(cfg, T: int) -> int:
    """Training FLOPs per token of a model with this config (see train_flops_per_token)."""
    torch.manual_seed(0)
    return train_flops_per_token(matmul_params(ARCH[cfg.model_type][0](cfg)), cfg.n_layer,
                                 cfg.n_embd, T)  # fmt: skip


def _ids(cfg, B: int, T: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, cfg.vocab_size, (B, T))


def reference_step(arch: str, cfg, ids: np.ndarray, mode: str):
    _, module, ref_cls = ARCH[arch]
    model = ref_cls(cfg, params=module.init_params(cfg, seed=0, dtype=np.float32))

    def run():
        _, loss, cache = model.forward(ids, labels=ids)
        if mode == "forward+backward":
            model.backward(cache)
        return loss

    return run


def fast_step(arch: str, cfg, ids: np.ndarray, mode: str, impl: str):
    torch.manual_seed(0)
    model = ARCH[arch][0](cfg)
    fn = torch.compile(model) if impl == "fast-compile" else model
    x = torch.from_numpy(ids)
    bf16 = impl == "fast-bf16"

    def run():
        if mode == "forward":
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                return fn(x, labels=x).loss
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = fn(x, labels=x).loss
        loss.backward()
        return loss

    return run


@pytest.mark.parametrize("arch,size,impl,mode", MODEL_PARAMS)
def test_model(benchmark, arch, size, impl, mode):
    cfgs, B, T, note = SIZES[size]
    cfg = cfgs[arch]
    ids = _ids(cfg, B, T)
    if impl == "reference":
        fn = reference_step(arch, cfg, ids, mode)
        fn()  # warm-up
        peak = peak_numpy_mb(fn)
    else:
        fn = fast_step(arch, cfg, ids, mode, impl)
        fn()  # warm-up (compiles for fast-compile)
        fn()
        peak = peak_torch_mb(fn)
    benchmark.group = f"model {arch} {size} {mode}"
    flops = _flops(cfg, T) * B * T // (1 if mode == "forward+backward" else 3)
    benchmark.extra_info.update(
        component=arch, size=size, shape=f"B={B} T={T} L={cfg.n_layer} C={cfg.n_embd} "
        f"V={cfg.vocab_size}", impl=impl, mode=mode, peak_mb=peak, baseline=impl == "reference",
        count=B * T, unit="tokens", flops=flops, dtype="bf16" if impl == "fast-bf16" else "fp32",
        note=note + ("; " + COMPILE_NOTE if impl == "fast-compile" else ""),
        loadavg=os.getloadavg()[0],
    )  # fmt: skip
    benchmark.pedantic(fn, rounds=3 if size != "tiny" else 10, iterations=1, warmup_rounds=0)


# ---- training throughput vs Hugging Face ------------------------------------------------------

TRAIN = {  # name -> (n_layer, n_embd, n_head, vocab, T, batch, rounds)
    "hf-config": (6, 384, 6, 8192, 256, 8, 3),
    "smoke": (2, 32, 2, 97, 16, 2, 2),
}
TRAIN_PARAMS = [
    pytest.param(arch, impl, size, dtype, id=f"train-{arch}-{impl}-{dtype}-{size}")
    for size in TRAIN
    for arch in ("gpt", "llama")
    for dtype in ("fp32", "bf16")
    for impl in ("fast", "hf")
]


def _train_config(arch: str, size: str):
    """Our config for the shared shape (the HF model is built from it)."""
    L, C, H, V, T, _, _ = TRAIN[size]
    if arch == "gpt":
        cfg = GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=C)
    else:
        cfg = LlamaConfig(
            vocab_size=V, block_size=T, n_layer=L, n_head=H, n_kv_head=H // 2 or 1, n_embd=C,
            intermediate_size=8 * C // 3 // 32 * 32 or 32,
        )  # fmt: skip
    return cfg


def _hf_model(arch: str, cfg):
    import transformers  # a peer for comparison, never imported by myllm101

    if arch == "gpt":
        hf_cfg = transformers.GPT2Config(
            vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd,
            n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0, attn_implementation="sdpa",
        )  # fmt: skip
        return transformers.GPT2LMHeadModel(hf_cfg)
    hf_cfg = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_kv_head, max_position_embeddings=cfg.block_size,
        rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=False, attn_implementation="sdpa",
    )  # fmt: skip
    return transformers.LlamaForCausalLM(hf_cfg)


@pytest.mark.parametrize("arch,impl,size,dtype", TRAIN_PARAMS)
def test_training_throughput(benchmark, arch, impl, size, dtype):
    *_, T, B, rounds = TRAIN[size]
    cfg = _train_config(arch, size)
    torch.manual_seed(0)
    if impl == "fast":
        model = (GPT if arch == "gpt" else Llama)(cfg)
        loss_fn = lambda ids: model(ids, labels=ids).loss
    else:
        model = _hf_model(arch, cfg)
        loss_fn = lambda ids: model(input_ids=ids, labels=ids).loss
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.from_numpy(_ids(cfg, B, T))

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16, enabled=dtype == "bf16"):
            loss = loss_fn(ids)
        loss.backward()
        opt.step()
        return loss

    step()  # warm-up: allocates the optimizer state
    peak = peak_torch_mb(step)
    benchmark.group = f"train {arch} {size} {dtype}"
    result = benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=0)
    assert torch.isfinite(result)
    n_params = sum(p.numel() for p in model.parameters())
    benchmark.extra_info.update(
        component=f"train-{arch}", size=size, impl=f"{impl}-{dtype}",
        mode="train step (AdamW)" + (", bf16 autocast" if dtype == "bf16" else ""),
        shape=f"B={B} T={T} L={cfg.n_layer} C={cfg.n_embd} V={cfg.vocab_size}",
        params=n_params, peak_mb=peak, baseline=impl == "hf", count=B * T, unit="tokens",
        flops=_flops(cfg, T) * B * T, dtype=dtype,  # our model's count for both rows
        target="target: ours >= 1.3x transformers' tokens/s (fp32 and bf16)",
        loadavg=os.getloadavg()[0],
    )  # fmt: skip


# ---- generation with vs without the KV cache --------------------------------------------------

GEN = {  # name -> (config, prompt length, new tokens, rounds)
    "128": (GPTConfig(vocab_size=8192, block_size=1024, n_layer=6, n_head=6, n_embd=384), 16, 128, 2),
    "512": (GPTConfig(vocab_size=8192, block_size=1024, n_layer=6, n_head=6, n_embd=384), 16, 512, 1),
    "smoke": (dataclasses.replace(get_preset("gpt-tiny")), 4, 8, 2),
}  # fmt: skip
GEN_PARAMS = [
    pytest.param(n, cache, id=f"generate-{n}-{'cache' if cache else 'no-cache'}")
    for n in GEN
    for cache in (True, False)
]


@pytest.mark.parametrize("new,use_cache", GEN_PARAMS)
def test_generation(benchmark, new, use_cache):
    cfg, prompt_len, n_new, rounds = GEN[new]
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    prompt = _ids(cfg, 1, prompt_len)[0].tolist()

    def run():
        return generate(model, prompt, n_new, temperature=0, use_cache=use_cache)

    generate(model, prompt, 2, temperature=0, use_cache=use_cache)  # warm-up
    benchmark.group = f"generate {new} new tokens"
    out = benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)
    assert len(out) == prompt_len + n_new
    benchmark.extra_info.update(
        component="generate-gpt", size=new, impl="kv-cache" if use_cache else "no-cache",
        mode="greedy, batch 1", shape=f"prompt={prompt_len} new={n_new} L={cfg.n_layer} "
        f"C={cfg.n_embd} V={cfg.vocab_size}", baseline=not use_cache, count=n_new,
        unit="tokens", peak_mb=None, target="target: KV cache >= 10x at 512 new tokens",
        loadavg=os.getloadavg()[0],
    )  # fmt: skip
