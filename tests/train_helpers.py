"""What the trainer and model tests share: one thread for tiny models, a tiny run config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from myllm101.train import TrainConfig

TOKENS = np.random.default_rng(0).integers(0, 97, size=4000)  # a toy corpus over 97 ids


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Import into a test module to run it on one thread: tiny models run ops of a few hundred
    elements, where a second intra-op thread only adds synchronisation (on a busy 2-core
    machine it made overfit loops ~50x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def config(tmp_path, **kw) -> TrainConfig:
    """A tiny GPT run in ``tmp_path/run`` (12 steps of 4 x 16 tokens, float32, no progress bar)."""
    base = dict(
        out_dir=str(tmp_path / "run"), model={"preset": "gpt-tiny"}, seq_len=16, batch_size=4,
        max_steps=12, warmup_steps=3, eval_interval=100, eval_batches=2, save_interval=100,
        dtype="float32", progress=False, log_interval=1, lr=3e-3,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def losses(trainer) -> list[float]:
    return [r["loss"] for r in trainer.history]
