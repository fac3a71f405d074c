"""Behaviour of the data pipeline: token files, samplers and shards, MLM masking, collation."""

import json

import numpy as np
import pytest
import torch

from myllm101.data import batches, collate, mlm
from myllm101.data.tokens import TokenFile, tokenize_splits
from myllm101.fast.bpe import bpe_train

TOKENS = np.arange(1000, dtype=np.uint16) % 311


def test_tokenize_splits_round_trip_and_cache(tmp_path):
    text = {
        "train": "To be, or not to be: that is the question.\n" * 30,
        "val": "Ay, there's the rub.\n",
    }
    for s, t in text.items():
        (tmp_path / f"{s}.txt").write_text(t)
    tok = bpe_train(text["train"], 300)
    files = tokenize_splits(
        tmp_path, tok, tmp_path / "tok", splits=("train", "val"), show_progress=False
    )
    for s, f in files.items():
        assert f.tokens.tolist() == tok.encode(text[s])
        assert f.n_vocab == tok.n_vocab and f.tokens.dtype == np.uint16
    mtime = (tmp_path / "tok" / "train.bin").stat().st_mtime_ns
    tokenize_splits(tmp_path, tok, tmp_path / "tok", splits=("train",), show_progress=False)
    assert (tmp_path / "tok" / "train.bin").stat().st_mtime_ns == mtime  # cached, not re-encoded


def test_token_file_truncated_is_a_clear_error(tmp_path):
    p = tmp_path / "x.bin"
    np.arange(10, dtype=np.uint16).tofile(p)
    (tmp_path / "x.bin.json").write_text(json.dumps({"dtype": "uint16", "n_tokens": 12}))
    with pytest.raises(
        ValueError, match=r"expected 12 tokens of uint16 \(24 bytes\), got 20 bytes"
    ):
        TokenFile(p)


@pytest.mark.parametrize("cls", [batches.RandomWindows, batches.SequentialWindows])
def test_rank_shards_are_disjoint_and_make_the_global_batch(cls):
    one = cls(TOKENS, 8, 6, seed=1).batch(5)
    shards = [cls(TOKENS, 8, 2, seed=1, rank=r, world_size=3).batch(5) for r in range(3)]
    torch.testing.assert_close(torch.cat(shards), one, rtol=0, atol=0)


def test_windows_are_contiguous_slices():
    tokens = np.arange(1000, dtype=np.uint16)
    x = batches.RandomWindows(tokens, 8, 4, seed=0).batch(0).numpy()
    assert (np.diff(x, axis=1) == 1).all() and x.dtype == np.int64


def test_sequential_epoch_covers_every_window_once():
    s = batches.SequentialWindows(TOKENS, 10, 4, seed=0)
    starts = torch.cat([s.batch(i)[:, 0] for i in range(s.batches_per_epoch)])
    assert len(set(starts.tolist())) == len(starts) == 4 * (100 // 4)  # no repeats in an epoch


def test_bad_sampler_arguments():
    with pytest.raises(ValueError, match="expected at least seq_len=50 tokens, got 10"):
        batches.RandomWindows(np.zeros(10, np.uint16), 50, 2)
    with pytest.raises(ValueError, match="expected 0 <= rank < world_size=2, got 2"):
        batches.RandomWindows(TOKENS, 5, 2, rank=2, world_size=2)


def test_mask_tokens_rates_and_specials():
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(0, 1000, size=(64, 256)))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, :3] = True
    inputs, labels = mlm.mask_tokens(ids, special, np.random.default_rng(1), 1000, 1000)
    chosen = labels != -100
    assert not chosen[special].any()  # specials and padding are never chosen
    assert (labels[chosen] == ids[chosen]).all()
    frac = chosen[~special].float().mean().item()
    assert abs(frac - 0.15) < 0.01
    masked = (inputs[chosen] == 1000).float().mean().item()
    kept = (inputs[chosen] == ids[chosen]).float().mean().item()
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1 - 0.001) < 0.02  # random may hit itself


def test_mlm_batches_pad_mask_and_buckets():
    sp = mlm.bert_specials(311)
    tokens = np.random.default_rng(0).integers(0, 311, size=5000)
    kw = dict(seq_len=32, specials=sp, vocab_size=311, seed=0, boundary_ids=[7, 8])
    b = mlm.MLMBatches(tokens, batch_size=8, **kw).batch(0)
    ids, mask, labels = b["input_ids"], b["attention_mask"], b["labels"]
    assert ids.shape == mask.shape == labels.shape and ids.shape[1] <= 32
    assert (ids[mask == 0] == sp.pad).all() and (labels[mask == 0] == -100).all()
    assert (ids[:, 0] == sp.cls).all() and (labels[:, 0] == -100).all()
    # bucketing: fewer padding tokens per batch on average
    plain = mlm.MLMBatches(tokens, batch_size=8, **kw)
    bucketed = mlm.MLMBatches(tokens, batch_size=8, bucket=True, **kw)
    pads = [
        sum(int((m.batch(i)["attention_mask"] == 0).sum()) for i in range(10))
        for m in (plain, bucketed)
    ]
    assert pads[1] < pads[0]
    # shards of the global batch
    one = mlm.MLMBatches(tokens, batch_size=8, **kw).batch(3)
    two = [
        mlm.MLMBatches(tokens, batch_size=4, rank=r, world_size=2, **kw).batch(3) for r in (0, 1)
    ]
    for k in one:
        got = torch.cat([torch.nn.functional.pad(t[k], (0, one[k].shape[1] - t[k].shape[1]),
                                                 value=sp.pad if k == "input_ids" else (-100 if k == "labels" else 0))
                         for t in two])  # fmt: skip
        torch.testing.assert_close(got, one[k], rtol=0, atol=0)


def test_collate_classification():
    b = collate.collate_classification([([5, 6, 7], 1), ([8], 0)], pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b["labels"].tolist() == [1, 0]
    s = collate.collate_sft([([5, 6], [7, 8]), ([1], [2])], pad_id=0)
    assert s["labels"].tolist() == [[-100, -100, 7, 8], [-100, 2, -100, -100]]
    with pytest.raises(ValueError, match="expected at least one sequence"):
        collate.pad_to_longest([], 0)
