"""Collating variable-length examples into padded torch batches (classification, SFT).

Right padding; ``attention_mask`` is 1 on real tokens. Labels use -100 where there is no target,
which ``fast.loss.cross_entropy`` skips. Equal to ``reference/data.py``'s NumPy twins.

    collate_classification([([5, 6, 7], 1), ([8], 0)], pad_id=0)
        -> input_ids [[5, 6, 7], [8, 0, 0]], attention_mask [[1, 1, 1], [1, 0, 0]], labels [1, 0]
    collate_sft([([5, 6], [7, 8])], pad_id=0) -> labels [[-100, -100, 7, 8]]
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def pad_to_longest(seqs, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> ids (B, T) int64, attention_mask (B, T) int64; T = the longest sequence."""
    if not seqs:
        raise ValueError("seqs: expected at least one sequence, got none")
    lengths = torch.tensor([len(s) for s in seqs])
    T = int(lengths.max())
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()  # (B, T)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.int64)
    flat = torch.tensor([t for s in seqs for t in s], dtype=torch.int64)
    ids[mask.bool()] = flat  # row-major order of the mask = the sequences concatenated
    return ids, mask


def collate_classification(examples, pad_id: int, max_len: int | None = None) -> dict:
    """[(ids, label), ...] -> {input_ids, attention_mask, labels (B,)}; cut to max_len."""
    seqs = [list(ids)[:max_len] if max_len else list(ids) for ids, _ in examples]
    ids, mask = pad_to_longest(seqs, pad_id)
    labels = torch.tensor([int(label) for _, label in examples], dtype=torch.int64)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def collate_sft(examples, pad_id: int, max_len: int | None = None) -> dict:
    """[(prompt_ids, response_ids), ...] -> {input_ids, attention_mask, labels}: labels are -100
    on the prompt and the padding, so the loss is the response's only."""
    seqs, label_rows = [], []
    for prompt, response in examples:
        seq, lab = list(prompt) + list(response), [IGNORE_INDEX] * len(prompt) + list(response)
        seqs.append(seq[:max_len] if max_len else seq)
        label_rows.append(lab[:max_len] if max_len else lab)
    ids, mask = pad_to_longest(seqs, pad_id)
    labels, _ = pad_to_longest(label_rows, IGNORE_INDEX)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
