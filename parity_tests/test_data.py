"""reference/data.py (NumPy) == myllm101/data (torch), exactly, for the same seed."""

import numpy as np
import pytest
import torch

from myllm101.data import batches, collate, mlm
from myllm101.reference import data as ref

TOKENS = np.random.default_rng(123).integers(0, 500, size=1003).astype(np.uint16)


@pytest.mark.parametrize("seed,index", [(0, 0), (0, 7), (5, 123)])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_random_windows_match_reference(seed, index, world_size):
    for rank in range(world_size):
        fast = batches.RandomWindows(TOKENS, 17, 4, seed, rank, world_size).batch(index)
        want = ref.random_window_batch(TOKENS, 17, 4, seed, index, rank, world_size)
        np.testing.assert_array_equal(fast.numpy(), want)


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("index", [0, 3, 14, 15, 40])  # 58 windows / 4 = 14 batches per epoch
def test_sequential_windows_match_reference(shuffle, index):
    for rank in range(2):
        s = batches.SequentialWindows(TOKENS, 17, 2, 3, rank, 2, shuffle=shuffle)
        want = ref.sequential_window_batch(TOKENS, 17, 2, 3, index, rank, 2, shuffle=shuffle)
        np.testing.assert_array_equal(s.batch(index).numpy(), want)


def test_pack_and_pad_match_reference():
    rng = np.random.default_rng(0)
    segs = [list(rng.integers(0, 50, size=n)) for n in rng.integers(1, 30, size=20)]
    packed = mlm.pack_segments(segs, 16, 98, 99)
    assert packed == ref.pack_segments(segs, 16, 98, 99)
    ids, mask = collate.pad_to_longest(packed, 97)
    rids, rmask = ref.pad_to_longest(packed, 97)
    np.testing.assert_array_equal(ids.numpy(), rids)
    np.testing.assert_array_equal(mask.numpy(), rmask)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_tokens_matches_reference(seed):
    ids = torch.from_numpy(np.random.default_rng(9).integers(0, 100, size=(6, 40)))
    special = (ids % 7) == 0
    got = mlm.mask_tokens(ids, special, np.random.default_rng(seed), 101, 100, 0.3)
    want = ref.mask_tokens(ids.numpy(), special.numpy(), np.random.default_rng(seed), 101, 100, 0.3)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), w)


def test_length_buckets_match_reference():
    lengths = np.random.default_rng(1).integers(3, 60, size=101)
    got = mlm.length_bucketed_batches(lengths, 4, np.random.default_rng(7), bucket_factor=3)
    want = ref.length_bucketed_batches(lengths, 4, np.random.default_rng(7), bucket_factor=3)
    assert len(got) == len(want) == 100 // 4 - 0  # 9 pools of 12 (-> 3 batches each) minus tail
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), w)


def test_collate_sft_matches_reference():
    ex = [([5, 6], [7, 8, 9]), ([1, 2, 3, 4], [5]), ([9], [8])]
    got = collate.collate_sft(ex, 0, max_len=5)
    want = ref.collate_sft(ex, 0, max_len=5)
    for k, w in zip(("input_ids", "attention_mask", "labels"), want):
        np.testing.assert_array_equal(got[k].numpy(), w)
