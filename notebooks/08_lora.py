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
# # 08 · LoRA: fine-tune a few numbers instead of all of them
#
# A pretrained linear layer `y = x W^T + b` has `out * in` weights. LoRA (Hu et al., 2021)
# freezes `W` and `b` and learns a low-rank update instead:
#
# $$y = x W^T + b + \frac{\alpha}{r}\,(x A^T)\,B^T, \qquad A \in \mathbb{R}^{r \times in},\;
# B \in \mathbb{R}^{out \times r}$$
#
# so the layer learns through `r * (in + out)` numbers. Three facts make it practical:
#
# 1. **B starts at zero**, so a fresh adapter leaves the model exactly as it was.
# 2. **Merging**: `W' = W + (alpha / r) B A` is one ordinary weight that computes the adapted
#    layer, so inference costs one matmul again.
# 3. **Backward** only needs `dA` and `dB`: `dB = s * dy^T (x A^T)`, `dA = s * (dy B)^T x`
#    with `s = alpha / r`; no gradient is ever formed for the frozen `W`.
#
# The NumPy reference is [reference/lora.py](../myllm101/reference/lora.py) (forward and a
# hand-written backward), the PyTorch twin [fast/lora.py](../myllm101/fast/lora.py) (`LoRALinear`,
# autograd), and [finetune/adapters.py](../myllm101/finetune/adapters.py) puts adapters on a model.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

from myllm101.config import LlamaConfig
from myllm101.fast import lora as fast_lora
from myllm101.fast.llama import Llama
from myllm101.finetune.adapters import apply_lora, count_parameters, lora_modules
from myllm101.reference import lora as ref_lora
from myllm101.reference.llama import ReferenceLlama
from myllm101.reference.optim import AdamW

torch.set_num_threads(1)  # tiny tensors: one thread is faster than handing work to a pool

# float64 on both sides: the same math in another summation order agrees to ~1e-15 relative,
# so rtol 1e-10 (the whole-model parity tests' tolerance) leaves room and still catches any bug
RTOL, ATOL = 1e-10, 1e-12
rng = np.random.default_rng(0)

# %% [markdown]
# ## One layer: reference forward + backward next to the fast one
#
# The reference computes the gradients by hand; the fast layer lets autograd do it. Same inputs,
# float64.

# %%
N, d_in, d_out, r, alpha = 5, 12, 7, 3, 6.0
x = rng.standard_normal((N, d_in))
w, b = rng.standard_normal((d_out, d_in)), rng.standard_normal(d_out)
A, B = rng.standard_normal((r, d_in)), rng.standard_normal((d_out, r))  # a "trained" adapter
dy = rng.standard_normal((N, d_out))

y_ref, cache = ref_lora.lora_linear_forward(x, w, b, A, B, alpha)
dx_ref, dA_ref, dB_ref = ref_lora.lora_linear_backward(dy, cache)

xt, At, Bt = (torch.tensor(v, requires_grad=True) for v in (x, A, B))
y_fast = fast_lora.lora_linear(xt, torch.tensor(w), torch.tensor(b), At, Bt, alpha)
y_fast.backward(torch.tensor(dy))

for name, ref, fast in [
    ("y", y_ref, y_fast),
    ("dx", dx_ref, xt.grad),
    ("dA", dA_ref, At.grad),
    ("dB", dB_ref, Bt.grad),
]:
    err = np.abs(ref - fast.detach().numpy()).max()
    print(f"{name:3s} shape {str(ref.shape):8s} max |reference - fast| = {err:.2e}")
    np.testing.assert_allclose(fast.detach().numpy(), ref, rtol=RTOL, atol=ATOL, err_msg=name)

# %% [markdown]
# ## B = 0 at init: a fresh adapter changes nothing
#
# `LoRALinear` wraps an existing `nn.Linear` (sharing, not copying, its weight) and initialises
# `A` like `nn.Linear` does and `B` to zero. The update `(x A^T) B^T` is then exactly zero, so
# the output equals the base layer's bit for bit.

# %%
torch.manual_seed(0)
base = torch.nn.Linear(d_in, d_out).double()
layer = fast_lora.LoRALinear(base, r=r, alpha=alpha)
xb = torch.randn(4, d_in, dtype=torch.float64)
with torch.no_grad():
    same_at_init = torch.equal(layer(xb), base(xb))
print("B is all zeros:", bool((layer.lora_B == 0).all()), "| output == base output:", same_at_init)
assert same_at_init

# %% [markdown]
# ## Merge == unmerged
#
# After training (here: a random `B`), folding the update into the weight gives the same layer.
# The reference `lora_merge` and the fast one build the same `W'`.

# %%
with torch.no_grad():
    layer.lora_B.copy_(torch.randn(d_out, r, dtype=torch.float64))
    y_unmerged = layer(xb)
    w_merged_ref = ref_lora.lora_merge(
        base.weight.numpy().copy(), layer.lora_A.numpy(), layer.lora_B.numpy(), alpha
    )
    layer.merge()  # in place: W += (alpha / r) B A
    y_merged = layer(xb)
    merged_weight = layer.weight.numpy().copy()
    layer.unmerge()
print("max |merged - unmerged| output:", float((y_merged - y_unmerged).abs().max()))
print("max |W' reference - W' fast|:  ", float(np.abs(w_merged_ref - merged_weight).max()))
np.testing.assert_allclose(y_merged.numpy(), y_unmerged.numpy(), rtol=RTOL, atol=ATOL)
np.testing.assert_allclose(merged_weight, w_merged_ref, rtol=RTOL, atol=ATOL)

# %% [markdown]
# ## A few LoRA steps on a tiny LLaMA, both ways
#
# *Fast*: `apply_lora` replaces `q_proj`, `v_proj`, `down_proj` and the (untied) `lm_head` by
# `LoRALinear`s and freezes the rest; autograd and `torch.optim.AdamW` train `A` and `B`.
#
# *Reference*: the NumPy model never builds an adapter layer. `lora_model_step` runs the plain
# reference model on merged weights `W' = W + s B A`, takes the hand-written backward's `dW'`,
# turns it into `dA = s B^T dW'` and `dB = s dW' A^T` (the chain rule through the merge), and
# steps the reference AdamW. Two independent routes to the same numbers.

# %%
cfg = LlamaConfig(vocab_size=31, block_size=12, n_layer=2, n_head=4, n_kv_head=2, n_embd=16,
                  intermediate_size=20)  # fmt: skip
R, ALPHA, LR = 4, 8.0, 1e-1
torch.manual_seed(1)
fast = Llama(cfg).double()
ref = ReferenceLlama(cfg, params={k: v.numpy().copy() for k, v in fast.state_dict().items()})
apply_lora(
    fast.train(),
    targets=["q_proj", "v_proj", "down_proj", "lm_head"],
    r=R,
    alpha=ALPHA,
    dropout=0.0,
)
adapters = {  # the reference's own copies of the same initial A and B
    f"{name}.weight": (m.lora_A.detach().numpy().copy(), m.lora_B.detach().numpy().copy())
    for name, m in lora_modules(fast).items()
}
fast_params = [p for m in lora_modules(fast).values() for p in (m.lora_A, m.lora_B)]
fast_opt = torch.optim.AdamW(fast_params, lr=LR, betas=(0.9, 0.95), weight_decay=0.0)
ref_opt = AdamW([t for ab in adapters.values() for t in ab], LR, (0.9, 0.95), 1e-8, 0.0)

ids = np.random.default_rng(1).integers(0, cfg.vocab_size, (4, 12))  # one batch, learned by heart
ref_losses, fast_losses = [], []
for _ in range(15):
    ref_losses.append(ref_lora.lora_model_step(ref, adapters, ALPHA, ref_opt, ids, ids))
    t_ids = torch.from_numpy(ids)
    loss = fast(t_ids, labels=t_ids).loss
    fast_opt.zero_grad()
    loss.backward()
    fast_opt.step()
    fast_losses.append(loss.item())
print("step  reference loss   fast loss")
for s in range(0, 15, 3):
    print(f"{s:4d}  {ref_losses[s]:.12f}  {fast_losses[s]:.12f}")

# %%
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(ref_losses, "o-", label="reference (NumPy, merged weights)")
ax.plot(fast_losses, "x--", label="fast (LoRALinear + autograd)")
ax.set_xlabel("LoRA step")
ax.set_ylabel("training loss")
ax.legend()
plt.show()

# %% [markdown]
# ## How many numbers train?
#
# `count_parameters` counts trainable vs all weights (PEFT's `print_trainable_parameters`). On a
# wider LLaMA (4 layers, width 256, vocabulary 2048) with adapters on `q_proj` and `v_proj`, the
# trainable share grows linearly with `r`: about 1% of the weights even at r = 16.

# %%
wide = LlamaConfig(vocab_size=2048, block_size=64, n_layer=4, n_head=8, n_kv_head=2, n_embd=256,
                   intermediate_size=688)  # fmt: skip
print(f"{'r':>3}  {'trainable':>10}  {'total':>10}  {'trainable %':>11}")
for rank in (1, 2, 4, 8, 16):
    torch.manual_seed(0)
    m = apply_lora(Llama(wide), targets=["q_proj", "v_proj"], r=rank, alpha=2 * rank, dropout=0.0)
    trainable, total = count_parameters(m)
    # q_proj (256 -> 256) and v_proj (256 -> 64) per layer: r * (in + out) each
    assert trainable == wide.n_layer * rank * ((256 + 256) + (256 + 64))
    print(f"{rank:>3}  {trainable:>10,}  {total:>10,}  {100 * trainable / total:>10.3f}%")

# %% [markdown]
# ## The two agree
#
# Every step's loss and the final `A`, `B` of every adapter: reference == fast within rtol 1e-10
# (float64; the two differ only in summation order, ~1e-15 relative, and AdamW's normalised step
# does not amplify that over 15 steps). The frozen weights never moved.

# %%
np.testing.assert_allclose(fast_losses, ref_losses, rtol=RTOL)
for (name, (A_ref, B_ref)), m in zip(adapters.items(), lora_modules(fast).values()):
    np.testing.assert_allclose(m.lora_A.detach().numpy(), A_ref, rtol=RTOL, atol=ATOL, err_msg=name)
    np.testing.assert_allclose(m.lora_B.detach().numpy(), B_ref, rtol=RTOL, atol=ATOL, err_msg=name)
assert fast_losses[-1] < 0.5 * fast_losses[0], "the adapters should learn the batch"
print(f"reference == fast over {len(ref_losses)} LoRA steps "
      f"(loss {ref_losses[0]:.3f} -> {ref_losses[-1]:.3f})")  # fmt: skip
