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
# # 09 · From GPT-2 to LLaMA 2: four swaps
#
# LLaMA 2 is a GPT-2 with four parts exchanged. Each swap keeps the block's shape
# (`x = x + attn(norm(x)); x = x + mlp(norm(x))`) and changes one idea:
#
# | GPT-2 | LLaMA 2 | why |
# |---|---|---|
# | LayerNorm | RMSNorm | no mean to subtract, no bias: cheaper, trains as well |
# | learned absolute positions | RoPE | positions as rotations of q and k: attention sees *relative* offsets |
# | GELU MLP (4C) | SwiGLU MLP (~8/3 C, three matrices) | a learned gate: better loss per FLOP |
# | multi-head attention | grouped-query attention | several query heads share one k/v head: a smaller KV cache |
#
# For each swap we run the NumPy reference ([reference/](../myllm101/reference/)) next to the PyTorch
# code ([fast/](../myllm101/fast/)) on the same float64 inputs, then build a tiny LLaMA both ways
# and compare its logits.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

from myllm101.config import GPTConfig, LlamaConfig
from myllm101.fast import activations as F_act
from myllm101.fast import layernorm as F_ln
from myllm101.fast import rmsnorm as F_rms
from myllm101.fast import rope as F_rope
from myllm101.fast.attention import MultiHeadAttention
from myllm101.fast.gpt import GPT
from myllm101.fast.llama import Llama
from myllm101.reference import activations as R_act
from myllm101.reference import layernorm as R_ln
from myllm101.reference import rmsnorm as R_rms
from myllm101.reference import rope as R_rope
from myllm101.reference.attention import mha_forward
from myllm101.reference.llama import ReferenceLlama

torch.set_num_threads(1)  # tiny tensors: one thread is faster than handing work to a pool
# float64 on both sides, the same math in another order: ~1e-15 relative apart, so rtol 1e-10
# (the whole-model parity tests' tolerance) is loose enough and still catches any real mistake
RTOL, ATOL = 1e-10, 1e-12
rng = np.random.default_rng(0)
B, T, C = 2, 8, 16
x = rng.standard_normal((B, T, C)) * 3 + 1  # a shifted, scaled input: norms have work to do


def check(name: str, ref: np.ndarray, fast: torch.Tensor) -> None:
    fast = fast.detach().numpy()
    print(f"{name:28s} max |reference - fast| = {np.abs(ref - fast).max():.1e}")
    np.testing.assert_allclose(fast, ref, rtol=RTOL, atol=ATOL, err_msg=name)


# %% [markdown]
# ## 1. LayerNorm -> RMSNorm
#
# LayerNorm: $y = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}\, w + b$.
# RMSNorm drops the centring and the bias: $y = \frac{x}{\sqrt{\mathrm{mean}(x^2) + \epsilon}}\, w$.
# Without centring the output keeps the row's mean direction, which the next layer can use or undo.

# %%
w, b = rng.standard_normal(C), rng.standard_normal(C)
ln_ref, _ = R_ln.layernorm_forward(x, w, b, eps=1e-5)
rms_ref, _ = R_rms.rmsnorm_forward(x, w, eps=1e-5)
tx, tw, tb = torch.tensor(x), torch.tensor(w), torch.tensor(b)
check("LayerNorm", ln_ref, F_ln.layernorm(tx, tw, tb, eps=1e-5))
check("RMSNorm", rms_ref, F_rms.rmsnorm(tx, tw, eps=1e-5))
ones = np.ones(C)  # unit scale, no bias: what each normalisation does by itself
ln_mean = np.abs(R_ln.layernorm_forward(x, ones)[0].mean(-1)).max()
rms_mean = np.abs(R_rms.rmsnorm_forward(x, ones)[0].mean(-1)).max()
print(f"largest |row mean| after LayerNorm: {ln_mean:.1e}, after RMSNorm: {rms_mean:.2f}")

# %% [markdown]
# ## 2. Learned positions -> RoPE
#
# GPT-2 adds a learned vector `wpe[t]` to each token. RoPE instead rotates every pair of q/k
# features by an angle `t * theta^(-2i/D)`. A rotation by `m` on q and `n` on k leaves
# `q . k` depending on `m - n` only: attention scores become relative, and no position table is
# learned. Reference `rope_forward` vs fast `apply_rope`:

# %%
H, D = 4, 8
q = rng.standard_normal((B, H, T, D))
cos, sin = R_rope.rope_frequencies(D, T, theta=10000.0)
q_rot_ref, _ = R_rope.rope_forward(q, cos, sin)
tcos, tsin = F_rope.rope_frequencies(D, T, theta=10000.0, dtype=torch.float64)
check("RoPE tables (cos)", cos, tcos)
check("RoPE on q", q_rot_ref, F_rope.apply_rope(torch.tensor(q), tcos, tsin))

# the relative property: the same q and k placed at (m, n) score the same for every m - n
q1, k1 = rng.standard_normal((1, 1, 1, D)), rng.standard_normal((1, 1, 1, D))
L = 32
cos_l, sin_l = R_rope.rope_frequencies(D, L)
qs = R_rope.rope_forward(np.repeat(q1, L, axis=2), cos_l, sin_l)[0][0, 0]  # (L, D): q at 0..L-1
ks = R_rope.rope_forward(np.repeat(k1, L, axis=2), cos_l, sin_l)[0][0, 0]
scores = qs @ ks.T  # (L, L): score of q at m with k at n
for offset in (0, 3, 10):
    diag = np.diagonal(scores, offset=-offset)  # every (m, n) with m - n = offset
    print(f"m - n = {offset:2d}: scores spread {np.ptp(diag):.1e} over {diag.size} positions")
    np.testing.assert_allclose(diag, diag[0], rtol=1e-12, atol=1e-12)

fig, ax = plt.subplots(figsize=(4, 3.4))
im = ax.imshow(scores, cmap="coolwarm")
ax.set_xlabel("key position n")
ax.set_ylabel("query position m")
ax.set_title("RoPE: q.k depends on m - n only")
fig.colorbar(im)
plt.show()

# %% [markdown]
# ## 3. GELU MLP -> SwiGLU MLP
#
# GPT-2: `c_proj(gelu(c_fc(x)))` with a hidden width of 4C. LLaMA:
# `down(silu(gate(x)) * up(x))`: one projection decides, per hidden unit, how much of the other
# passes. Three matrices instead of two, so the hidden width shrinks to ~8/3 C for the same
# parameter count. The activations, reference vs fast:

# %%
g, u = rng.standard_normal((B, T, 24)), rng.standard_normal((B, T, 24))
check("GELU (tanh, GPT-2)", R_act.gelu_forward(g, "tanh")[0], F_act.gelu(torch.tensor(g), "tanh"))
check("SwiGLU silu(gate) * up", R_act.swiglu_forward(g, u)[0],
      F_act.swiglu(torch.tensor(g), torch.tensor(u)))  # fmt: skip

# %% [markdown]
# ## 4. Multi-head -> grouped-query attention
#
# With `n_kv_head < n_head`, each key/value head serves `n_head / n_kv_head` query heads. The KV
# cache shrinks by the same factor; quality barely moves. Here 4 query heads share 2 kv heads, and
# RoPE rotates q and k inside the block. The reference takes the weights as a dict; the fast block
# is an `nn.Module` whose `state_dict` has the same names.

# %%
n_head, n_kv_head = 4, 2
attn = MultiHeadAttention(C, n_head, n_kv_head, rope_theta=10000.0, max_seq_len=T).double()
params = {k: v.numpy() for k, v in attn.state_dict().items()}
print({k: v.shape for k, v in params.items()})
gqa_ref, _ = mha_forward(x, params, n_head, n_kv_head, causal=True,
                         rope=R_rope.rope_frequencies(C // n_head, T))  # fmt: skip
check("GQA attention + RoPE", gqa_ref, attn(tx))

# %% [markdown]
# ## All four together: a tiny LLaMA, reference vs fast
#
# [reference/llama.py](../myllm101/reference/llama.py) and [fast/llama.py](../myllm101/fast/llama.py)
# are built from exactly the parts above. Same width and depth as a tiny GPT-2, side by side:

# %%
gpt_cfg = GPTConfig(vocab_size=97, block_size=16, n_layer=2, n_head=4, n_embd=32)
# SwiGLU width 85 ~ 8/3 * 32: three (85 x 32) matrices ~ GPT-2's two (128 x 32) ones
llama_cfg = LlamaConfig(vocab_size=97, block_size=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                        intermediate_size=85)  # fmt: skip
torch.manual_seed(0)
gpt, llama = GPT(gpt_cfg).double(), Llama(llama_cfg).double()


def n_params(model: torch.nn.Module, part: str) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if part in n)


print(f"{'part':12s} {'GPT-2':>8s} {'LLaMA':>8s}")
for part, gpt_name, llama_name in [
    ("norms", "ln", "norm"),
    ("positions", "wpe", "rope"),  # RoPE has no parameters
    ("attention", "attn", "self_attn"),
    ("MLP", "mlp", "mlp"),
]:
    print(f"{part:12s} {n_params(gpt, gpt_name):>8,} {n_params(llama, llama_name):>8,}")

ref = ReferenceLlama(llama_cfg, params={k: v.numpy().copy() for k, v in llama.state_dict().items()})
ids = rng.integers(0, llama_cfg.vocab_size, (3, 16))
logits_ref, loss_ref, _ = ref.forward(ids, labels=ids)
out = llama(torch.from_numpy(ids), labels=torch.from_numpy(ids))

# %% [markdown]
# ## The two agree
#
# Logits (3 x 16 x 97) and loss of the tiny LLaMA: reference == fast within rtol 1e-10 in float64
# (two layers of the float64 ops above; their differences are ~1e-15 relative).

# %%
check("tiny LLaMA logits", logits_ref, out.logits)
np.testing.assert_allclose(out.loss.item(), loss_ref, rtol=RTOL)
print(f"loss: reference {float(loss_ref):.12f}, fast {out.loss.item():.12f}")
