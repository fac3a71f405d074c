# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Training like a pro: mixed precision, checkpointing, accumulation, DDP
#
# Four techniques that change *how* a step is computed, not *what* it computes:
#
# | technique | trades | the step's result |
# |---|---|---|
# | bf16 autocast | precision for speed and memory | close (bf16 has 8 significant bits) |
# | gradient checkpointing | compute for memory | the same gradients |
# | gradient accumulation | time for memory (a big batch in small pieces) | the same gradients |
# | data parallelism (DDP) | machines for time | the same gradients |
#
# Each is checked here against the float64 NumPy reference (`ReferenceGPT`, notebook 03), which
# has none of them: it is the definition of the right answer.

# %%
import os
from pathlib import Path

if Path.cwd().name == "notebooks":  # opened from notebooks/ in Jupyter: work from the repo root
    os.chdir("..")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny NumPy matrices: a 2nd thread only waits

import numpy as np
import torch

from myllm101.api import AutoModelForCausalLM
from myllm101.config import GPTConfig
from myllm101.data.batches import RandomWindows
from myllm101.device import choose_train_dtype, hardware
from myllm101.fast.blocks import set_recompute
from myllm101.reference.data import random_window_batch
from myllm101.reference.gpt import ReferenceGPT

torch.set_num_threads(1)  # a tiny model: one thread is fastest and leaves the other core free

cfg = GPTConfig(vocab_size=97, block_size=64, n_layer=4, n_head=4, n_embd=64)
model = AutoModelForCausalLM.from_config(cfg, seed=0)  # float32, as trained
model64 = AutoModelForCausalLM.from_config(cfg).double()
model64.load_state_dict(model.state_dict())
reference = ReferenceGPT(cfg, {k: v.numpy().copy() for k, v in model64.state_dict().items()})
tokens = (np.arange(20_000) * 7 + np.arange(20_000) // 5) % 97  # a toy corpus with structure


def grads_of(m) -> dict[str, np.ndarray]:
    """The current .grad of every parameter, as float64 NumPy arrays (then cleared)."""
    out = {n: p.grad.double().numpy().copy() for n, p in m.named_parameters()}
    m.zero_grad(set_to_none=True)
    return out


def worst_rel(a: dict, b: dict) -> float:
    """max over tensors of max|a - b| / max|b|: one number for 'how far apart'."""
    return max(float(np.abs(a[n] - b[n]).max() / np.abs(b[n]).max()) for n in a)


# %% [markdown]
# ## 1. Mixed precision: bf16 autocast
#
# Under `torch.autocast(dtype=torch.bfloat16)` matrix multiplications run in bfloat16 (8 bits of
# mantissa, the exponent range of float32) while the weights, their gradients and the
# reductions (softmax, LayerNorm, the loss) stay float32. Where bf16 is native (AVX512-BF16 or
# AMX on a CPU, any recent GPU) its GEMMs are 2-7x faster; where it is emulated (an AVX2-only
# CPU) they are far slower, so the trainer's `dtype="auto"` asks `myllm101/device.py` first:

# %%
hw = hardware()
choice = choose_train_dtype("auto")
print(f"CPU: {hw.cpu_name}, capability {hw.cpu_capability}, native bf16: {hw.native_bf16}")
print(f"dtype auto -> {choice.value!r}: {choice.reason}")

# %% [markdown]
# Whatever this machine chose, we can measure what bf16 does to the *numbers* on one batch
# (the model is tiny, so even emulated bf16 takes milliseconds): the loss and gradients of
# float32 and of bf16 autocast, each against the float64 reference.

# %%
ids = random_window_batch(tokens, 64, 8, seed=0, index=0)  # (8, 64)
_, loss_ref, cache = reference.forward(ids, labels=ids)
g_ref = reference.backward(cache)

ids_t = torch.from_numpy(ids)
loss32 = model(ids_t, labels=ids_t).loss
loss32.backward()
g32, loss32 = grads_of(model), loss32.item()
with torch.autocast("cpu", dtype=torch.bfloat16):
    loss_bf16 = model(ids_t, labels=ids_t).loss
loss_bf16.backward()
g_bf16 = grads_of(model)

print(f"{'precision':<16} {'loss':>10} {'|loss - ref|':>13} {'worst grad rel. err':>20}")
print(f"{'float64 (ref)':<16} {loss_ref:>10.6f} {0:>13.1e} {0:>20.1e}")
for name, loss, g in (("float32", loss32, g32), ("bf16 autocast", loss_bf16.item(), g_bf16)):
    print(f"{name:<16} {loss:>10.6f} {abs(loss - loss_ref):>13.1e} {worst_rel(g, g_ref):>20.1e}")

# %% [markdown]
# ## 2. Gradient checkpointing
#
# Backward needs the activations of forward. Keeping all of them costs memory proportional to
# layers x batch x length x width. **Checkpointing** keeps only some and recomputes the rest
# during backward. `set_recompute(model, mode)`:
# - `"none"`: keep everything;
# - `"mlp"`: drop each block's (B, T, 4C) MLP activations, recompute them;
# - `"blocks"`: keep only each block's input, recompute the whole block (about one extra forward).
#
# We count the bytes autograd saves for backward (a `saved_tensors_hooks` sees every saved
# tensor; recomputed ones are not saved) and compare the gradients.


# %%
def saved_bytes_and_grads(mode: str):
    set_recompute(model64, mode)
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model64(ids_t, labels=ids_t).loss
    loss.backward()
    return sum(saved), grads_of(model64)


model64.train()
memory, recompute_grads = {}, {}
for mode in ("none", "mlp", "blocks"):
    memory[mode], recompute_grads[mode] = saved_bytes_and_grads(mode)
set_recompute(model64, "none")
print(f"{'recompute':<10} {'saved for backward':>19} {'worst grad rel. err vs reference':>34}")
for mode in memory:
    err = worst_rel(recompute_grads[mode], g_ref)
    print(f"{mode:<10} {memory[mode] / 1e6:>16.2f} MB {err:>34.1e}")

# %% [markdown]
# ## 3. Gradient accumulation
#
# The loss is a mean over the batch's tokens, so the gradient of a batch of 8 windows is the
# mean of the gradients of its two halves (each of 4 windows, equally many tokens). The trainer
# (`grad_accum_steps=2`) runs `(loss / 2).backward()` per micro-batch, letting `.grad` add up;
# the reference (`reference/train.py`) adds `grads / 2` by hand. Both equal one batch of 8.

# %%
halves = (ids[:4], ids[4:])
# reference: mean of the two micro-batches' gradients
g_ref_accum = {n: np.zeros_like(v) for n, v in g_ref.items()}
for half in halves:
    _, _, c = reference.forward(half, labels=half)
    for n, g in reference.backward(c).items():
        g_ref_accum[n] += g / len(halves)
# fast: .grad accumulates over two backward calls
for half in halves:
    h = torch.from_numpy(half)
    (model64(h, labels=h).loss / len(halves)).backward()
g_fast_accum = grads_of(model64)
print("worst rel. err, reference accumulation vs one big batch:", worst_rel(g_ref_accum, g_ref))
print("worst rel. err, fast accumulation vs reference:         ", worst_rel(g_fast_accum, g_ref))

# %% [markdown]
# ## 4. Data parallelism (DDP)
#
# With `torchrun --nproc_per_node=2`, two processes each hold a full copy of the model. Each
# draws the *same* global batch and keeps its own rows (notebook 01: rank `r` keeps rows
# `[r*B, (r+1)*B)`), runs forward and backward on them, and DDP then **all-reduces** the
# gradients: every rank ends up with their mean, the gradient of the global batch, and takes
# the same optimizer step. On this machine (CPU, gloo backend) that is:
#
# ```bash
# # batch_size is per process: 2 processes x 8 = a global batch of 16
# torchrun --standalone --nproc_per_node=2 -m myllm101 train \
#     --config configs/gpt-shakespeare.json --batch_size=8
# ```
#
# (`tests/test_train_ddp.py` runs exactly this check with two real processes: starting them
# takes longer than this notebook's budget.) The all-reduce is only a mean, so we can carry it
# out in one process: each "rank" computes its gradient on its own shard, and we average.

# %%
world, per_rank = 2, 4
shards = [RandomWindows(tokens, 64, per_rank, seed=0, rank=r, world_size=world).batch(0)
          for r in range(world)]  # fmt: skip
rank_grads = []
for shard in shards:
    model64(shard, labels=shard).loss.backward()
    rank_grads.append(grads_of(model64))
all_reduced = {n: sum(g[n] for g in rank_grads) / world for n in rank_grads[0]}

global_batch = random_window_batch(tokens, 64, per_rank * world, seed=0, index=0)  # one process
_, _, c = reference.forward(global_batch, labels=global_batch)
g_ref_global = reference.backward(c)
print("worst rel. err, mean of the ranks' gradients vs reference on the global batch:",
      worst_rel(all_reduced, g_ref_global))  # fmt: skip

# %% [markdown]
# ## The fast techniques agree with the reference
#
# Tolerances, from the precision of each computation:
# - float64 paths (checkpointing, accumulation, the all-reduce): the reference and the fast model
#   differ only in summation order, ~$10^{-15}$ relative (printed above): `rtol=1e-9` of each
#   tensor's largest entry. Checkpointing recomputes the same operations in the same order, so
#   its gradients equal the non-checkpointed ones exactly; and it must save less.
# - float32: unit roundoff $6 \cdot 10^{-8}$; a loss and gradients through 4 blocks stay within
#   `1e-4` relative.
# - bf16 autocast: 8-bit mantissa, unit roundoff $2^{-9} \approx 2 \cdot 10^{-3}$; every GEMM
#   input is rounded, so the loss is within `1e-2` relative and the gradients within `0.1` of
#   each tensor's scale. The check is that bf16 is *close*, and that float32 is much closer.

# %%
for mode in ("mlp", "blocks"):
    for n, g in recompute_grads["none"].items():
        np.testing.assert_array_equal(recompute_grads[mode][n], g, err_msg=f"{mode}: {n}")
assert memory["blocks"] < memory["mlp"] < memory["none"], memory
for grads in (recompute_grads["none"], g_fast_accum, g_ref_accum):
    assert worst_rel(grads, g_ref) < 1e-9
assert worst_rel(all_reduced, g_ref_global) < 1e-9
np.testing.assert_allclose(loss32, loss_ref, rtol=1e-4)
assert worst_rel(g32, g_ref) < 1e-4
np.testing.assert_allclose(loss_bf16.item(), loss_ref, rtol=1e-2)
assert worst_rel(g_bf16, g_ref) < 0.1
assert worst_rel(g_bf16, g_ref) > worst_rel(g32, g_ref)  # bf16 really is the coarser one
print("checkpointing, accumulation and the all-reduce equal the reference; fp32 and bf16 are close")
