"""embed(): length-sorted batches padded to their own longest text, vectors back in input order;
dtype "auto" picks bf16 only where it is native (both branches forced by MYLLM101_NATIVE_BF16).

Tolerances (float32): a sentence's vector alone, in a length-sorted batch and in a batch in input
order runs the same 6 float32 layers with other GEMM row counts and other attention key blocks, so
only the summation order differs; one float32 step of a component (|x| < 0.5) is <= 3e-8 and the
largest difference measured here is 1.8e-7 (64 Shakespeare sentences), so ATOL_FP32 = 1e-6 leaves
5x. A padding leak (attention over the [PAD] keys) moves components by 1e-2..1e-1: the test plants
it and sees the bound fail.

bf16 (weights and GEMM inputs rounded to 8 significant bits, ~2e-3 relative each; the residual
stream and norms stay float32): against the float32 vectors 1 - cos is 5e-5..7e-5 measured (64 and
256 Shakespeare sentences; for unit vectors 1 - cos = |a - b|**2 / 2, so |a - b| ~ 1e-2), and
between a bf16 vector alone and in a batch 1.5e-5. BF16_MAX_1_MINUS_COS = 1e-3 leaves 14x; weights
rounded to 4 significant bits (fp8 e4m3's precision) give 3.3e-3 and are rejected (planted below).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from myllm101 import device
from myllm101.hub import embed as embed_module
from myllm101.hub.embed import (
    embed,
    length_sorted_batches,
    load_embedder,
    mean_pool_normalize,
    model_dir,
)
from myllm101.reference.data import pad_to_longest
from parity_tests.helpers import assert_close

ATOL_FP32 = 1e-6
BF16_MAX_1_MINUS_COS = 1e-3

WORDS = ("the king speaks softly to his daughter while rain falls on old stone walls of a quiet "
         "castle and every servant listens, wondering whether peace can last through winter").split()  # fmt: skip
# lengths from 0 to 31 words in no order, a few repeated (ties keep their input order)
LENGTHS = [12, 3, 30, 1, 17, 8, 25, 0, 12, 5, 21, 31, 2, 9, 14, 27, 6, 19, 12, 4]
TEXTS = [" ".join(WORDS[(7 * i + j) % len(WORDS)] for j in range(n)) for i, n in enumerate(LENGTHS)]
TEXTS += ["?", "Héllo naïve café, 北京欢迎你 🙂", "[SEP] special tokens [CLS] in the text"]


@pytest.fixture(scope="module", autouse=True)
def minilm_installed():
    try:
        model_dir("minilm")
    except ValueError as e:
        pytest.skip(str(e))


@pytest.fixture(autouse=True)
def no_override(monkeypatch):
    monkeypatch.delenv(device.BF16_ENV, raising=False)


@pytest.fixture(scope="module")
def fp32_alone() -> np.ndarray:
    """Each text's float32 vector from a batch of its own (no padding at all)."""
    return np.concatenate([embed([t], dtype="fp32") for t in TEXTS])


@pytest.fixture(scope="module")
def fp32_batched() -> np.ndarray:
    return embed(TEXTS, dtype="fp32", batch_size=5)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)  # rows have unit length


def input_order_batches(texts: list[str], batch_size: int, mask_padding: bool = True) -> np.ndarray:
    """What embed() did before sorting: float32 batches in the given order, each padded to its
    longest text (with mask_padding=False, attention also sees the [PAD] keys: a planted bug)."""
    net, tokenizer, max_len = load_embedder("minilm", "fast")
    out = []
    for s in range(0, len(texts), batch_size):
        rows = [tokenizer.encode(t, max_length=max_len, truncation=True)["input_ids"]
                for t in texts[s : s + batch_size]]  # fmt: skip
        ids, mask = pad_to_longest(rows, tokenizer.pad_id)
        with torch.inference_mode():
            m = torch.from_numpy(mask) if mask_padding else None
            h = net.encode(torch.from_numpy(ids), m).numpy()  # (B, T, C)
        out.append(mean_pool_normalize(h, mask))
    return np.concatenate(out)


def test_length_sorted_batches_and_pad_to_longest():
    assert length_sorted_batches([3, 9, 5, 9], 2) == [[1, 3], [2, 0]]
    assert length_sorted_batches([4, 4, 4], 2) == [[0, 1], [2]]  # stable
    assert length_sorted_batches([], 8) == []
    ids, mask = pad_to_longest([[5, 6, 7], [5, 6]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [5, 6, 0]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert ids.dtype == mask.dtype == np.int64


def test_sorting_saves_padding():
    _, tokenizer, max_len = load_embedder("minilm", "fast")
    lengths = [len(tokenizer.encode(t, max_length=max_len, truncation=True)["input_ids"])
               for t in TEXTS[:20]]  # fmt: skip
    in_order = sum(max(lengths[s : s + 5]) * len(lengths[s : s + 5]) for s in range(0, 20, 5))
    batches = length_sorted_batches(lengths, 5)
    sorted_ = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert sorted_ < 0.75 * in_order, (sorted_, in_order, sum(lengths))


def test_vectors_come_back_in_input_order_and_padding_changes_nothing(fp32_alone, fp32_batched):
    batched, alone = fp32_batched, fp32_alone
    assert batched.shape == (len(TEXTS), 384) and batched.dtype == np.float32
    assert_close(batched, alone, rtol=0.0, atol=ATOL_FP32, name="sorted batches vs alone")
    in_order = input_order_batches(TEXTS, 5)
    assert_close(batched, in_order, rtol=0.0, atol=ATOL_FP32, name="sorted vs input-order batches")
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    # one batch, or each text in a batch of its own: the same vectors
    assert_close(embed(TEXTS, dtype="fp32", batch_size=64), alone, rtol=0.0, atol=ATOL_FP32)


def test_the_padding_bound_catches_a_padding_leak(fp32_alone):
    leaked = input_order_batches(TEXTS, 5, mask_padding=False)
    assert np.abs(leaked - fp32_alone).max() > 100 * ATOL_FP32
    with pytest.raises(AssertionError, match="not close"):
        assert_close(leaked, fp32_alone, rtol=0.0, atol=ATOL_FP32, name="leaked padding")


def test_empty_list_gives_no_vectors():
    for dtype in ("fp32", "bf16"):
        out = embed([], dtype=dtype)
        assert out.shape == (0, 384) and out.dtype == np.float32


def test_bad_input_names_expected_and_got():
    with pytest.raises(ValueError, match=r"texts\[1\]: expected str, got int"):
        embed(["a sentence", 3])
    with pytest.raises(ValueError, match=r"texts\[0\]: expected str, got bytes"):
        embed([b"bytes"])
    with pytest.raises(ValueError, match="expected a list of strings, got one str"):
        embed("a sentence")
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match=f"batch_size: expected a positive int, got {bad!r}"):
            embed(["x"], batch_size=bad)
    with pytest.raises(ValueError, match=r"dtype: expected one of \('auto', 'fp32', 'bf16'\), got"):
        embed(["x"], dtype="fp16")
    with pytest.raises(
        ValueError, match="reference runs float64; expected auto or fp32, got 'bf16'"
    ):
        embed(["x"], impl="reference", dtype="bf16")


@pytest.mark.parametrize("native", ["0", "1"])
def test_auto_dtype_is_bf16_only_where_native(monkeypatch, native):
    monkeypatch.setenv(device.BF16_ENV, native)
    monkeypatch.setattr(device, "_warned", set())
    expected = "bf16" if native == "1" else "fp32"
    auto = embed(TEXTS[:8], batch_size=4)  # dtype="auto" is the default
    assert np.array_equal(auto, embed(TEXTS[:8], batch_size=4, dtype=expected))
    other = embed(TEXTS[:8], batch_size=4, dtype="fp32" if native == "1" else "bf16")
    assert np.abs(auto - other).max() > 10 * ATOL_FP32  # the two dtypes really differ
    assert next(load_embedder("minilm", "fast")[0].parameters()).dtype == torch.float32


def test_bf16_vectors_are_close_to_fp32_in_any_batch(fp32_batched):
    bf16 = embed(TEXTS, dtype="bf16", batch_size=5)
    assert bf16.dtype == np.float32
    worst = 1 - cosines(bf16, fp32_batched).min()
    assert worst <= BF16_MAX_1_MINUS_COS, worst
    alone = np.concatenate([embed([t], dtype="bf16") for t in TEXTS])
    assert 1 - cosines(bf16, alone).min() <= BF16_MAX_1_MINUS_COS  # input order in bf16 too
    assert 1 - cosines(bf16, np.roll(alone, 1, axis=0)).max() > 0.01  # a shifted order is not


@pytest.mark.slow
def test_the_bf16_bound_rejects_fp8_precision_weights(monkeypatch, fp32_batched):
    """Weights rounded to 4 significant bits (fp8 e4m3's mantissa) before the bf16 cast: a
    precision bug the bound must catch."""
    net = copy.deepcopy(load_embedder("minilm", "fast")[0])
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith("layers.") and p.dim() == 2:  # the encoder's GEMM weights
                mantissa, exponent = torch.frexp(p)  # p = mantissa * 2**exponent, |m| in [0.5, 1)
                p.copy_(torch.ldexp(torch.round(mantissa * 16) / 16, exponent))
    monkeypatch.setattr(embed_module, "_bf16_model", lambda name: net.to(torch.bfloat16))
    worst = 1 - cosines(embed(TEXTS, dtype="bf16", batch_size=5), fp32_batched).min()
    assert worst > BF16_MAX_1_MINUS_COS, worst
