"""Training throughput on CPU: one optimizer step of the fast GPT / LLaMA in fp32, bf16 autocast,
with gradient checkpointing and under torch.compile, plus the NumPy reference trainer.

    pytest benchmarks/test_training.py --benchmark-only --benchmark-json=training.json   # minutes
    pytest benchmarks/test_training.py -k "smoke or matmul" --benchmark-only  # tiny shapes, seconds
    python -m benchmarks.ratio_report training.json --name TRAINING --title "Training on CPU"

Every round is one whole step: ``zero_grad``, forward with ``labels`` -> ``.loss``, ``backward``,
AdamW step (``fast.optim.make_adamw`` over ``param_groups``, as the trainer builds it; no gradient
clipping). Shapes: "small" is n_layer 4, n_embd 256, 4 heads (LLaMA: 2 KV heads, SwiGLU width 704),
vocab 4096, T=256, B=8; "smoke" is the same code at n_layer 2, n_embd 32, vocab 97, T=16, B=2.
One group per model and shape ("train gpt small", ...); its rows (``extra_info["impl"]``):

- ``fp32`` (the baseline): the eager model in float32;
- ``bf16``: forward under ``torch.autocast("cpu", torch.bfloat16)`` (weights and optimizer fp32);
- ``fp32+ckpt``: ``model.gradient_checkpointing = True``: each block's activations are dropped
  after forward and recomputed in backward (MFU counts the model's FLOPs, not the recompute);
- ``compile``: ``torch.compile(model)``, compiled by two warm-up steps before timing (~60 s per
  model on a 2-core CPU, so only at "small"; the optimizer step stays eager);
- ``reference-numpy`` (GPT only): ``reference.train.train_gpt`` for one step, i.e. ReferenceGPT
  forward/backward and the NumPy AdamW, float32, same shape. ``train_gpt`` builds its optimizer on
  every call, so each round also allocates fresh AdamW moments (small next to forward/backward).

Memory, in ``extra_info``: ``peak_mb`` is the extra memory of one whole step
(``benchmarks.memory``); ``activation_mb`` is the memory a forward pass still holds when it returns
(before backward): what autograd keeps for backward plus the loss. For torch it is the net sum of
the profiler's allocation records over the forward (on CPU every allocation and free is recorded;
at the small shape it agrees within 0.2% with summing the bytes of the tensors autograd saves via
``saved_tensors_hooks``, and unlike that sum it also sees what checkpointing keeps outside them); for
NumPy it is tracemalloc's growth while the forward's cache is alive. The issue's target compares
``fp32+ckpt`` against ``fp32``: activation memory <= 1/3 at <= 30% more time (ratio >= 0.77).
The report shows it in an "activation MB" column.

Ours against peers (``test_training_vs_peers``), at the shape of issue 14: 6 layers, width 384,
6 heads (LLaMA: 2 KV heads, SwiGLU width 1024), vocab 8192, T=256, B=8, fp32, eager and
torch.compile. One group per model and mode ("train gpt 6L-384 vs peers eager", ...), ours the
baseline; the peers are ``benchmarks/nanogpt_peer.py`` (a nanoGPT-style GPT-2 written here, GPT
only) and transformers' ``GPT2LMHeadModel`` (SDPA) / ``LlamaForCausalLM``, each with the same
fused AdamW. The rows of a group are timed in one interleaved loop (benchmarks/interleave.py):
round r steps every model once, the order rotating, so a drift of the machine's speed reaches
every row alike (timed one row after another, the GPT rows' ratio had moved by ~10% between
runs); each row's test then reports its own rounds. A peer row's ratio is ours' time / the peer's
(< 1: ours is faster); the target asks <= 1 / 1.05 of every peer and an MFU of ours >= 85%.
Ours' eager float32 Linears run each GEMM by the faster of MKL and oneDNN at its shape
(``myllm101/fast/cpu_gemm.py``, chosen by timing both in the first step); the peers' ``F.linear``
calls MKL. The matmul peak at the step's shapes (``step_gemms_case``) runs the same choices.

The whole process keeps freed memory for reuse (``train/host_memory.py``, as ``myllm101 train``
sets it): a step's large blocks come back without fresh page faults. It is process-wide, so the
peers and every other row run with it too (``benchmarks/host_memory_ab.py`` times it on and off).

The matmul peak (``benchmarks/matmul_peak.py``) runs in the same session: the MFU denominator.
tests/test_training_bench_smoke.py runs the smoke rows and builds the report (no timing asserts).
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from benchmarks.interleave import interleaved, replay
from benchmarks.matmul_peak import (
    step_gemms_case,
    test_matmul_peak,  # noqa: F401  (MFU denominator, same run)
)
from benchmarks.memory import MB, peak_numpy_mb, peak_torch_mb
from benchmarks.nanogpt_peer import PeerConfig, PeerGPT
from myllm101.config import GPTConfig, LlamaConfig
from myllm101.fast import cpu_gemm
from myllm101.fast.gpt import GPT
from myllm101.fast.llama import Llama
from myllm101.fast.optim import make_adamw, param_groups
from myllm101.reference import gpt as ref_gpt
from myllm101.reference.train import TrainSettings, train_gpt
from myllm101.train.host_memory import reuse_freed_memory
from myllm101.train.metrics import matmul_params, train_flops_per_token


@dataclass(frozen=True)
class Size:
    n_layer: int
    n_embd: int
    n_head: int
    n_kv_head: int  # LLaMA only
    intermediate_size: int  # LLaMA only
    vocab: int
    T: int
    B: int
    rounds: int


SIZES = {
    "small": Size(4, 256, 4, 2, 704, 4096, 256, 8, rounds=5),
    "smoke": Size(2, 32, 4, 2, 64, 97, 16, 2, rounds=3),
}
IMPLS = ("fp32", "bf16", "fp32+ckpt", "compile", "reference-numpy")
TARGET = "target: checkpointing activation memory <= 1/3 at <= 30% time cost"
HOST_MALLOC = reuse_freed_memory()  # as the trainer does; process-wide, so every row gets it
HOST_NOTE = (
    f"host malloc: {HOST_MALLOC} for the whole process, as `myllm101 train` sets it "
    "(train/host_memory.py: freed blocks reused, no fresh page faults each step), so every row "
    "and peer here runs with it"
)
NOTES = {
    "fp32": f"fp32: eager float32 step (the baseline); {HOST_NOTE}",
    "bf16": "bf16: forward under torch.autocast(cpu, bfloat16), fp32 weights and AdamW",
    "fp32+ckpt": "fp32+ckpt: every block checkpointed (recomputed in backward); MFU counts "
    "model FLOPs only",
    "compile": "compile: torch.compile(model), compiled before timing (~60 s per model, so "
    "only at the small shape); the optimizer step is eager",
    "reference-numpy": "reference-numpy: reference.train.train_gpt, one step (ReferenceGPT "
    "forward/backward + NumPy AdamW, float32; each round builds the AdamW moments afresh)",
}
MODES = {
    "fp32": "train step (AdamW)",
    "bf16": "train step (AdamW), bf16 autocast",
    "fp32+ckpt": "train step (AdamW), gradient checkpointing",
    "compile": "train step (AdamW), torch.compile",
    "reference-numpy": "train step (AdamW), NumPy",
}


def _wanted(arch: str, size: str, impl: str) -> bool:
    if impl == "reference-numpy":
        return arch == "gpt"
    return impl != "compile" or size != "smoke"  # compiling takes a minute per model


PARAMS = [
    pytest.param(arch, size, impl, id=f"train-{arch}-{size}-{impl.replace('+', '-')}")
    for size in SIZES
    for arch in ("gpt", "llama")
    for impl in IMPLS
    if _wanted(arch, size, impl)
]


def _config(arch: str, s: Size):
    if arch == "gpt":
        return GPTConfig(
            vocab_size=s.vocab, block_size=s.T, n_layer=s.n_layer, n_head=s.n_head, n_embd=s.n_embd
        )
    return LlamaConfig(
        vocab_size=s.vocab, block_size=s.T, n_layer=s.n_layer, n_head=s.n_head,
        n_kv_head=s.n_kv_head, n_embd=s.n_embd, intermediate_size=s.intermediate_size,
    )  # fmt: skip


def _shape(arch: str, s: Size) -> str:
    shape = f"B={s.B} T={s.T} L={s.n_layer} C={s.n_embd} H={s.n_head} V={s.vocab}"
    return shape + (f" kv={s.n_kv_head} I={s.intermediate_size}" if arch == "llama" else "")


def _ids(s: Size) -> np.ndarray:
    return np.random.default_rng(0).integers(0, s.vocab, (s.B, s.T))


def torch_held_after_forward_mb(forward) -> float:
    """Memory allocated during ``forward()`` and still held when it returns (its result kept alive
    until the profiler stops): the net sum of the profiler's per-op allocation records.

    Nothing allocated earlier may be freed inside the window: once a profiler has run in the
    process, frees of older blocks (a warm-up's gradients, an earlier test's objects) can be
    recorded too and would subtract (seen: -28 KB of gradients at the smoke shape). So the caller
    drops the gradients first, and the garbage collector runs before and stays off during it."""
    gc.collect()
    gc.disable()
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = forward()
    finally:
        gc.enable()
    del out
    return sum(e.self_cpu_memory_usage for e in prof.events()) / MB


def numpy_held_after_forward_mb(forward) -> float:
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        out = forward()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del out
    return (held - base) / MB


def fast_step(arch: str, cfg, ids: np.ndarray, impl: str):
    """(step, forward, zero_grad, n_matmul) for one fast model: ``step()`` is one optimizer step
    returning the loss, ``forward()`` the same forward alone (the loss, graph attached)."""
    torch.manual_seed(0)
    model = (GPT if arch == "gpt" else Llama)(cfg).train()
    model.gradient_checkpointing = impl == "fp32+ckpt"
    fn = torch.compile(model) if impl == "compile" else model
    opt = make_adamw(param_groups(model, 0.1), lr=1e-4, betas=(0.9, 0.95))
    x = torch.from_numpy(ids)
    bf16 = impl == "bf16"

    def forward():
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return fn(x, labels=x).loss

    def step():
        opt.zero_grad(set_to_none=True)
        loss = forward()
        loss.backward()
        opt.step()
        return loss

    def zero_grad():
        opt.zero_grad(set_to_none=True)

    return step, forward, zero_grad, matmul_params(model)


def reference_step(cfg, s: Size):
    """(step, forward) for the NumPy reference: ``step()`` is ``train_gpt`` for one step."""
    model = ref_gpt.ReferenceGPT(cfg, params=ref_gpt.init_params(cfg, seed=0, dtype=np.float32))
    tokens = np.random.default_rng(0).integers(0, s.vocab, 4 * s.B * s.T)
    settings = TrainSettings(
        steps=1, seq_len=s.T, batch_size=s.B, lr=1e-4, weight_decay=0.1, schedule="constant",
        grad_clip=0.0, max_steps=1,
    )  # fmt: skip
    ids = _ids(s)

    def step():
        return torch.tensor(train_gpt(model, tokens, settings)[0])

    def forward():
        return model.forward(ids, labels=ids)

    return step, forward


@pytest.mark.parametrize("arch,size,impl", PARAMS)
def test_training_step(benchmark, arch, size, impl):
    s = SIZES[size]
    cfg = _config(arch, s)
    if impl == "reference-numpy":
        step, forward = reference_step(cfg, s)
        n_matmul = matmul_params(GPT(cfg))  # the same model's count
        step()  # warm-up
        activation = numpy_held_after_forward_mb(forward)
        peak = peak_numpy_mb(step)
    else:
        step, forward, zero_grad, n_matmul = fast_step(arch, cfg, _ids(s), impl)
        step()  # warm-up: allocates the optimizer state (and compiles for "compile")
        if impl == "compile":
            step()  # the first backward may still compile; time only the steady state
        zero_grad()  # as at the start of a step, outside the measured window
        activation = torch_held_after_forward_mb(forward)
        peak = peak_torch_mb(step)
    benchmark.group = f"train {arch} {size}"
    benchmark.extra_info.update(
        component=f"train-{arch}", size=size, impl=impl, mode=MODES[impl], shape=_shape(arch, s),
        matmul_params=n_matmul, peak_mb=peak, activation_mb=activation, baseline=impl == "fp32",
        count=s.B * s.T, unit="tokens",
        flops=train_flops_per_token(n_matmul, cfg.n_layer, cfg.n_embd, s.T) * s.B * s.T,
        dtype="bf16" if impl == "bf16" else "fp32",
        note=NOTES[impl], target=TARGET,
        loadavg=os.getloadavg()[0],
    )  # fmt: skip
    loss = benchmark.pedantic(step, rounds=s.rounds, iterations=1, warmup_rounds=0)
    assert torch.isfinite(loss)


# ---- ours vs peers (nanoGPT-style, transformers) -----------------------------------------------

PEER_SIZES = {
    "6L-384": Size(6, 384, 6, 2, 1024, 8192, 256, 8, rounds=9),  # the shape of issue 14
    "smoke": SIZES["smoke"],
}
PEERS = {"gpt": ("ours", "nanogpt-peer", "transformers"), "llama": ("ours", "transformers")}
SPEEDUP = 1.05  # ours' tokens/s over the best peer's
MFU_GOAL = 0.85
PEER_TARGET = (
    f"target: ours >= {SPEEDUP}x the best peer's training tokens/s (eager and compiled); "
    f"ours' fp32 MFU >= {MFU_GOAL:.0%} of the matmul peak"
)
PEER_NOTE = (
    "peers: the rows' steps are timed in one interleaved loop (each round steps every model "
    "once, the order rotating); a peer row's ratio is ours' time / the peer's (< 1: ours is "
    "faster); every model steps the same fused AdamW; FLOPs (MFU) are ours' count for every row; "
    + HOST_NOTE
)


def gemm_note(mode: str) -> str:
    """How ours' Linears ran their GEMMs in this group (the same text on every row of it)."""
    if mode == "compile":
        return "ours compiled: torch.compile's own GEMMs (fast/cpu_gemm.py routes eager steps)"
    chosen = cpu_gemm.choices()
    on = sum(lib == "onednn" for lib in chosen.values())
    return (
        "ours eager: each float32 Linear GEMM by the faster of MKL and oneDNN at its shape "
        f"(fast/cpu_gemm.py; the peers' F.linear calls MKL): {on} of {len(chosen)} (GEMM, shape) "
        "keys chose oneDNN in this run so far"
    )


PEER_PARAMS = [
    pytest.param(arch, size, impl, mode, id=f"peers-{arch}-{size}-{impl}-{mode}")
    for size in PEER_SIZES
    for arch in PEERS
    for mode in ("eager", "compile")
    for impl in PEERS[arch]
    if mode == "eager" or size != "smoke"  # compiling takes a minute per model
]


def _peer_model(arch: str, impl: str, cfg) -> nn.Module:
    if impl == "ours":
        return (GPT if arch == "gpt" else Llama)(cfg)
    if impl == "nanogpt-peer":
        return PeerGPT(PeerConfig(cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_head,
                                  cfg.n_embd))  # fmt: skip
    import transformers  # a peer for comparison, never imported by myllm101

    if arch == "gpt":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd,
            n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, attn_implementation="sdpa",
        ))  # fmt: skip
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_kv_head, max_position_embeddings=cfg.block_size,
        rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=0, eos_token_id=0, attn_implementation="sdpa",
    ))  # fmt: skip


@dataclass
class PeerStep:
    step: object  # () -> loss: one optimizer step
    forward: object  # () -> loss, graph attached
    zero_grad: object


def _peer_step(arch: str, impl: str, cfg, s: Size, compiled: bool) -> PeerStep:
    torch.manual_seed(0)
    model = _peer_model(arch, impl, cfg).train()
    fn = torch.compile(model) if compiled else model
    opt = make_adamw(param_groups(model, 0.1), lr=1e-4, betas=(0.9, 0.95))
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, s.vocab, (s.B, s.T + 1)))
    x, y = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()  # all read the same T tokens

    def forward():
        if impl == "ours":
            return fn(x, labels=x).loss  # shifts the labels inside
        if impl == "nanogpt-peer":
            return fn(x, y)[1]  # nanoGPT's loader hands it the next tokens
        return fn(input_ids=x, labels=x).loss

    def step():
        opt.zero_grad(set_to_none=True)
        loss = forward()
        loss.backward()
        opt.step()
        return loss

    for _ in range(2 if compiled else 1):  # optimizer state; compiling (the 2nd backward too)
        step()
    return PeerStep(step, forward, lambda: opt.zero_grad(set_to_none=True))


_GROUP: dict[tuple, dict[str, PeerStep]] = {}  # the current group's models only
_TIMES: dict[tuple, dict[str, list[float]]] = {}  # its rows' step times, timed interleaved


def peer_group(arch: str, size: str, mode: str) -> dict[str, PeerStep]:
    """Every model of one group, built and warmed up once (its rows share them; the rows of a
    group run one after another, so the previous group's models are dropped here)."""
    key = (arch, size, mode)
    if key not in _GROUP:
        _GROUP.clear()
        _TIMES.clear()
        gc.collect()
        s, cfg = PEER_SIZES[size], _config(arch, PEER_SIZES[size])
        _GROUP[key] = {i: _peer_step(arch, i, cfg, s, mode == "compile") for i in PEERS[arch]}
    return _GROUP[key]


@pytest.mark.parametrize("arch", list(PEERS))
@pytest.mark.parametrize("size", list(PEER_SIZES))
def test_matmul_peak_at_shape(benchmark, arch, size):
    """The GEMMs of ours' step alone (``step_gemms_case``): the peers' groups' MFU denominator."""
    s = PEER_SIZES[size]
    cfg = _config(arch, s)
    run, flops = step_gemms_case((GPT if arch == "gpt" else Llama)(cfg), s.B, s.T, cfg.n_layer,
                                 cfg.n_head)  # fmt: skip
    assert (
        flops
        == train_flops_per_token(
            matmul_params((GPT if arch == "gpt" else Llama)(cfg)), cfg.n_layer, cfg.n_embd, s.T
        )
        * s.B
        * s.T
    )
    run()  # warm-up
    benchmark.group = "matmul peak"
    benchmark.extra_info.update(
        component="matmul-peak", size=size, impl=f"fp32 {arch} {size} step GEMMs",
        mode="the step's GEMMs alone", shape=_shape(arch, s), dtype="fp32", flops=flops,
        peak_key=f"{arch} {size}", peak_mb=0.0, loadavg=os.getloadavg()[0],
    )  # fmt: skip
    benchmark.pedantic(run, rounds=max(s.rounds, 5), iterations=1, warmup_rounds=0)


@pytest.mark.parametrize("arch,size,impl,mode", PEER_PARAMS)
def test_training_vs_peers(benchmark, arch, size, impl, mode):
    s = PEER_SIZES[size]
    cfg = _config(arch, s)
    group = peer_group(arch, size, mode)
    mine = group[impl]
    key = (arch, size, mode)
    if key not in _TIMES:  # the group's first row: time every model's step, interleaved
        _TIMES[key] = interleaved({name: g.step for name, g in group.items()}, s.rounds)
    mine.zero_grad()
    activation = torch_held_after_forward_mb(mine.forward)
    peak = peak_torch_mb(mine.step)
    torch.manual_seed(0)
    n_matmul = matmul_params((GPT if arch == "gpt" else Llama)(cfg))  # ours' count, every row
    label = {p: p if mode == "eager" else f"{p}-compile" for p in PEERS[arch]}  # the row's impl
    peers = [label[p] for p in PEERS[arch] if p != "ours"]
    benchmark.group = f"train {arch} {size} vs peers {mode}"
    benchmark.extra_info.update(
        component=f"train-{arch}", size=size, impl=label[impl], shape=_shape(arch, s),
        mode="train step (AdamW), fp32" + (", torch.compile" if mode == "compile" else ""),
        matmul_params=n_matmul, peak_mb=peak, activation_mb=activation, baseline=impl == "ours",
        peak_key=f"{arch} {size}",
        count=s.B * s.T, unit="tokens", dtype="fp32",
        flops=train_flops_per_token(n_matmul, cfg.n_layer, cfg.n_embd, s.T) * s.B * s.T,
        note=f"{PEER_NOTE}; {gemm_note(mode)}", target=PEER_TARGET,
        goals=[  # the same on every row of the group
            {"impls": peers, "metric": "ratio", "op": "<=", "value": 1 / SPEEDUP},
            {"impls": [label["ours"]], "metric": "mfu", "op": ">=", "value": MFU_GOAL},
        ],
        loadavg=os.getloadavg()[0],
    )  # fmt: skip
    loss = replay(benchmark, _TIMES[key][impl], result=mine.step())
    assert torch.isfinite(loss)
