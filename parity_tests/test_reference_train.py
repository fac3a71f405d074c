"""The NumPy training loop (reference/train.py) follows the fast trainer step for step."""

import numpy as np
import pytest
import torch

from myllm101.reference.gpt import ReferenceGPT
from myllm101.reference.train import TrainSettings, lr_at, train_gpt
from myllm101.train import TrainConfig, Trainer
from myllm101.train.schedule import lr_at as fast_lr_at
from parity_tests.helpers import assert_close


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_schedules_agree(kind):
    for step in range(0, 120, 7):
        args = (step, 1e-3, 1e-4, 10, 100, kind)
        assert lr_at(*args) == fast_lr_at(*args)
    assert fast_lr_at(99, 1e-3, 1e-4, 10, 100, "cosine") == pytest.approx(1e-4)
    assert fast_lr_at(0, 1e-3, 1e-4, 10, 100, "cosine") == pytest.approx(1e-4)


def test_reference_training_matches_fast_trainer(tmp_path):
    torch.set_num_threads(1)
    tokens = (np.arange(3000) * 7) % 97  # learnable: each token fixes the next
    cfg = TrainConfig(
        out_dir=str(tmp_path), model={"preset": "gpt-tiny"}, seq_len=12, batch_size=3,
        grad_accum_steps=2, max_steps=20, warmup_steps=4, lr=1e-2, min_lr=1e-3, weight_decay=0.1,
        beta1=0.9, beta2=0.95, grad_clip=0.5, dtype="float64", eval_interval=1000,
        save_interval=1000, progress=False, seed=3,
    )  # fmt: skip
    fast = Trainer(cfg, tokens, tokens)
    init = {k: v.detach().numpy().copy() for k, v in fast.model.state_dict().items()}
    ref = ReferenceGPT(fast.model_cfg, init)
    fast.fit()
    settings = TrainSettings(steps=20, seq_len=12, batch_size=3, grad_accum=2, lr=1e-2, min_lr=1e-3,
                             warmup_steps=4, max_steps=20, weight_decay=0.1, betas=(0.9, 0.95),
                             grad_clip=0.5, seed=3)  # fmt: skip
    ref_losses = train_gpt(ref, tokens, settings)
    fast_losses = [r["loss"] for r in fast.history]
    # float64 on both sides; the only differences are summation orders (u = 1.1e-16 per op).
    # Measured after 20 AdamW steps: losses agree to ~1e-15 relative, parameters to 1.2e-12 of each
    # tensor's largest entry, 6e-14 absolute at worst (the attention bias, whose key part has a
    # gradient of exactly zero in exact arithmetic: it moves by rounding noise that Adam divides
    # by sqrt(v) + 1e-8). rtol 1e-10 with atol 1e-12 is 17x above the worst entry, and a 1e-6
    # relative error in any loss or parameter entry of size >= 1e-6 fails.
    assert_close(np.array(fast_losses), np.array(ref_losses), rtol=1e-10, name="loss per step")
    assert ref_losses[-1] < ref_losses[0] - 0.1  # it did train
    for k, v in fast.model.state_dict().items():
        assert_close(v.numpy(), ref.params[k], rtol=1e-10, atol=1e-12, name=k)
