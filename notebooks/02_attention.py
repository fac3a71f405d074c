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
# # 02 · Attention: causal, padded and grouped-query
#
# Attention lets each position read from the others. With queries `q` (B, H, T, D), keys and
# values `k, v` (B, Hkv, S, D):
#
# $$\text{scores} = \frac{q k^\top}{\sqrt{D}}, \qquad p = \text{softmax}(\text{scores} +
# \text{mask}), \qquad \text{out} = p\, v$$
#
# The mask sets forbidden scores to $-\infty$ (so $p = 0$ there):
# - **causal**: query $t$ sees keys $s \le t$ (with $S > T$ keys, as during generation with a
#   KV cache, the queries are the *last* $T$ positions: key $s$ is visible when $s \le S - T + t$);
# - **padding**: `key_padding_mask` (B, S) marks real tokens; padded keys are never read;
# - a row with no visible key at all outputs zeros (not the NaN of $0/0$).
#
# **Grouped-query attention (GQA)**: $H$ query heads share $H_{kv} < H$ key/value heads, query head
# $h$ reading kv head $h // (H / H_{kv})$: a smaller KV cache for the same number of query heads.
#
# The reference (`myllm101/reference/attention.py`) spells this out in NumPy with a hand-written
# backward; the fast version (`myllm101/fast/attention.py`) calls PyTorch's fused
# `F.scaled_dot_product_attention`. Both are run here on the same inputs.

# %%
import os
from pathlib import Path

if Path.cwd().name == "notebooks":  # opened from notebooks/ in Jupyter: work from the repo root
    os.chdir("..")

import matplotlib.pyplot as plt
import numpy as np
import torch

from myllm101.fast import attention as fast
from myllm101.reference import attention as ref

rng = np.random.default_rng(0)

# %% [markdown]
# ## The mask, drawn
#
# `attention_mask(T, S, causal, key_padding_mask)` is the boolean picture of what each query may
# read. Below: 6 queries over 8 keys (the KV-cache case, bottom-right aligned) and a row whose
# first two keys are left padding.

# %%
pad = np.array([[False, False, True, True, True, True, True, True]])  # (B=1, S=8)
specs = {  # title: (T, S, key_padding_mask)
    "causal, T = S = 8": (8, 8, None),
    "causal, T = 6 < S = 8": (6, 8, None),
    "causal + left padding": (8, 8, pad),
}
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for ax, (title, (T, S, kpm)) in zip(axes, specs.items()):
    m = ref.attention_mask(T, S, True, kpm)[0, 0]  # (T, S) bool
    kpm_t = None if kpm is None else torch.from_numpy(kpm)
    assert np.array_equal(fast.attention_mask(T, S, True, kpm_t)[0, 0].numpy(), m)  # same mask
    ax.imshow(m, cmap="Greens", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("key s")
    ax.set_ylabel("query t")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Reference next to fast, case by case
#
# The reference works in float64 NumPy; the fast path gets the same numbers as float64 torch
# tensors, so any difference is rounding (summation order), never a different formula. We also
# compare gradients: the reference's hand-written backward against torch's autograd.


# %%
def run_both(B, H, Hkv, T, S, D, causal, key_padding_mask=None):
    q = rng.standard_normal((B, H, T, D))
    k, v = rng.standard_normal((2, B, Hkv, S, D))
    dout = rng.standard_normal((B, H, T, D))
    out_ref, cache = ref.scaled_dot_product_attention_forward(q, k, v, causal, key_padding_mask)
    grads_ref = ref.scaled_dot_product_attention_backward(dout, cache)

    qt, kt, vt = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    mask_t = None if key_padding_mask is None else torch.from_numpy(key_padding_mask)
    out_fast = fast.scaled_dot_product_attention(qt, kt, vt, causal, mask_t)
    grads_fast = torch.autograd.grad(out_fast, (qt, kt, vt), torch.from_numpy(dout))
    return dict(
        out=(out_ref, out_fast.detach().numpy()),
        dq=(grads_ref[0], grads_fast[0].numpy()),
        dk=(grads_ref[1], grads_fast[1].numpy()),
        dv=(grads_ref[2], grads_fast[2].numpy()),
        p=cache[3],  # the reference's attention weights (B, Hkv, G, T, S)
    )


padding = np.arange(12)[None, :] >= np.array([[0], [3], [12]])  # row 2: all padding (dead row)
cases = {
    "causal (T = S)": run_both(2, 4, 4, 12, 12, 16, causal=True),
    "causal, KV cache (T < S)": run_both(2, 4, 4, 5, 12, 16, causal=True),
    "causal + left padding": run_both(3, 4, 4, 12, 12, 16, True, padding),
    "GQA: 4 query heads, 2 kv": run_both(2, 4, 2, 12, 12, 16, causal=True),
    "multi-query: 4 heads, 1 kv": run_both(2, 4, 1, 12, 12, 16, causal=True),
    "no mask (an encoder)": run_both(2, 4, 4, 12, 12, 16, causal=False),
}

print(f"{'case':<28} " + " ".join(f"{'max |diff| ' + n:>16}" for n in ("out", "dq", "dk", "dv")))
for name, res in cases.items():
    diffs = [np.abs(res[n][0] - res[n][1]).max() for n in ("out", "dq", "dk", "dv")]
    print(f"{name:<28} " + " ".join(f"{d:>16.2e}" for d in diffs))

# %% [markdown]
# The fully padded row (batch row 2 in the padding case) has no key to read: both versions give
# zeros there, and zero gradients flow back through it.

# %%
res = cases["causal + left padding"]
print("dead row output, max |value|:", np.abs(res["out"][1][2]).max())

# %% [markdown]
# ## What a head looks at
#
# The attention weights `p` of one query head, causal with left padding (batch row 1: its first
# three keys are padding). Each row sums to 1 over the keys it may see, and is 0 elsewhere.

# %%
p = cases["causal + left padding"]["p"]  # (B, Hkv, G, T, S)
fig, axes = plt.subplots(1, 2, figsize=(8, 3.5), layout="constrained")
for ax, head in zip(axes, (0, 3)):
    im = ax.imshow(p[1, head, 0], cmap="viridis")
    ax.set_title(f"batch row 1, head {head}", fontsize=9)
    ax.set_xlabel("key s")
    ax.set_ylabel("query t")
fig.colorbar(im, ax=axes, shrink=0.8)
plt.show()
np.testing.assert_allclose(p[1, :, :, 3:].sum(-1), 1.0, rtol=1e-12)  # live rows sum to 1

# %% [markdown]
# ## The whole attention block
#
# `mha_forward` (reference) and `MultiHeadAttention` (fast) wrap the kernel with the four
# projections `q_proj, k_proj, v_proj, o_proj`. Their parameters have the same names, so the
# fast module's `state_dict` *is* the reference's `params`.

# %%
C, H, Hkv = 32, 4, 2
block = fast.MultiHeadAttention(C, H, Hkv, bias=True).double()
params = {k: v.detach().numpy() for k, v in block.state_dict().items()}
print({k: tuple(v.shape) for k, v in params.items()})
x = rng.standard_normal((2, 10, C))
y_ref, _ = ref.mha_forward(x, params, H, Hkv, causal=True)
with torch.no_grad():
    y_fast = block(torch.from_numpy(x)).numpy()
print("block max |diff|:", np.abs(y_ref - y_fast).max())

# %% [markdown]
# ## The reference and the fast attention agree
#
# Tolerance: float64 has unit roundoff $u \approx 1.1 \cdot 10^{-16}$; a softmax over $S = 12$
# keys and a $D = 16$ dot product accumulate a few dozen roundings, so differences of
# $\sim 10^{-15}$ are expected (the table above). `rtol=1e-10, atol=1e-12` leaves a wide margin
# while any real mistake (a wrong mask, a wrong GQA head mapping) is off by order one.

# %%
for name, res in cases.items():
    for key in ("out", "dq", "dk", "dv"):
        np.testing.assert_allclose(res[key][1], res[key][0], rtol=1e-10, atol=1e-12,
                                   err_msg=f"{name}: {key}")  # fmt: skip
np.testing.assert_allclose(y_fast, y_ref, rtol=1e-10, atol=1e-12, err_msg="attention block")
print("reference == fast: outputs and gradients in every case, and the attention block")
