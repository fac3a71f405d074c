"""Masked-LM batches for BERT: segment packing, padding to the longest, length bucketing, masking.

    seqs = pack_segments(segments, max_len=128, cls_id=C, sep_id=S)   # [C, a.., S, b.., S], ...
    ids, mask = pad_to_longest(seqs[:8], pad_id=P)                      # (8, T) each
    inputs, labels = mask_tokens(ids, special, rng, mask_id=M, vocab_size=V)   # 15%, 80/10/10

Random draws come from ``np.random.Generator`` in the same order as ``reference/data.py`` (the
test checks equality); the tensor work is torch. ``MLMBatches.batch(i)`` is a pure function of
(seed, i), like the causal-LM samplers in batches.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from myllm101.data.collate import IGNORE_INDEX, pad_to_longest


@dataclass(frozen=True)
class SpecialIds:
    """BERT's special tokens. ``bert_specials(n)`` puts them right after a vocabulary of n ids."""

    pad: int
    cls: int
    sep: int
    mask: int


def bert_specials(n_vocab: int) -> SpecialIds:
    return SpecialIds(pad=n_vocab, cls=n_vocab + 1, sep=n_vocab + 2, mask=n_vocab + 3)


def pack_segments(segments, max_len: int, cls_id: int, sep_id: int) -> list[list[int]]:
    """Greedy: [CLS] seg [SEP] seg [SEP] ... while it fits max_len; a segment longer than
    max_len - 2 is cut. [[5, 6], [7], [8, 9, 10]], 6 -> [[C, 5, 6, S, 7, S], [C, 8, 9, 10, S]]"""
    if max_len < 3:
        raise ValueError(f"max_len: expected >= 3 ([CLS] token [SEP]), got {max_len}")
    out, cur = [], [cls_id]
    for seg in segments:
        seg = list(seg)
        for i in range(0, len(seg), max_len - 2):
            piece = seg[i : i + max_len - 2]
            if len(cur) + len(piece) + 1 > max_len:
                out.append(cur)
                cur = [cls_id]
            cur = cur + piece + [sep_id]
    if len(cur) > 1:
        out.append(cur)
    return out


def split_segments(tokens: np.ndarray, boundary_ids) -> list[np.ndarray]:
    """Cut a token stream after every token in ``boundary_ids`` (e.g. ids containing "\\n\\n")."""
    ends = np.flatnonzero(np.isin(tokens, np.asarray(sorted(boundary_ids), dtype=np.int64))) + 1
    return [s for s in np.split(np.asarray(tokens, dtype=np.int64), ends) if len(s)]


def length_bucketed_batches(lengths, batch_size: int, rng, bucket_factor: int = 8):
    """Index batches of similar lengths: shuffle, cut into pools of batch_size * bucket_factor,
    sort each pool by length (stable), cut into batches, shuffle the batches; drop incomplete."""
    lengths = torch.as_tensor(np.asarray(lengths))
    order = torch.from_numpy(rng.permutation(len(lengths)))
    pool = batch_size * bucket_factor
    batches = []
    for p in range(0, len(order), pool):
        chunk = order[p : p + pool]
        chunk = chunk[torch.sort(lengths[chunk], stable=True).indices]
        batches += [
            chunk[b : b + batch_size] for b in range(0, len(chunk) - batch_size + 1, batch_size)
        ]
    return [batches[i] for i in rng.permutation(len(batches))]


def mask_tokens(ids: torch.Tensor, special_mask: torch.Tensor, rng, mask_id: int, vocab_size: int,
                mlm_probability: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Each non-special token is chosen with probability mlm_probability; a chosen token becomes
    [MASK] (80%), a random id in [0, vocab_size) (10%) or stays itself (10%).
    -> (inputs, labels), labels = the original id where chosen, -100 elsewhere."""
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_probability: expected a value in (0, 1), got {mlm_probability}")
    shape = tuple(ids.shape)
    u = torch.from_numpy(rng.random(shape)).to(ids.device)  # which tokens are chosen
    v = torch.from_numpy(rng.random(shape)).to(ids.device)  # what a chosen token becomes
    random_ids = torch.from_numpy(rng.integers(0, vocab_size, size=shape)).to(ids.device)
    chosen = (u < mlm_probability) & ~special_mask
    labels = torch.where(chosen, ids, IGNORE_INDEX)
    inputs = torch.where(chosen & (v < 0.8), mask_id, ids)
    inputs = torch.where(chosen & (v >= 0.8) & (v < 0.9), random_ids, inputs)
    return inputs, labels


class MLMBatches:
    """BERT batches from a token stream: segments (split after ``boundary_ids``, or fixed chunks)
    packed into sequences of <= seq_len, one shuffled (optionally length-bucketed) pass per epoch.
    Batch i: the global batch is padded and masked as one (so ranks' shards are the one-process
    batch), rank r keeps its rows, trimmed to its longest."""

    def __init__(self, tokens, seq_len: int, batch_size: int, specials: SpecialIds,
                 vocab_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 boundary_ids=None, mlm_probability: float = 0.15, bucket: bool = False,
                 device="cpu"):  # fmt: skip
        tokens = np.asarray(tokens.tokens if hasattr(tokens, "tokens") else tokens)
        if boundary_ids:
            segments = split_segments(tokens, boundary_ids)
        else:
            segments = [tokens[i : i + seq_len - 2] for i in range(0, len(tokens), seq_len - 2)]
        self.seqs = pack_segments(segments, seq_len, specials.cls, specials.sep)
        self.lengths = np.array([len(s) for s in self.seqs])
        self.specials, self.vocab_size, self.seed = specials, vocab_size, seed
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.global_batch = batch_size * world_size
        self.mlm_probability, self.bucket, self.device = mlm_probability, bucket, device
        self.batches_per_epoch = len(self.seqs) // self.global_batch
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"tokens: {len(self.seqs)} packed sequences, expected at least one global batch "
                f"of {self.global_batch}"
            )
        self._epoch, self._batches = -1, None

    def _epoch_batches(self, epoch: int):
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            if self.bucket:
                self._batches = length_bucketed_batches(self.lengths, self.global_batch, rng)
            else:
                order = torch.from_numpy(rng.permutation(len(self.seqs)))
                self._batches = list(order.split(self.global_batch))[: self.batches_per_epoch]
            self._epoch = epoch
        return self._batches

    def batch(self, index: int) -> dict:
        epoch, j = divmod(index, self.batches_per_epoch)
        batches = self._epoch_batches(epoch)
        rows = batches[j % len(batches)]
        sp = self.specials
        ids, mask = pad_to_longest([self.seqs[int(i)] for i in rows], sp.pad)
        special = (ids == sp.pad) | (ids == sp.cls) | (ids == sp.sep)
        rng = np.random.default_rng([self.seed, index, 1])
        inputs, labels = mask_tokens(ids, special, rng, sp.mask, self.vocab_size,
                                     self.mlm_probability)  # fmt: skip
        r = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        inputs, mask, labels = inputs[r], mask[r], labels[r]
        T = int(mask.sum(1).max())  # this rank's longest row
        out = {"input_ids": inputs[:, :T], "attention_mask": mask[:, :T], "labels": labels[:, :T]}
        return {k: v.to(self.device) for k, v in out.items()}
