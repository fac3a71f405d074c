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
# # 10 · LLaMA 3 from scratch
#
# LLaMA 3 keeps LLaMA 2's architecture (notebook 09) and changes its settings:
#
# - **grouped-query attention in every size** (8B: 32 query heads share 8 kv heads);
# - **RoPE theta 500,000** instead of 10,000: the slowest rotation turns ~50x more slowly, so
#   positions far apart still get distinct angles (long context);
# - **a large tiktoken-style BPE** (128k tokens, split pattern like cl100k's);
# - the small 3.2 models **tie** the LM head to the embedding table (one `(V, C)` matrix).
#
# We build a tiny version of all of it: our own BPE trained on Shakespeare with the cl100k-style
# split pattern, a 2-layer LLaMA with 4 query heads sharing 1 kv head and theta 500,000, trained a
# few steps tied and untied, and check that the NumPy reference model computes the same logits
# and the same greedy continuation as the fast one.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from myllm101.config import LlamaConfig
from myllm101.data.batches import RandomWindows
from myllm101.fast.bpe import bpe_train
from myllm101.fast.generate import generate as fast_generate
from myllm101.fast.llama import Llama
from myllm101.reference.generate import generate as ref_generate
from myllm101.reference.llama import ReferenceLlama

torch.set_num_threads(1)  # tiny tensors: one thread is faster than handing work to a pool
# the corpus `make data` writes (make test runs it first)
text = open("data/shakespeare/train.txt", encoding="utf-8").read()[:300_000]
val_text = open("data/shakespeare/test.txt", encoding="utf-8").read()[:30_000]

# %% [markdown]
# ## Theta: how fast each RoPE frequency turns
#
# Feature pair `i` of a `D`-wide head turns by `theta^(-2i/D)` radians per position. A larger
# theta stretches the low frequencies: with theta 500,000 the last pair of a 64-wide head needs
# ~2.3 million positions for one turn instead of ~47,000.

# %%
D = 64
fig, ax = plt.subplots(figsize=(5, 3))
for theta in (10_000.0, 500_000.0):
    inv_freq = theta ** (-np.arange(0, D, 2) / D)  # radians per position, as reference/rope.py
    ax.semilogy(2 * np.pi / inv_freq, label=f"theta = {theta:,.0f}")
ax.set_xlabel("feature pair i")
ax.set_ylabel("positions per full turn")
ax.legend()
plt.show()

# %% [markdown]
# ## Our BPE, LLaMA-3 style
#
# [fast/bpe.py](../myllm101/fast/bpe.py) `bpe_train` learns byte-level merges with the default
# GPT-4 (cl100k) split pattern, the family LLaMA 3's tokenizer belongs to. 512 tokens are enough
# for a tiny model (notebook 11 compares it with the NumPy trainer).

# %%
t0 = time.perf_counter()
tok = bpe_train(text, 512, workers=1)
train_ids = np.array(tok.encode(text), dtype=np.int64)
val_ids = np.array(tok.encode(val_text), dtype=np.int64)
print(f"trained a {tok.n_vocab}-token BPE in {time.perf_counter() - t0:.2f} s; "
      f"{len(text):,} chars -> {len(train_ids):,} tokens ({len(text) / len(train_ids):.2f} chars/token)")  # fmt: skip
print([tok.decode([i]) for i in tok.encode("ROMEO: But soft, what light")])

# %% [markdown]
# ## A tiny LLaMA 3, tied and untied, trained a few steps
#
# Fast model ([fast/llama.py](../myllm101/fast/llama.py)), float32, AdamW. The same seed and the
# same batches for both; only `tie_word_embeddings` differs. Sixty steps of 8 x 64 tokens teach
# it which tokens are frequent (the loss falls well below the uniform guess), not yet Shakespeare:
# `configs/llama-shakespeare.json` trains the real thing (`myllm101 train`).


# %%
def llama3_tiny(tied: bool) -> LlamaConfig:
    return LlamaConfig(vocab_size=tok.n_vocab, block_size=64, n_layer=2, n_head=4, n_kv_head=1,
                       n_embd=64, intermediate_size=172, rope_theta=500_000.0,
                       tie_word_embeddings=tied)  # fmt: skip


STEPS, LR = 60, 5e-3
train_batches = RandomWindows(train_ids, seq_len=64, batch_size=8, seed=0)
val_batch = RandomWindows(val_ids, seq_len=64, batch_size=32, seed=1).batch(0)
models, curves = {}, {}
for tied in (True, False):
    torch.manual_seed(0)
    model = Llama(llama3_tiny(tied))
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1)
    losses = []
    for step in range(STEPS):
        ids = train_batches.batch(step)
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        val = model(val_batch, labels=val_batch).loss.item()
    name = "tied" if tied else "untied"
    models[name], curves[name] = model, losses
    n = sum(p.numel() for p in model.parameters())  # a tied matrix is one Parameter: counted once
    print(f"{name:7s} parameters {n:>7,}  train loss {losses[0]:.2f} -> {losses[-1]:.2f}  "
          f"val loss {val:.2f}  (uniform: {np.log(tok.n_vocab):.2f})")  # fmt: skip

fig, ax = plt.subplots(figsize=(5, 3))
for name, losses in curves.items():
    ax.plot(losses, label=name)
ax.set_xlabel("step")
ax.set_ylabel("training loss")
ax.legend()
plt.show()

# %% [markdown]
# ## The NumPy reference runs the trained weights
#
# [reference/llama.py](../myllm101/reference/llama.py) reads the fast model's `state_dict` by name.
# In float64 both compute the same logits; greedy decoding then picks the same tokens, the fast
# side with a KV cache ([fast/generate.py](../myllm101/fast/generate.py)), the reference by
# re-running the whole sequence every step ([reference/generate.py](../myllm101/reference/generate.py)).

# %%
prompt = tok.encode("ROMEO:")
results = {}
for name, model in models.items():
    fast64 = model.double()
    state = {k: v.detach().numpy().copy() for k, v in fast64.state_dict().items()}
    ref = ReferenceLlama(fast64.cfg, params=state)
    ids = val_batch[:4, :48].numpy()
    logits_ref, _, _ = ref.forward(ids)
    with torch.no_grad():
        logits_fast = fast64(torch.from_numpy(ids)).logits.numpy()
    gen_ref = ref_generate(ref, prompt, max_new_tokens=24, temperature=0.0)
    gen_fast = fast_generate(fast64, prompt, max_new_tokens=24, temperature=0.0)
    results[name] = (logits_ref, logits_fast, gen_ref, gen_fast)
    print(f"{name:7s} max |logits reference - fast| = {np.abs(logits_ref - logits_fast).max():.1e}")
    print(f"        reference: {tok.decode(gen_ref)!r}")
    print(f"        fast:      {tok.decode(gen_fast)!r}")

# %% [markdown]
# ## The two agree
#
# For the tied and the untied model: logits within rtol 1e-10 (float64; the same ops summed in
# another order, ~1e-15 relative), and identical greedy tokens (a tie between two logits closer
# than that would be needed to flip an argmax).

# %%
for name, (logits_ref, logits_fast, gen_ref, gen_fast) in results.items():
    np.testing.assert_allclose(logits_fast, logits_ref, rtol=1e-10, atol=1e-12, err_msg=name)
    assert gen_ref == gen_fast, (name, gen_ref, gen_fast)
assert curves["tied"][-1] < curves["tied"][0] and curves["untied"][-1] < curves["untied"][0]
print("reference == fast for the tied and the untied LLaMA 3")
