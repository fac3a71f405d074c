"""Causal-LM batches from a token array, as torch tensors; equal to ``reference/data.py``.

A batch is a pure function of (seed, index): both samplers draw from
``np.random.default_rng([seed, index or epoch])`` exactly as the reference does, so resuming at
step k is just asking for batch k, and ``rank`` r of ``world_size`` w keeps rows [r*B, (r+1)*B) of
the same global batch of w*B rows (disjoint shards; together they are the one-process batch).

    RandomWindows(tokens, seq_len=256, batch_size=16, seed=0).batch(i)      # (16, 256) int64
    SequentialWindows(tokens, 256, 16, seed=0, rank=1, world_size=2).batch(i)
"""

from __future__ import annotations

import numpy as np
import torch


def _as_tokens(tokens) -> np.ndarray:
    tokens = tokens.tokens if hasattr(tokens, "tokens") else tokens  # a TokenFile
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.numpy()
    if tokens.ndim != 1:
        raise ValueError(f"tokens: expected a 1-D array, got shape {tuple(tokens.shape)}")
    return tokens


class _Windows:
    def __init__(self, tokens, seq_len, batch_size, seed=0, rank=0, world_size=1, device="cpu"):
        self.tokens = _as_tokens(tokens)
        if seq_len <= 0 or batch_size <= 0:
            raise ValueError(
                f"seq_len, batch_size: expected positive values, got {seq_len}, {batch_size}"
            )
        if len(self.tokens) < seq_len:
            raise ValueError(
                f"tokens: expected at least seq_len={seq_len} tokens, got {len(self.tokens)}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank: expected 0 <= rank < world_size={world_size}, got {rank}")
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.rank, self.world_size, self.device = rank, world_size, torch.device(device)
        self.global_batch = batch_size * world_size

    def _gather(self, starts: np.ndarray) -> torch.Tensor:
        mine = starts[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        idx = mine[:, None] + np.arange(self.seq_len)[None, :]  # (B, T)
        x = torch.from_numpy(np.asarray(self.tokens[idx], dtype=np.int64))
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device)


class RandomWindows(_Windows):
    """Each batch: global_batch windows at uniform random starts in [0, n - seq_len]."""

    def batch(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, index])
        starts = rng.integers(0, len(self.tokens) - self.seq_len + 1, size=self.global_batch)
        return self._gather(starts)


class SequentialWindows(_Windows):
    """Epochs over the non-overlapping windows 0, T, 2T, ... (shuffled per epoch when
    ``shuffle``); each epoch's last incomplete global batch is dropped."""

    def __init__(self, *args, shuffle: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.shuffle = shuffle
        self.n_windows = (len(self.tokens) - self.seq_len) // self.seq_len + 1
        self.batches_per_epoch = self.n_windows // self.global_batch
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"tokens: {len(self.tokens)} tokens make {self.n_windows} windows of "
                f"{self.seq_len}, expected at least one global batch of {self.global_batch}"
            )
        self._epoch, self._order = -1, None

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:  # one permutation per epoch, cached
            starts = np.arange(0, self.n_windows * self.seq_len, self.seq_len)
            if self.shuffle:
                perm = np.random.default_rng([self.seed, epoch]).permutation(len(starts))
                starts = starts[perm]
            self._epoch, self._order = epoch, starts
        return self._order

    def batch(self, index: int) -> torch.Tensor:
        epoch, j = divmod(index, self.batches_per_epoch)
        order = self._epoch_order(epoch)
        return self._gather(order[j * self.global_batch : (j + 1) * self.global_batch])


SAMPLERS = {"random": RandomWindows, "sequential": SequentialWindows}
