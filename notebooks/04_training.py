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
# # 04 · Training: one loop in NumPy, one in PyTorch, the same losses
#
# A training step, in both trees:
#
# 1. draw batch `k` (notebook 01: a pure function of `(seed, k)`);
# 2. forward to the loss, backward to the gradients (notebook 03);
# 3. clip the gradients' global L2 norm to `grad_clip`;
# 4. set the learning rate from the schedule: linear warm-up, then cosine decay to `min_lr`;
# 5. AdamW: $m \leftarrow \beta_1 m + (1-\beta_1) g$, $v \leftarrow \beta_2 v + (1-\beta_2) g^2$,
#    $p \leftarrow p - \eta\,\lambda\, p - \eta\, \hat m / (\sqrt{\hat v} + \epsilon)$, with weight
#    decay $\lambda$ only on matrices (not on biases and norm scales).
#
# `reference/train.py: train_gpt` writes these steps out in NumPy around `ReferenceGPT` and its
# hand-written backward; `train/trainer.py: Trainer` is the real trainer (`myllm101 train`):
# PyTorch, autograd, checkpoints, metrics. Started from the same weights on the same tokens,
# their loss curves must lie on top of each other.

# %%
import os
import tempfile
import warnings
from pathlib import Path

if Path.cwd().name == "notebooks":  # opened from notebooks/ in Jupyter: work from the repo root
    os.chdir("..")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny NumPy matrices: a 2nd thread only waits

import matplotlib.pyplot as plt
import numpy as np
import torch

from myllm101.reference.gpt import ReferenceGPT
from myllm101.reference.train import TrainSettings, lr_at, train_gpt
from myllm101.train import TrainConfig, Trainer

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
torch.set_num_threads(1)  # tiny matrices: one thread is fastest and leaves the other core free

# %% [markdown]
# ## The data: characters of Macbeth
#
# To keep the model tiny we tokenize by character: each distinct character of the first 40,000
# characters of `data/shakespeare/test.txt` gets an id.

# %%
text = Path("data/shakespeare/test.txt").read_text()[:40_000]
chars = sorted(set(text))
stoi = {c: i for i, c in enumerate(chars)}
tokens = np.array([stoi[c] for c in text], dtype=np.int64)
print(f"{len(tokens)} tokens, vocabulary of {len(chars)} characters: {''.join(chars)!r}")

# %% [markdown]
# ## The same run, twice
#
# A GPT with 2 layers, 4 heads and 48 channels; batches of 8 windows of 32 characters, 2
# micro-batches per step (gradient accumulation, notebook 06), 30 steps. The fast trainer
# builds and initializes the model; the reference starts from a float64 copy of those weights.

# %%
steps, seq_len, batch_size, accum, seed = 30, 32, 8, 2, 0
hyper = dict(lr=3e-3, min_lr=3e-4, warmup_steps=5, weight_decay=0.1, grad_clip=1.0)
model = {"model_type": "gpt", "vocab_size": len(chars), "block_size": seq_len, "n_layer": 2,
         "n_head": 4, "n_embd": 48}  # fmt: skip


def fast_trainer(dtype: str) -> Trainer:
    cfg = TrainConfig(
        out_dir=tempfile.mkdtemp(prefix="myllm101-nb04-"), model=model, seq_len=seq_len,
        batch_size=batch_size, grad_accum_steps=accum, max_steps=steps, beta1=0.9, beta2=0.95,
        dtype=dtype, eval_interval=10_000, eval_batches=1, save_interval=10_000, progress=False, seed=seed,
        **hyper,
    )  # fmt: skip
    return Trainer(cfg, tokens, tokens)


fast64 = fast_trainer("float64")
init = {k: v.detach().numpy().copy() for k, v in fast64.model.state_dict().items()}
fast64.fit()
fast64_losses = np.array([r["loss"] for r in fast64.history])

reference = ReferenceGPT(fast64.model_cfg, init)
settings = TrainSettings(steps=steps, seq_len=seq_len, batch_size=batch_size, grad_accum=accum,
                         max_steps=steps, betas=(0.9, 0.95), seed=seed, **hyper)  # fmt: skip
ref_losses = np.array(train_gpt(reference, tokens, settings))

fast32 = fast_trainer("float32")  # what `myllm101 train` uses on a CPU without native bf16
fast32.fit()
fast32_losses = np.array([r["loss"] for r in fast32.history])
print(f"loss: {ref_losses[0]:.4f} -> {ref_losses[-1]:.4f} (reference), "
      f"{fast64_losses[-1]:.4f} (fast float64), {fast32_losses[-1]:.4f} (fast float32)")  # fmt: skip

# %% [markdown]
# ## The loss curves overlap
#
# Left: the three runs' losses (the lines coincide). Right: the learning rate of each step
# (`lr_at`, the same function in `reference/train.py` and `train/schedule.py`) and the gap
# between the reference and the fast losses on a log scale: float64 rounding, and the larger but
# still tiny float32 rounding. (`fit()` also saved its own loss plot, switching matplotlib to
# its file backend; `%matplotlib inline` switches back for the notebook.)

# %%
# %matplotlib inline
lrs = [lr_at(s, hyper["lr"], hyper["min_lr"], hyper["warmup_steps"], steps, "cosine")
       for s in range(steps)]  # fmt: skip
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5), layout="constrained")
ax1.plot(ref_losses, lw=4, alpha=0.4, label="reference (NumPy, float64)")
ax1.plot(fast64_losses, "--", label="fast (PyTorch, float64)")
ax1.plot(fast32_losses, ":", label="fast (PyTorch, float32)")
ax1.set_xlabel("step")
ax1.set_ylabel("training loss")
ax1.legend()
ax2.semilogy(np.abs(fast64_losses - ref_losses) + 1e-18, label="|fast64 - reference|")
ax2.semilogy(np.abs(fast32_losses - ref_losses), label="|fast32 - reference|")
ax2.set_xlabel("step")
ax2.set_ylabel("loss difference")
ax3 = ax2.twinx()
ax3.plot(lrs, color="gray", lw=1)
ax3.set_ylabel("learning rate (gray)")
ax2.legend(fontsize=8, loc="lower right")
plt.show()

# %% [markdown]
# ## The reference and the fast trainer agree
#
# In float64 the two loops differ only in summation order ($u \approx 10^{-16}$ per operation),
# and 30 AdamW steps carry that along without amplifying it much: losses agree to ~$10^{-14}$
# and so do the weights. `rtol=1e-9` (losses) and `rtol=1e-8, atol=1e-10` (weights) are orders
# above that, and a wrong schedule, clipping or decay group would be off by $10^{-3}$ or more.
# The float32 run is a different precision, not a bug check: its losses stay within `rtol=1e-3`
# ($u_{32} \approx 6 \cdot 10^{-8}$, grown by 30 steps of training), and it must train.

# %%
np.testing.assert_allclose(fast64_losses, ref_losses, rtol=1e-9)
for name, value in fast64.model.state_dict().items():
    np.testing.assert_allclose(value.numpy(), reference.params[name], rtol=1e-8, atol=1e-10,
                               err_msg=name)  # fmt: skip
np.testing.assert_allclose(fast32_losses, ref_losses, rtol=1e-3)
assert ref_losses[-5:].mean() < ref_losses[:5].mean() - 0.5  # it learned something
print("reference == fast: every step's loss and every final weight")
