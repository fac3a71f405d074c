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
# # 11 · Tokenization: byte-level BPE
#
# A model reads integers. Byte-level BPE (GPT-2, GPT-4, LLaMA 3) starts from the 256 bytes and
# repeats one step: **count every adjacent pair of tokens in the training text, merge the most
# frequent pair into a new token**. After `V - 256` merges the vocabulary has `V` tokens. Text is
# first split into pieces by a regex (words, numbers, punctuation, spaces), and merges never cross
# a piece boundary. Encoding a new text applies the learned merges in the order they were learned
# (lowest rank first) inside each piece.
#
# The pure-Python reference [reference/bpe.py](../myllm101/reference/bpe.py) does exactly that,
# recounting every pair after every merge. The fast trainer [fast/bpe.py](../myllm101/fast/bpe.py)
# counts unique pieces once, updates only the pair counts a merge touches, and finds the best
# pair with a heap. Both break ties the same way (highest count, then smallest
# `(bytes_a, bytes_b)`), so they must learn the *same* merges.

# %%
import time

import matplotlib.pyplot as plt

from myllm101.fast import bpe as fast_bpe
from myllm101.reference import bpe as ref_bpe
from myllm101.tokenizer import load_pretrained

# the corpus `make data` writes (make test runs it first)
text = open("data/shakespeare/train.txt", encoding="utf-8").read()
small, held_out = text[:20_000], open("data/shakespeare/test.txt", encoding="utf-8").read()[:20_000]

# %% [markdown]
# ## The two smallest helpers
#
# `get_stats` counts pairs (each piece weighted by how often it occurs), `merge` replaces one pair.

# %%
words = {(b"a", b"b", b"a", b"b"): 1, (b"a", b"b"): 2}
print(ref_bpe.get_stats(words))
print(ref_bpe.merge((b"a", b"a", b"a", b"b"), (b"a", b"a")))

# %% [markdown]
# ## Train both on the same text

# %%
VOCAB = 400
t0 = time.perf_counter()
slow = ref_bpe.bpe_train(small, VOCAB)
t1 = time.perf_counter()
fast = fast_bpe.bpe_train(small, VOCAB, workers=1)
t2 = time.perf_counter()
print(f"reference: {t1 - t0:.2f} s, fast: {t2 - t1:.3f} s for {VOCAB - 256} merges "
      f"of {len(small):,} characters")  # fmt: skip

# the first merges, in the order learned: rank -> token bytes
learned = sorted((rank, tok) for tok, rank in fast.mergeable_ranks.items() if rank >= 256)
print("first merges:", [tok for _, tok in learned[:12]])
print("last merges: ", [tok for _, tok in learned[-6:]])

# %% [markdown]
# ## Encode, decode, round trip
#
# Both encoders give the same ids on text neither trainer saw; decoding gives the text back
# exactly, also for characters that were never merged (they stay as their UTF-8 bytes).

# %%
sample = "ROMEO: But soft, what light through yonder window breaks? naïve café, 日本語 🎭"
ids_slow, ids_fast = slow.encode(sample), fast.encode(sample)
print(len(sample), "characters ->", len(ids_fast), "tokens")
print([fast.decode_bytes([i]) for i in ids_fast[:14]])
print(fast.decode(ids_fast))
held_slow, held_fast = slow.encode(held_out), fast.encode(held_out)
print(f"held-out text: {len(held_out):,} chars -> {len(held_fast):,} tokens")

# %% [markdown]
# ## Bigger vocabulary, shorter sequences
#
# Each merge makes a common sequence one token. Compression (characters per token on held-out
# text) grows quickly at first, then slowly: the late merges are rare words. The fast trainer makes
# this curve in a couple of seconds.

# %%
sizes, ratios = [300, 512, 1024, 2048], []
for v in sizes:
    tok = fast_bpe.bpe_train(text[:300_000], v, workers=1)
    ratios.append(len(held_out) / len(tok.encode(held_out)))
    print(f"vocab {v:5d}: {ratios[-1]:.2f} characters per token")
fig, ax = plt.subplots(figsize=(4.5, 3))
ax.plot(sizes, ratios, "o-")
ax.set_xscale("log", base=2)
ax.set_xlabel("vocabulary size")
ax.set_ylabel("held-out chars / token")
plt.show()

# %% [markdown]
# ## GPT-2's own vocabulary through our code
#
# GPT-2's 50,257 tokens are its rank file: bytes -> id, the merges in order. `load_pretrained`
# reads it from an installed package (never the network) into either implementation; both encode
# with those ranks. (The parity tests also check these ids against tiktoken's; here we compare our
# two implementations with each other.)

# %%
gpt2_fast = load_pretrained("gpt2")
gpt2_slow = load_pretrained("gpt2", impl="reference")
passage = held_out[:3000]
g_fast, g_slow = gpt2_fast.encode(passage), gpt2_slow.encode(passage)
print(f"GPT-2: {len(passage):,} chars -> {len(g_fast):,} tokens "
      f"({len(passage) / len(g_fast):.2f} chars/token)")  # fmt: skip
print(gpt2_fast.encode("Hello world<|endoftext|>", allowed_special="all"))
print([gpt2_fast.decode([i]) for i in gpt2_fast.encode("To be, or not to be")])

# %% [markdown]
# ## The two agree
#
# Exact equality, no tolerance: token ids are integers. Same merges (every token bytes -> rank),
# same ids on the sample and on held-out text, an exact round trip, and the same GPT-2 ids.

# %%
assert slow.mergeable_ranks == fast.mergeable_ranks
assert ids_slow == ids_fast and held_slow == held_fast
assert fast.decode(ids_fast) == sample and slow.decode(ids_slow) == sample
assert fast.decode(held_fast) == held_out
assert g_slow == g_fast and gpt2_fast.decode(g_fast) == passage
print(f"reference == fast: {VOCAB - 256} merges, {len(held_fast):,} + {len(g_fast):,} ids")
