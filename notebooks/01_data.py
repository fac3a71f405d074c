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
# # 01 · Data: from Shakespeare's plays to training batches
#
# A language model learns from one long stream of token ids. This notebook follows the text from
# the corpus on disk to the `(B, T)` batches a training step reads:
#
# 1. **the corpus**: 42 plays and poems, split *by document* into train / val / test
#    (`myllm101/data/shakespeare.py`, made by `make data`);
# 2. **token files**: a split's text encoded once into a flat array of ids on disk
#    (`myllm101/data/tokens.py`);
# 3. **batches**: windows of `T` consecutive tokens, `B` of them per batch
#    (`myllm101/reference/data.py` in NumPy, `myllm101/data/batches.py` in PyTorch).
#
# It ends by asserting that the NumPy reference and the PyTorch batches are the same integers.

# %%
import json
import os
import tempfile
import warnings
from pathlib import Path

if Path.cwd().name == "notebooks":  # opened from notebooks/ in Jupyter: work from the repo root
    os.chdir("..")

import matplotlib.pyplot as plt
import numpy as np
import torch

from myllm101.api import AutoTokenizer
from myllm101.data.batches import RandomWindows, SequentialWindows
from myllm101.data.tokens import tokenize_file
from myllm101.reference import data as ref_data
from myllm101.reference.bpe import Tokenizer as ReferenceTokenizer

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
DATA = Path("data/shakespeare")
assert (DATA / "manifest.json").exists(), "run `make data` first (it writes data/shakespeare)"

# %% [markdown]
# ## 1. The corpus and its splits
#
# Splitting by *document* (not by line) keeps every play wholly in one split: a validation loss
# measured on lines of a play the model also trained on would flatter it. `manifest.json`
# records which documents went where, and each file's size and sha256.

# %%
manifest = json.loads((DATA / "manifest.json").read_text())
splits = manifest["splits"]
print(f"{'split':<6} {'documents':>9} {'MB':>6}  first titles")
for name, entry in splits.items():
    titles = ", ".join(entry["documents"][:3])
    print(f"{name:<6} {len(entry['documents']):>9} {entry['bytes'] / 1e6:>6.2f}  {titles}, ...")

docs = {name: set(entry["documents"]) for name, entry in splits.items()}
assert not (docs["train"] & docs["val"]) and not (docs["train"] & docs["test"])
assert not (docs["val"] & docs["test"])

# %% [markdown]
# ## 2. Tokens, and a token file
#
# We use GPT-2's byte-level BPE (50,257 ids; `AutoTokenizer.from_pretrained("gpt2")`, read from
# a rank file installed with the project, nothing is downloaded). Notebook 11 shows how BPE is
# trained; here we only use it. Every id is below 65,536, so a token fits in a `uint16`: the
# token file is half the size of `int32`, and `np.memmap` reads windows of it without loading
# the whole file.
#
# The reference tokenizer (`reference/bpe.py`, plain Python loops) and the fast one
# (`fast/bpe.py`, cached pieces) share the same vocabulary; they must give the same ids.

# %%
fast_tok = AutoTokenizer.from_pretrained("gpt2")
ref_tok = ReferenceTokenizer(fast_tok.mergeable_ranks, fast_tok.pattern, fast_tok.special_tokens)

text = (DATA / "test.txt").read_text()
sample = text[:3000]
ids_fast = fast_tok.encode(sample)
ids_ref = ref_tok.encode(sample)
print(f"{len(sample)} characters -> {len(ids_fast)} tokens "
      f"({len(sample.encode()) / len(ids_fast):.2f} bytes per token)")  # fmt: skip
print([fast_tok.decode([i]) for i in ids_fast[:24]])

# %%
out_dir = Path(tempfile.mkdtemp(prefix="myllm101-nb01-"))
token_file = tokenize_file(DATA / "test.txt", fast_tok, out_dir / "test.bin", show_progress=False)
tokens = token_file.tokens  # np.memmap, (n_tokens,) uint16
print(token_file, tokens.dtype)
print("sidecar:", {k: token_file.meta[k] for k in ("dtype", "n_tokens", "n_vocab", "tokenizer")})
# the file holds the whole text's ids: encoded in streamed chunks, the same as one encode call
assert tokens.tolist() == fast_tok.encode(text)

# %% [markdown]
# ## 3. Batches: windows of consecutive tokens
#
# A causal LM batch is `B` windows of `T` tokens, `x[b] = tokens[s_b : s_b + T]`. The model
# predicts `x[b, t + 1]` from `x[b, :t + 1]`, so the same window is input *and* label (the model
# shifts the labels by one inside its loss).
#
# Two samplers:
# - **random**: `B` starts drawn uniformly from `[0, n - T]`;
# - **sequential**: the non-overlapping windows `0, T, 2T, ...`, shuffled once per epoch.
#
# Each batch is a pure function of `(seed, index)`: its random numbers come from
# `np.random.default_rng([seed, index])`. So resuming at step `k` just asks for batch `k`, and
# with `world_size` processes each rank keeps its own rows of the same global batch.

# %%
T, B, seed = 8, 4, 0
batch_ref = ref_data.random_window_batch(tokens, T, B, seed, index=0)  # NumPy (B, T) int64
batch_fast = RandomWindows(tokens, seq_len=T, batch_size=B, seed=seed).batch(0)  # torch (B, T)
print(batch_ref)
for row in batch_ref[:2]:
    print(repr(fast_tok.decode(row.tolist())))

# %% [markdown]
# Input and target, one row: the model sees the tokens on the left and is scored on the next one.

# %%
row = batch_ref[0]
for t in range(4):
    context = fast_tok.decode(row[: t + 1].tolist())
    print(f"{context!r:>40} -> {fast_tok.decode([int(row[t + 1])])!r}")

# %% [markdown]
# **Sharding for data parallelism.** With 2 processes, rank `r` keeps rows `[r*B, (r+1)*B)` of
# the global batch of `2B` rows: together the ranks see exactly the 1-process batch of `2B`.

# %%
one_process = SequentialWindows(tokens, T, 2 * B, seed=seed).batch(5)
rank0 = SequentialWindows(tokens, T, B, seed=seed, rank=0, world_size=2).batch(5)
rank1 = SequentialWindows(tokens, T, B, seed=seed, rank=1, world_size=2).batch(5)
assert torch.equal(torch.cat([rank0, rank1]), one_process)
print("rank 0 + rank 1 == one process:", one_process.shape)

# %% [markdown]
# The random sampler covers the file evenly; the sequential one visits each window once per
# epoch. A histogram of 200 batches' window starts:

# %%
seq = SequentialWindows(tokens, T, B, seed=seed)
print(f"sequential: {seq.n_windows} windows, {seq.batches_per_epoch} batches per epoch")
starts_random = np.concatenate(
    [ref_data.random_window_starts(len(tokens), T, B, seed, i) for i in range(200)]
)
starts_seq = ref_data.epoch_window_order(len(tokens), T, seed, epoch=0)[: 200 * B]
fig, ax = plt.subplots(figsize=(7, 2.5))
ax.hist(starts_random, bins=30, alpha=0.6, label="random: 200 batches")
ax.hist(starts_seq, bins=30, alpha=0.6, label="sequential: first 200 batches of epoch 0")
ax.set_xlabel("window start (token index)")
ax.set_ylabel("count")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## The reference and the fast batches agree
#
# Batches are integer gathers from the same array with the same random numbers, so the only
# acceptable tolerance is **zero**: every id equal, for both samplers, several batch indices
# (crossing an epoch boundary for the sequential one) and both ranks of a 2-process run. The
# tokenizers are compared the same way.

# %%
assert ids_ref == ids_fast, "reference and fast BPE disagree"
n_epoch = SequentialWindows(tokens, T, B, seed=seed).batches_per_epoch
for index in (0, 1, 17, n_epoch - 1, n_epoch):  # the last of epoch 0 and the first of epoch 1
    for rank in (0, 1):
        ref_r = ref_data.random_window_batch(tokens, T, B, seed, index, rank, world_size=2)
        fast_r = RandomWindows(tokens, T, B, seed, rank=rank, world_size=2).batch(index)
        np.testing.assert_array_equal(fast_r.numpy(), ref_r)
        ref_s = ref_data.sequential_window_batch(tokens, T, B, seed, index, rank, world_size=2)
        fast_s = SequentialWindows(tokens, T, B, seed, rank=rank, world_size=2).batch(index)
        np.testing.assert_array_equal(fast_s.numpy(), ref_s)
np.testing.assert_array_equal(batch_fast.numpy(), batch_ref)
print("reference == fast: tokenizer ids, random and sequential batches, both ranks")
