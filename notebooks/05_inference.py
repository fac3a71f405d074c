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
# # 05 · Inference: generating text, with and without a KV cache
#
# A causal LM generates one token at a time: run the model on the sequence so far, read the
# logits of the last position, choose a token, append it, repeat.
#
# **Without a cache** (the reference, `myllm101/reference/generate.py`) every step re-runs the
# whole sequence: step $t$ costs a forward over $t$ tokens, $O(T^2)$ attention work in total per
# step. **With a KV cache** (`myllm101/fast/generate.py`) each layer keeps the keys and values of
# the tokens it has already seen; a step feeds only the newest token, whose query attends to the
# cached keys (the bottom-right causal mask of notebook 02). Nothing about the result changes:
# the logits of the last position are the same numbers, so greedy decoding gives the same tokens.
#
# Then the **choice** of the next token: temperature (0 = greedy argmax), top-k, top-p (nucleus)
# and a seeded draw. Both trees implement the same filters.

# %%
import os
import time
from pathlib import Path

if Path.cwd().name == "notebooks":  # opened from notebooks/ in Jupyter: work from the repo root
    os.chdir("..")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny NumPy matrices: a 2nd thread only waits

import matplotlib.pyplot as plt
import numpy as np
import torch

from myllm101.api import AutoModelForCausalLM
from myllm101.config import GPTConfig
from myllm101.fast import generate as fast_gen
from myllm101.reference import generate as ref_gen
from myllm101.reference.gpt import ReferenceGPT

torch.set_num_threads(1)  # a tiny model: one thread is fastest and leaves the other core free
_ = torch.manual_seed(0)

# %% [markdown]
# ## A small character-level model, trained for a few seconds
#
# Generation from an untrained model is noise; 120 AdamW steps on Macbeth's characters are
# enough to make it produce word-like strings (notebook 04 covers training).

# %%
text = Path("data/shakespeare/test.txt").read_text()[:60_000]
chars = sorted(set(text))
stoi = {c: i for i, c in enumerate(chars)}
data = torch.tensor([stoi[c] for c in text])
encode = lambda s: [stoi[c] for c in s]  # noqa: E731
decode = lambda ids: "".join(chars[i] for i in ids)  # noqa: E731

cfg = GPTConfig(vocab_size=len(chars), block_size=128, n_layer=2, n_head=4, n_embd=64)
model = AutoModelForCausalLM.from_config(cfg, seed=0).train()
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
for _ in range(120):
    starts = torch.randint(0, len(data) - 48, (16,))
    batch = torch.stack([data[s : s + 48] for s in starts])  # (16, 48)
    loss = model(batch, labels=batch).loss
    opt.zero_grad()
    loss.backward()
    opt.step()
model.eval()
print(f"final training loss {loss.item():.3f} (uniform guess: {np.log(len(chars)):.3f})")

# %% [markdown]
# ## Greedy decoding: reference (no cache) vs fast (KV cache)
#
# For the comparison both models run in float64 with the same weights, so the only differences
# are rounding. We also ask the fast generator for `use_cache=False` (re-running the whole
# sequence, like the reference) to see the cache is the only thing that changes.

# %%
model64 = AutoModelForCausalLM.from_config(cfg).double().eval()
model64.load_state_dict(model.state_dict())
reference = ReferenceGPT(cfg, {k: v.numpy().copy() for k, v in model64.state_dict().items()})

prompt = encode("MACBETH.\n")
new = 60
greedy_ref = ref_gen.generate(reference, prompt, new, temperature=0.0)
greedy_cache = fast_gen.generate(model64, prompt, new, temperature=0.0)
greedy_nocache = fast_gen.generate(model64, prompt, new, temperature=0.0, use_cache=False)
print(repr(decode(greedy_cache)))
print("same tokens:", greedy_ref == greedy_cache == greedy_nocache)

# %% [markdown]
# The tokens agreeing is the visible part; underneath, every step's logits should agree. The
# fast loop exposes them (`generation_steps` yields each step's logits); the reference gets the
# same numbers by running the full prefix.

# %%
steps = list(fast_gen.generation_steps(model64, prompt, 20, temperature=0.0))
seq = list(prompt)
step_logits_fast, step_logits_ref = [], []
for s in steps:
    logits_ref, _, _ = reference.forward(np.array([seq]))  # (1, T, V): the whole prefix again
    step_logits_ref.append(logits_ref[0, -1])
    step_logits_fast.append(s.logits[0].numpy())
    seq.append(int(s.tokens[0]))
step_logits_ref, step_logits_fast = np.array(step_logits_ref), np.array(step_logits_fast)
print("max |logits diff| over 20 steps:", np.abs(step_logits_ref - step_logits_fast).max())

# %% [markdown]
# ## Sampling settings
#
# With temperature $\tau$, the next token is drawn from $\text{softmax}(z / \tau)$: $\tau \to 0$
# is greedy, $\tau > 1$ flattens the distribution. **top-k** keeps the $k$ largest logits,
# **top-p** the smallest set of most likely tokens whose probability reaches $p$. Below: the
# next-token distribution after the prompt under a few settings (the reference filters; the fast
# ones are checked against them at the end), and a sample with each.


# %%
def processed_probs(logits, temperature, top_k=None, top_p=None):
    z = logits / temperature
    if top_k is not None:
        z = ref_gen.top_k_filter(z, top_k)
    if top_p is not None:
        z = ref_gen.top_p_filter(z, top_p)
    return ref_gen.softmax(z)


settings = {"T=1": dict(temperature=1.0), "T=0.5": dict(temperature=0.5),
            "T=1, top-k 5": dict(temperature=1.0, top_k=5),
            "T=1, top-p 0.8": dict(temperature=1.0, top_p=0.8)}  # fmt: skip
last = step_logits_ref[0]  # the logits right after the prompt
fig, ax = plt.subplots(figsize=(9, 3))
order = np.argsort(-last)[:15]
width = 0.8 / len(settings)
for j, (name, kw) in enumerate(settings.items()):
    p = processed_probs(last, **kw)
    ax.bar(np.arange(15) + j * width, p[order], width, label=name)
ax.set_xticks(np.arange(15) + 0.3, [repr(chars[i])[1:-1] for i in order])
ax.set_ylabel("probability")
ax.set_title("next character after 'MACBETH.\\n'", fontsize=9)
ax.legend(fontsize=8)
plt.show()

for name, kw in settings.items():
    ids = fast_gen.generate(model, prompt, 40, seed=0, **kw)
    print(f"{name:<15} {decode(ids[len(prompt) :])!r}")

# %% [markdown]
# ## Tokens per second
#
# The float32 model, one prompt, `n` new tokens, timed once (a rough picture on this machine,
# not a benchmark: `benchmarks/test_decode.py` measures properly). Without a cache the cost per
# token grows with the length; with one it stays nearly flat. At this toy size Python overhead
# per step dominates, so the gap is small; it grows with the context and the model's width.

# %%
reference32 = ReferenceGPT(cfg, {k: v.numpy().copy() for k, v in model.state_dict().items()})
runners = {
    "reference (NumPy, no cache)": lambda n: ref_gen.generate(reference32, prompt, n, 0.0),
    "fast, no cache": lambda n: fast_gen.generate(model, prompt, n, 0.0, use_cache=False),
    "fast, KV cache": lambda n: fast_gen.generate(model, prompt, n, 0.0),
}
rows = []
for n in (16, 64, 112):
    timings = {}
    for name, run in runners.items():
        t0 = time.perf_counter()
        run(n)
        timings[name] = n / (time.perf_counter() - t0)
    rows.append((n, timings))
print(f"{'new tokens':>10} " + " ".join(f"{name:>28}" for name in rows[0][1]))
for n, timings in rows:
    print(f"{n:>10} " + " ".join(f"{tps:>22,.0f} tok/s" for tps in timings.values()))

# %% [markdown]
# ## The reference and the fast generation agree
#
# - Greedy tokens: equal (an exact check; both pick the argmax of logits that agree to
#   $\sim 10^{-15}$, far below the gap between the best two logits).
# - Each step's logits, cached fast vs full-recompute reference, both float64: `rtol=1e-9,
#   atol=1e-11`; they differ only in summation order (a few hundred roundings of
#   $u \approx 1.1 \cdot 10^{-16}$), while reading a wrong cache slot changes them by $O(1)$.
# - The filters: top-k / top-p of both trees keep the same tokens (compared as the positions left
#   finite) and leave the kept logits exactly as they were.

# %%
assert greedy_cache == greedy_ref, "KV-cache greedy tokens differ from the reference"
assert greedy_nocache == greedy_ref
np.testing.assert_allclose(step_logits_fast, step_logits_ref, rtol=1e-9, atol=1e-11)
logits_t = torch.from_numpy(step_logits_ref)  # (20, V): one row per step
for k in (1, 5, 20):
    fast_kept = fast_gen.top_k_filter(logits_t, k).numpy()
    ref_kept = np.array([ref_gen.top_k_filter(row, k) for row in step_logits_ref])
    np.testing.assert_array_equal(fast_kept, ref_kept)
for p in (0.5, 0.8, 0.95):
    fast_kept = fast_gen.top_p_filter(logits_t, p).numpy()
    ref_kept = np.array([ref_gen.top_p_filter(row, p) for row in step_logits_ref])
    np.testing.assert_array_equal(np.isfinite(fast_kept), np.isfinite(ref_kept))
    np.testing.assert_array_equal(
        fast_kept[np.isfinite(fast_kept)], ref_kept[np.isfinite(ref_kept)]
    )
print("reference == fast: greedy tokens, every step's logits, top-k and top-p")
