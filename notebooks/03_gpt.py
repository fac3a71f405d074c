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
# # 03 · GPT: the whole model, twice
#
# GPT-2 stacks the attention of notebook 02 into blocks:
#
# ```
# x = wte[ids] + wpe[0 .. T-1]                        # token + position embeddings (B, T, C)
# for each of n_layer blocks:
#     x = x + attn(ln_1(x))                           # causal self-attention, pre-LayerNorm
#     x = x + c_proj(gelu(c_fc(ln_2(x))))             # MLP of width 4C
# logits = ln_f(x) @ wte.T                            # (B, T, V): the LM head is tied to wte
# loss = cross_entropy(logits[:, :-1], ids[:, 1:])    # predict the next token
# ```
#
# `ReferenceGPT` (`myllm101/reference/gpt.py`) is NumPy with a hand-written backward through the
# whole model; `GPT` (`myllm101/fast/gpt.py`) is PyTorch with autograd. Their parameters have
# the same names, so one `state_dict` drives both: same weights, same logits, same gradients.

# %%
import os
from pathlib import Path

if Path.cwd().name == "notebooks":  # opened from notebooks/ in Jupyter: work from the repo root
    os.chdir("..")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny NumPy matrices: a 2nd thread only waits

import numpy as np
import torch

from myllm101.api import AutoConfig, AutoModelForCausalLM
from myllm101.config import GPTConfig
from myllm101.reference.gpt import ReferenceGPT, param_shapes

# %% [markdown]
# ## One small GPT, built twice
#
# The fast model comes from the public API (`AutoModelForCausalLM.from_config`); the reference
# one is handed the fast model's weights as float64 arrays.

# %%
cfg = GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32)
fast_model = AutoModelForCausalLM.from_config(cfg, seed=0).double()  # float64 for the comparison
params = {name: t.detach().numpy().copy() for name, t in fast_model.state_dict().items()}
ref_model = ReferenceGPT(cfg, params)
print(fast_model)

# %% [markdown]
# ## Same weights, same logits
#
# A batch of random token ids through both. `labels=ids`: each model shifts the labels by one
# itself and returns the mean next-token cross-entropy. An untrained model should score about
# $\ln V = \ln 97 \approx 4.57$ (a uniform guess).

# %%
rng = np.random.default_rng(0)
ids = rng.integers(0, cfg.vocab_size, size=(3, 20))

logits_ref, loss_ref, cache = ref_model.forward(ids, labels=ids)
out = fast_model(torch.from_numpy(ids), labels=torch.from_numpy(ids))
logits_fast, loss_fast = out.logits.detach().numpy(), out.loss.item()
print(f"logits {logits_ref.shape}; loss reference {loss_ref:.6f}, fast {loss_fast:.6f}, "
      f"ln V = {np.log(cfg.vocab_size):.6f}")  # fmt: skip
print("max |logits diff|:", np.abs(logits_ref - logits_fast).max())

# %% [markdown]
# ## Same gradients
#
# The reference walks the layers backwards by hand (`ReferenceGPT.backward`); the fast model
# asks autograd. The tied embedding gets two contributions (input embedding and LM head),
# summed into one array on both sides.

# %%
grads_ref = ref_model.backward(cache)
out.loss.backward()
grads_fast = {name: p.grad.numpy() for name, p in fast_model.named_parameters()}
worst = max(grads_fast, key=lambda n: np.abs(grads_fast[n] - grads_ref[n]).max())
print(f"{len(grads_fast)} parameter tensors; worst max |grad diff|: "
      f"{np.abs(grads_fast[worst] - grads_ref[worst]).max():.2e} ({worst})")  # fmt: skip

# %% [markdown]
# ## Where the parameters are
#
# Per block: attention has $4C^2$ weights (q, k, v, output), the MLP $8C^2$ (two $C \times 4C$
# matrices), so a GPT has about $12 \, n_{layer} C^2$ plus the embeddings $V C + \text{block}
# \cdot C$. The reference counts from its shape table; the fast count is
# `GPT.num_parameters()` (built on the `meta` device for GPT-2 small: shapes only, no memory).


# %%
def count_by_part(cfg) -> dict[str, int]:
    parts = {"embeddings": 0, "attention": 0, "mlp": 0, "layernorms": 0}
    shapes = param_shapes(cfg)
    if cfg.tie_word_embeddings:
        shapes.pop("lm_head.weight")  # the same array as wte.weight: counted once
    for name, shape in shapes.items():
        part = ("embeddings" if name.startswith(("wte", "wpe", "lm_head")) else
                "attention" if ".attn." in name else "mlp" if ".mlp." in name else "layernorms")  # fmt: skip
        parts[part] += int(np.prod(shape))
    return parts


configs = {"this notebook": cfg, "gpt-tiny": AutoConfig.from_pretrained("gpt-tiny"),
           "gpt2 (small)": AutoConfig.from_pretrained("gpt2")}  # fmt: skip
rows = []
print(f"{'model':<14} {'embeddings':>11} {'attention':>11} {'mlp':>11} {'layernorms':>10} "
      f"{'total':>12} {'fast count':>12} {'12 L C^2':>12}")  # fmt: skip
for name, c in configs.items():
    parts = count_by_part(c)
    with torch.device("meta"):
        fast_count = AutoModelForCausalLM.from_config(c).num_parameters()
    total = sum(parts.values())
    rows.append((total, fast_count))
    print(f"{name:<14} " + " ".join(f"{parts[k]:>11,}" for k in ("embeddings", "attention", "mlp"))
          + f" {parts['layernorms']:>10,} {total:>12,} {fast_count:>12,}"
          + f" {12 * c.n_layer * c.n_embd**2:>12,}")  # fmt: skip

# %% [markdown]
# ## The reference and the fast GPT agree
#
# Both run in float64 ($u \approx 1.1 \cdot 10^{-16}$). Through 2 blocks, LayerNorms and a
# 97-way softmax the roundings add up to $\sim 10^{-15}$ (printed above). `rtol=1e-9` with
# `atol=1e-12` is far above that and far below any real mistake (a missing bias, a wrong
# mask or an untied head change logits by $10^{-3}$ or more). Parameter counts must be equal.

# %%
np.testing.assert_allclose(logits_fast, logits_ref, rtol=1e-9, atol=1e-12)
np.testing.assert_allclose(loss_fast, loss_ref, rtol=1e-9)
assert set(grads_fast) == set(ref_model.parameter_names())  # each trainable array once
for name, g in grads_fast.items():
    np.testing.assert_allclose(g, grads_ref[name], rtol=1e-9, atol=1e-12, err_msg=name)
for total, fast_count in rows:
    assert total == fast_count
print("reference == fast: logits, loss, every gradient and the parameter counts")
