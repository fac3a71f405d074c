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
# # 07 · Fine-tuning: a classification head on BERT
#
# Fine-tuning starts from a model and trains it further on a labelled task. For classification,
# BERT reads the whole sequence (no causal mask), and a small head turns the first position's
# hidden state into class scores:
#
# $$\text{pooled} = \tanh(W_p\, h_{[CLS]} + b_p), \qquad \text{logits} = W_c\, \text{pooled} + b_c,
# \qquad \text{loss} = \text{cross-entropy}(\text{logits}, y)$$
#
# The discipline matters as much as the model: a **train** split to learn from, a **val** split to
# choose when to stop (evaluated before the first step, the score to beat, then every few steps),
# and a **test** split looked at once at the end. **Early stopping** keeps the best val state on
# disk and stops after `patience` evaluations without a new best.
#
# [finetune/run.py](../myllm101/finetune/run.py) does all of that (`prepare_model`, `finetune`;
# `BestSaver` in finetune/best.py); `myllm101 finetune --base minilm --task classify` runs it on MiniLM and Shakespeare
# genres. To run in seconds, this notebook fine-tunes a tiny BERT on a synthetic task, then checks
# the trained classifier against the NumPy reference BERT
# ([reference/bert.py](../myllm101/reference/bert.py)).

# %%
import tempfile
from pathlib import Path

import numpy as np
import torch
from IPython.display import Image

from myllm101.config import BertConfig
from myllm101.fast.bert import Bert
from myllm101.finetune.best import BestSaver
from myllm101.finetune.run import FinetuneConfig, evaluate, finetune, prepare_model
from myllm101.reference.bert import ReferenceBert
from myllm101.train.metrics import read_metrics

torch.set_num_threads(1)  # tiny tensors: one thread is faster than handing work to a pool

# %% [markdown]
# ## The task
#
# Sequences of random "word" ids with one keyword planted somewhere; the label says which of three
# keywords it is. Lengths vary (8 to 16), so shorter rows are padded and the attention mask keeps
# the real tokens from attending to padding. Train, val and test come from different seeds.

# %%
V, T, CLS, PAD = 40, 16, 1, 0
KEYWORDS = (5, 6, 7)  # label 0, 1, 2
LABELS = ["five", "six", "seven"]


def make_split(n: int, seed: int, batch_size: int = 16) -> list[dict]:
    g = np.random.default_rng(seed)
    ids = g.integers(10, V, (n, T))  # ordinary words: ids 10..39
    lengths = g.integers(8, T + 1, n)
    labels = g.integers(0, 3, n)
    ids[:, 0] = CLS
    ids[np.arange(n), g.integers(1, lengths)] = np.array(KEYWORDS)[labels]  # inside each row
    mask = np.arange(T)[None, :] < lengths[:, None]  # True = real token
    ids[~mask] = PAD
    return [
        {
            "input_ids": torch.from_numpy(ids[i : i + batch_size]),
            "attention_mask": torch.from_numpy(mask[i : i + batch_size]).long(),
            "labels": torch.from_numpy(labels[i : i + batch_size]),
        }
        for i in range(0, n, batch_size)
    ]


train, val, test = make_split(320, seed=0), make_split(96, seed=1), make_split(96, seed=2)
print(f"batches: train {len(train)}, val {len(val)}, test {len(test)}")
print("a row:", train[0]["input_ids"][0].tolist(), "label", LABELS[int(train[0]["labels"][0])])

# %% [markdown]
# ## Fine-tune with early stopping
#
# `prepare_model(..., "full")` makes every weight trainable (`"lora"` would freeze the encoder and
# train adapters plus the head, notebook 08). Up to 10 epochs, val every 10 steps, patience 3; the
# val metric is macro-F1 (the default for `classify`): once it is perfect nothing can beat it, and
# three evaluations later the run stops (while the val loss still falls: `metric="loss"` would
# train on; the metric decides what "best" means).

# %%
cfg = BertConfig(vocab_size=V, block_size=T, n_layer=2, n_head=2, n_embd=32, intermediate_size=64,
                 num_labels=3)  # fmt: skip
torch.manual_seed(0)
model = prepare_model(Bert(cfg), task="classify", method="full")
tmp = tempfile.TemporaryDirectory()  # the run directory, removed at the end
run_dir = Path(tmp.name) / "run"
ft_cfg = FinetuneConfig(task="classify", method="full", lr=3e-3, epochs=10, eval_every=10,
                        patience=3, eval_test=True, progress=False)  # fmt: skip
saver = BestSaver("full", base="bert-tiny (random init)", task="classify", labels=LABELS)
summary = finetune(model, train, val, ft_cfg, run_dir, saver, test_batches=test, num_labels=3)
print(f"steps {summary['steps']} of {summary['planned_steps']} planned, "
      f"stopped early: {summary['stopped_early']}, best step {summary['best_step']}")  # fmt: skip
print("val before training:", {k: round(v, 3) for k, v in summary["val_initial"].items()})
print("val at the best step:", {k: round(v, 3) for k, v in summary["val_best"].items()})
print("test, once, on the best state:", {k: round(v, 3) for k, v in summary["test"].items()})

# %%
# metrics.jsonl: one record per step and per evaluation; "best" marks a new best val score
records = read_metrics(run_dir / "metrics.jsonl")
print(" step  val loss  val macro-F1  new best")
for r in records:
    if "val_loss" in r:
        print(f"{r['step']:5d}  {r['val_loss']:8.4f}  {r['val_macro_f1']:11.3f}  {r['best']}")
Image(filename=str(run_dir / "loss.png"))  # the run's own plot: train and val loss

# %% [markdown]
# ## The reference BERT runs the fine-tuned classifier
#
# After the run, `model` holds the best state (read back from `best/` for the test). We copy its
# weights, by `state_dict` name, into the NumPy reference in float64 and run both on the val set
# through the `"cls"` head, padding mask included: logits, loss, and the gradient of every
# parameter by the reference's hand-written backward vs autograd.

# %%
fast64 = model.double().eval()
ref = ReferenceBert(
    cfg, params={k: v.detach().numpy().copy() for k, v in fast64.state_dict().items()}
)
ref.eval()
ids = torch.cat([b["input_ids"] for b in val])
mask = torch.cat([b["attention_mask"] for b in val])
labels = torch.cat([b["labels"] for b in val])

logits_ref, loss_ref, cache = ref.forward(ids.numpy(), mask.numpy(), labels.numpy(), head="cls")
grads_ref = ref.backward(cache)
fast64.zero_grad()
out = fast64(ids, mask, labels, head="cls")
out.loss.backward()
# a parameter the cls pass never touches (the MLM head) gets no .grad: its gradient is zero
grads_fast = {
    k: torch.zeros_like(p) if p.grad is None else p.grad for k, p in fast64.named_parameters()
}
worst = max(
    grads_fast, key=lambda k: float((grads_fast[k] - torch.from_numpy(grads_ref[k])).abs().max())
)
print(f"logits {tuple(logits_ref.shape)}: max |reference - fast| "
      f"{np.abs(logits_ref - out.logits.detach().numpy()).max():.1e}")  # fmt: skip
print(f"loss: reference {float(loss_ref):.12f}, fast {out.loss.item():.12f}")
print(f"{len(grads_fast)} parameter gradients; the largest difference is in {worst}")

# accuracy from the reference logits vs the library's evaluate()
acc_ref = float((logits_ref.argmax(-1) == labels.numpy()).mean())
acc_lib = evaluate(fast64, val, "classify", num_labels=3)["accuracy"]
print(f"val accuracy: from reference logits {acc_ref:.4f}, finetune.evaluate {acc_lib:.4f}")

# %% [markdown]
# ## The two agree
#
# float64, the same math in another order: logits, loss and every gradient within rtol 1e-10
# (the whole-model parity tests' tolerance; atol 1e-12 for gradients that are zero in exact
# arithmetic, such as the unused MLM head's). The accuracies are equal exactly, and fine-tuning
# beat the untrained val score.

# %%
np.testing.assert_allclose(out.logits.detach().numpy(), logits_ref, rtol=1e-10, atol=1e-12)
np.testing.assert_allclose(out.loss.item(), float(loss_ref), rtol=1e-10)
for name, g in grads_fast.items():
    np.testing.assert_allclose(g.numpy(), grads_ref[name], rtol=1e-10, atol=1e-12, err_msg=name)
assert acc_ref == acc_lib
assert summary["val_best"]["macro_f1"] > summary["val_initial"]["macro_f1"]
print("reference == fast for the fine-tuned classifier")
tmp.cleanup()
