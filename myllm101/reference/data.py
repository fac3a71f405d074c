"""Batching and masking in NumPy: the reference that ``myllm101/data`` (torch) must match exactly.

Every random choice comes from ``np.random.default_rng([seed, ...])`` with a key that names the
batch, so a batch is a pure function of (seed, batch index): resuming a run at step k needs no
sampler state, and rank r of w processes draws the same global batch and keeps its own slice.

    random_window_batch(tokens, seq_len=4, batch_size=2, seed=0, index=0)   -> (2, 4) windows
    sequential_window_batch(tokens, 4, 2, seed=0, index=0)                  -> epoch-ordered windows
    mask_tokens(ids, special, rng, mask_id=3, vocab_size=97)                 -> (inputs, labels)
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = -100  # label of a position with no target (cross_entropy skips it)


def _check_tokens(tokens, seq_len: int, batch_size: int) -> None:
    if tokens.ndim != 1:
        raise ValueError(f"tokens: expected a 1-D array, got shape {tuple(tokens.shape)}")
    if seq_len <= 0 or batch_size <= 0:
        raise ValueError(
            f"seq_len, batch_size: expected positive values, got {seq_len}, {batch_size}"
        )
    if len(tokens) < seq_len:
        raise ValueError(f"tokens: expected at least seq_len={seq_len} tokens, got {len(tokens)}")


def shard_rows(rows: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank r's disjoint slice of a global batch: rows [r*B, (r+1)*B) with B = len // world."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank: expected 0 <= rank < world_size={world_size}, got {rank}")
    if len(rows) % world_size:
        raise ValueError(f"global batch of {len(rows)} rows does not split over {world_size} ranks")
    per = len(rows) // world_size
    return rows[rank * per : (rank + 1) * per]


def random_window_starts(n_tokens: int, seq_len: int, global_batch: int, seed: int, index: int):
    """Batch ``index``'s window starts: uniform in [0, n_tokens - seq_len], (global_batch,)."""
    rng = np.random.default_rng([seed, index])
    return rng.integers(0, n_tokens - seq_len + 1, size=global_batch)


def windows(tokens, starts: np.ndarray, seq_len: int) -> np.ndarray:
    """tokens[s : s + seq_len] for each start s -> (len(starts), seq_len) int64."""
    idx = starts[:, None] + np.arange(seq_len)[None, :]  # (B, T)
    return np.asarray(tokens[idx], dtype=np.int64)


def random_window_batch(tokens, seq_len, batch_size, seed, index, rank=0, world_size=1):
    """Causal-LM batch ``index``: batch_size random windows of seq_len tokens for ``rank``.
    The model shifts labels itself, so the batch is both input_ids and labels."""
    _check_tokens(tokens, seq_len, batch_size)
    starts = random_window_starts(len(tokens), seq_len, batch_size * world_size, seed, index)
    return windows(tokens, shard_rows(starts, rank, world_size), seq_len)


def epoch_window_order(n_tokens: int, seq_len: int, seed: int, epoch: int, shuffle: bool = True):
    """Starts of the non-overlapping windows 0, T, 2T, ...; shuffled per epoch."""
    starts = np.arange(0, n_tokens - seq_len + 1, seq_len)
    if shuffle:
        starts = starts[np.random.default_rng([seed, epoch]).permutation(len(starts))]
    return starts


def sequential_window_batch(
    tokens, seq_len, batch_size, seed, index, rank=0, world_size=1, shuffle=True
):
    """Batch ``index`` of the epoch-by-epoch pass over non-overlapping windows; the last
    incomplete global batch of an epoch is dropped. Epoch e = index // batches_per_epoch."""
    _check_tokens(tokens, seq_len, batch_size)
    global_batch = batch_size * world_size
    n_windows = (len(tokens) - seq_len) // seq_len + 1
    per_epoch = n_windows // global_batch
    if per_epoch == 0:
        raise ValueError(
            f"tokens: {len(tokens)} tokens make {n_windows} windows of {seq_len}, expected at "
            f"least one global batch of {global_batch}"
        )
    epoch, j = divmod(index, per_epoch)
    starts = epoch_window_order(len(tokens), seq_len, seed, epoch, shuffle)
    starts = starts[j * global_batch : (j + 1) * global_batch]
    return windows(tokens, shard_rows(starts, rank, world_size), seq_len)


# ---- BERT: packing, padding, bucketing, masking -------------------------------------------------


def pack_segments(segments, max_len: int, cls_id: int, sep_id: int) -> list[list[int]]:
    """Greedy packing: [CLS] seg [SEP] seg [SEP] ... while it fits max_len; a segment longer than
    max_len - 2 is cut into pieces. [[5, 6], [7], [8, 9, 10]], 6 -> [[C,5,6,S,7,S], [C,8,9,10,S]]"""
    if max_len < 3:
        raise ValueError(f"max_len: expected >= 3 ([CLS] token [SEP]), got {max_len}")
    pieces = []
    for seg in segments:
        seg = list(seg)
        for i in range(0, len(seg), max_len - 2):
            pieces.append(seg[i : i + max_len - 2])
    out, cur = [], [cls_id]
    for piece in pieces:
        if len(cur) + len(piece) + 1 > max_len:
            out.append(cur)
            cur = [cls_id]
        cur = cur + piece + [sep_id]
    if len(cur) > 1:
        out.append(cur)
    return out


def pad_to_longest(seqs, pad_id: int):
    """Right-pad to the longest -> ids (B, T) int64, attention_mask (B, T) int64 (1 = real)."""
    T = max(len(s) for s in seqs)
    ids = np.full((len(seqs), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), T), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask


def length_bucketed_batches(lengths, batch_size: int, rng, bucket_factor: int = 8):
    """Batches of indices with similar lengths (less padding): shuffle, cut into pools of
    batch_size * bucket_factor, sort each pool by length (stable), cut into batches, shuffle the
    batches. Incomplete batches are dropped."""
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    pool = batch_size * bucket_factor
    batches = []
    for p in range(0, len(order), pool):
        chunk = order[p : p + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        for b in range(0, len(chunk) - batch_size + 1, batch_size):
            batches.append(chunk[b : b + batch_size])
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def mask_tokens(ids, special_mask, rng, mask_id: int, vocab_size: int, mlm_probability=0.15):
    """BERT masking: each non-special token is chosen with probability mlm_probability; a chosen
    one becomes [MASK] (80%), a random id in [0, vocab_size) (10%) or stays (10%).
    special_mask: True where a token may never be chosen (CLS, SEP, PAD).
    Draws, in this order: u (B, T) choose, v (B, T) 80/10/10, random ids (B, T).
    -> (inputs, labels): labels = the original id where chosen, else -100."""
    u = rng.random(ids.shape)
    v = rng.random(ids.shape)
    random_ids = rng.integers(0, vocab_size, size=ids.shape)
    chosen = (u < mlm_probability) & ~special_mask
    labels = np.where(chosen, ids, IGNORE_INDEX)
    inputs = np.where(chosen & (v < 0.8), mask_id, ids)
    inputs = np.where(chosen & (v >= 0.8) & (v < 0.9), random_ids, inputs)
    return inputs.astype(np.int64), labels.astype(np.int64)


# ---- classification / SFT --------------------------------------------------------------------


def collate_sft(examples, pad_id: int, max_len: int | None = None):
    """(prompt_ids, response_ids) pairs -> ids, mask, labels (B, T): labels are -100 on the prompt
    and padding, so only the response is learned; right-padded, cut to max_len."""
    seqs, label_rows = [], []
    for prompt, response in examples:
        seq = list(prompt) + list(response)
        lab = [IGNORE_INDEX] * len(prompt) + list(response)
        if max_len is not None:
            seq, lab = seq[:max_len], lab[:max_len]
        seqs.append(seq)
        label_rows.append(lab)
    ids, mask = pad_to_longest(seqs, pad_id)
    labels = np.full(ids.shape, IGNORE_INDEX, dtype=np.int64)
    for i, lab in enumerate(label_rows):
        labels[i, : len(lab)] = lab
    return ids, mask, labels
