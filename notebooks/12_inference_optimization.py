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
# # 12 · Inference optimization: quantization and pruning
#
# Decoding one token reads every weight once, so a model that is smaller in bytes is faster to
# run. Two ways to shrink it:
#
# **Quantization** stores each weight in fewer bits. Symmetric int8, one scale per output row:
#
# $$s_o = \frac{\max_k |W_{ok}|}{127}, \qquad q_{ok} = \mathrm{round}(W_{ok} / s_o) \in [-127, 127],
# \qquad W_{ok} \approx q_{ok}\, s_o$$
#
# so each weight moves by at most `s_o / 2`. With activations quantized too (per token, "W8A8"),
# the matmul itself runs on integers: `y = (q_x q_w^T) s_x s_w`, the int32 sum exact.
#
# **Pruning** sets weights to zero. Which ones is decided by a score: magnitude `|W_ij|`, or
# Wanda's `|W_ij| * ||X_j||_2` (Sun et al., 2023), which also asks how large input feature `j`
# is on real data.
#
# References: [reference/int8.py](../myllm101/reference/int8.py),
# [reference/prune.py](../myllm101/reference/prune.py); fast twins:
# [fast/int8.py](../myllm101/fast/int8.py), [fast/prune.py](../myllm101/fast/prune.py); whole
# models: [quant/quantize.py](../myllm101/quant/quantize.py), [prune/](../myllm101/prune/).

# %%
import copy

import matplotlib.pyplot as plt
import numpy as np
import torch

from myllm101.config import LlamaConfig
from myllm101.fast import int8 as F_int8
from myllm101.fast import prune as F_prune
from myllm101.fast.llama import Llama
from myllm101.quant.quantize import quantize, quantized_bytes
from myllm101.reference import int8 as R_int8
from myllm101.reference import prune as R_prune

torch.set_num_threads(1)  # tiny tensors: one thread is faster than handing work to a pool
rng = np.random.default_rng(0)

# %% [markdown]
# ## int8 weights: reference vs fast
#
# Same float32 weight, both quantizers: the int8 codes must be identical and the scales equal.

# %%
W = rng.standard_normal((48, 96)).astype(np.float32)
W[:, 5] *= 8  # one large input column: a row's scale follows its largest entry
q_ref, s_ref = R_int8.quantize_per_channel(W)
q_fast, s_fast = F_int8.quantize_per_channel(torch.from_numpy(W))
W_hat = R_int8.dequantize(q_ref, s_ref)
err = np.abs(W - W_hat)
print("codes equal:", np.array_equal(q_ref, q_fast.numpy()), "| dtype", q_fast.dtype)
print(f"max |W - dequantized| / (scale / 2) = {(err / (s_ref[:, None] / 2)).max():.4f}  (<= 1)")

# %% [markdown]
# ## The int8 matmul is exact
#
# `int8 x int8` products summed in int32 are exact integers, so reference and fast must agree
# *bitwise*. The fast code uses `torch._int_mm` where the CPU has int8 dot products (VNNI, AMX)
# and otherwise float32 GEMMs over chunks of 1024 (every partial sum is an integer below 2^24,
# which float32 holds exactly). We run both fast routes.

# %%
X = rng.standard_normal((16, 96)).astype(np.float32)
qx, sx = R_int8.quantize_per_token(X)
acc_ref = R_int8.int8_matmul(qx, q_ref)  # (16, 48) int32
acc_auto = F_int8.int8_matmul(torch.from_numpy(qx), q_fast)
acc_chunks = F_int8.int8_matmul_fp32_exact(torch.from_numpy(qx), q_fast)
print("int32 sums: reference == fast (auto backend):", np.array_equal(acc_ref, acc_auto.numpy()))
print("int32 sums: reference == fast (fp32 chunks): ", np.array_equal(acc_ref, acc_chunks.numpy()))

y_float = X @ W.T
y_ref = R_int8.w8a8_linear_forward(X, q_ref, s_ref)
y_fast = F_int8.w8a8_linear(torch.from_numpy(X), q_fast, s_fast).numpy()
rel = np.abs(y_ref - y_float).max() / np.abs(y_float).max()
print(f"W8A8 vs float32 output: max error {rel:.2%} of the largest output")
print(f"W8A8 reference vs fast: max difference {np.abs(y_ref - y_fast).max():.1e}")

# %% [markdown]
# ## A whole model: size and error per scheme
#
# `quantize(model, scheme)` replaces every `Linear` (except the LM head) with its quantized twin.
# A tiny random LLaMA, float32 logits vs each scheme's:

# %%
cfg = LlamaConfig(vocab_size=256, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
                  intermediate_size=192)  # fmt: skip
torch.manual_seed(0)
base = Llama(cfg).eval()
ids = torch.randint(0, cfg.vocab_size, (4, 32))
with torch.no_grad():
    ref_logits = base(ids).logits
print(f"{'scheme':10s} {'linear bytes':>12s} {'vs float32':>10s} {'max |logit error|':>18s}")
for scheme in ("int8", "w8a8", "int4-g32"):
    q_model = quantize(copy.deepcopy(base), scheme)
    size = quantized_bytes(q_model)
    with torch.no_grad():
        logit_err = (q_model(ids).logits - ref_logits).abs().max().item()
    print(f"{scheme:10s} {size['quantized']:>12,} {size['quantized'] / size['float']:>9.2f}x "
          f"{logit_err:>18.2e}")  # fmt: skip
print(f"{'float32':10s} {size['float']:>12,} {1:>9.2f}x {0:>18.2e}")

# %% [markdown]
# ## Pruning masks: magnitude and Wanda, reference vs fast
#
# A layer whose inputs have a few outlier features (as LLMs do). Wanda compares the weights of one
# output row with each other (`per_row=True`); magnitude here ranks the whole matrix. 2:4 keeps
# the 2 largest of every 4 consecutive inputs (the pattern sparse tensor cores run). Masks are
# booleans: reference and fast must be identical.

# %%
W = rng.standard_normal((64, 128))
Xc = rng.standard_normal((256, 128))  # calibration inputs: 256 tokens
Xc[:, :4] *= 20  # four outlier features
norms_ref = R_prune.input_norms(Xc)
norms_fast = F_prune.input_norms(torch.from_numpy(Xc))
scores = {
    "magnitude": (R_prune.magnitude_scores(W), F_prune.magnitude_scores(torch.from_numpy(W))),
    "wanda": (R_prune.wanda_scores(W, norms_ref), F_prune.wanda_scores(torch.from_numpy(W), norms_fast)),
}  # fmt: skip
masks = {}
for sparsity in (0.25, 0.5, 0.75):
    for name, (s_r, s_f) in scores.items():
        per_row = name == "wanda"
        masks[name, sparsity] = (
            R_prune.unstructured_mask(s_r, sparsity, per_row=per_row),
            F_prune.unstructured_mask(s_f, sparsity, per_row=per_row).numpy(),
        )
masks["wanda", "2:4"] = (R_prune.nm_mask(scores["wanda"][0], 2, 4),
                         F_prune.nm_mask(scores["wanda"][1], 2, 4).numpy())  # fmt: skip
for key, (m_r, m_f) in masks.items():
    print(
        f"{key[0]:9s} {key[1]!s:5s} kept {m_r.mean():.2f}  reference == fast: {np.array_equal(m_r, m_f)}"
    )

# %% [markdown]
# What the score buys: the output error `||X W^T - X (W * mask)^T||` on the calibration inputs.
# Magnitude prunes small weights on the outlier features, whose effect is 20x larger; Wanda keeps
# them.

# %%
y_full = Xc @ W.T
fig, ax = plt.subplots(figsize=(4.5, 3))
for name in ("magnitude", "wanda"):
    errs = [np.linalg.norm(Xc @ (W * masks[name, s][0]).T - y_full) / np.linalg.norm(y_full)
            for s in (0.25, 0.5, 0.75)]  # fmt: skip
    ax.plot([0.25, 0.5, 0.75], errs, "o-", label=name)
    print(f"{name:9s} relative output error at 25/50/75% sparsity:", np.round(errs, 3))
ax.set_xlabel("sparsity")
ax.set_ylabel("relative output error")
ax.legend()
plt.show()

# %% [markdown]
# ## The two agree
#
# Integers and booleans compare exactly: int8 codes, the int32 matmul (both fast backends), every
# pruning mask. Scales and the W8A8 output are float32 computed by the same formula in the same
# order: rtol 1e-6 (a few float32 roundings, ~6e-8 each).

# %%
assert np.array_equal(q_ref, q_fast.numpy())
np.testing.assert_allclose(s_fast.numpy(), s_ref, rtol=1e-6)
assert np.array_equal(acc_ref, acc_auto.numpy()) and np.array_equal(acc_ref, acc_chunks.numpy())
np.testing.assert_allclose(y_fast, y_ref, rtol=1e-6, atol=1e-6 * np.abs(y_ref).max())
for key, (m_r, m_f) in masks.items():
    assert np.array_equal(m_r, m_f), key
np.testing.assert_allclose(norms_fast.numpy(), norms_ref, rtol=1e-12)
print("reference == fast: int8 codes, int32 sums, W8A8 outputs and", len(masks), "pruning masks")
