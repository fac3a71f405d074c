"""Byte-level BPE: reference == fast == tiktoken (GPT-2, cl100k_base, o200k_base), and the two
trainers learn identical vocabularies.

tiktoken is the outside oracle, built offline from the same rank files (never get_encoding, which
downloads); separate tests check that our loaders read those files exactly as tiktoken's loaders do
and that our split patterns are tiktoken's strings. Token ids are integers: every comparison is
exact equality, no tolerance.
"""

from __future__ import annotations

import gzip
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import tiktoken
import tiktoken.load
from hypothesis import given, settings
from hypothesis import strategies as st

from myllm101 import bpe_patterns
from myllm101.fast import bpe as fast
from myllm101.reference import bpe as ref
from myllm101.tokenizer import pretrained
from myllm101.tokenizer.pretrained import PRETRAINED, load_pretrained, load_ranks
from parity_tests.helpers import examples

ROOT = Path(__file__).resolve().parents[1]
NAMES = tuple(PRETRAINED)  # gpt2, cl100k_base, o200k_base


def corpus_text(max_bytes: int | None = None) -> str:
    """The first ``max_bytes`` of the Shakespeare corpus (data/shakespeare/train.txt, written by
    ``make data``; MYLLM101_CORPUS may point elsewhere), or skip the test."""
    path = Path(os.environ.get("MYLLM101_CORPUS", ROOT / "data/shakespeare/train.txt"))
    if not path.is_file():
        pytest.skip(f"{path} not found: run `make data` to build the Shakespeare corpus")
    with open(path, "rb") as f:
        data = f.read() if max_bytes is None else f.read(max_bytes)
    return data.decode("utf-8", errors="ignore")  # a cut may end inside a character


@pytest.fixture(scope="module")
def encoders():
    """name -> (fast Tokenizer, reference Tokenizer, tiktoken.Encoding from the same files)."""
    out = {}
    for name in NAMES:
        f = load_pretrained(name)
        oracle = tiktoken.Encoding(
            name=name,
            pat_str=f.pattern,
            mergeable_ranks=f.mergeable_ranks,
            special_tokens=f.special_tokens,
        )
        out[name] = (f, load_pretrained(name, impl="reference"), oracle)
    return out


# ---------------------------------------------------------------------------------------------
# our files and patterns are tiktoken's


def test_patterns_and_specials_are_tiktokens(monkeypatch):
    # tiktoken_ext's constructors would download the ranks: stub the loaders, keep pattern/specials
    import tiktoken_ext.openai_public as openai_public

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", lambda *a, **k: {})
    monkeypatch.setattr(openai_public, "data_gym_to_mergeable_bpe_ranks", lambda *a, **k: {})
    for name, pattern in bpe_patterns.SPLIT_PATTERNS.items():
        spec = openai_public.ENCODING_CONSTRUCTORS[name]()
        assert spec["pat_str"] == pattern, name
        assert spec["special_tokens"] == PRETRAINED[name].special_tokens, name


def test_gpt2_loader_matches_tiktokens(monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # "" disables tiktoken's file cache
    spec = PRETRAINED["gpt2"]
    vocab, encoder = (pretrained.package_file(spec.package, spec.pip_name, f) for f in spec.files)
    expected = tiktoken.load.data_gym_to_mergeable_bpe_ranks(str(vocab), str(encoder))
    assert load_ranks("gpt2") == expected


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_tiktoken_file_loader_matches_tiktokens(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    spec = PRETRAINED[name]
    gz = pretrained.package_file(spec.package, spec.pip_name, spec.files[0])
    plain = tmp_path / f"{name}.tiktoken"
    plain.write_bytes(gzip.decompress(gz.read_bytes()))  # tiktoken's loader reads plain files
    expected = tiktoken.load.load_tiktoken_bpe(str(plain))
    assert load_ranks(name) == expected
    assert pretrained.load_tiktoken_file(plain) == expected  # plain and .gz both load


# ---------------------------------------------------------------------------------------------
# encoding == tiktoken


@pytest.mark.parametrize("name", NAMES)
def test_corpus_matches_tiktoken(name, encoders):
    f, r, oracle = encoders[name]
    text = corpus_text(300_000)
    expected = oracle.encode_ordinary(text)
    assert f.encode_ordinary(text) == expected
    assert f.encode(text) == expected  # the corpus holds no special tokens
    assert r.encode(text) == expected


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_whole_corpus_matches_tiktoken(name, encoders):
    # both implementations on all of train.txt (4.6 MB): the reference takes ~2 s per vocabulary
    # here (most Shakespeare words are one token, found by a single lookup before any merging)
    f, r, oracle = encoders[name]
    text = corpus_text()
    expected = oracle.encode_ordinary(text)
    assert f.encode_ordinary(text) == expected
    assert r.encode_ordinary(text) == expected


# building blocks that exercise every branch of the three split patterns
TRICKY = [
    "'s", "'LL", "'re", " 's", "'", "  ", "   ", "\n", "\n\n", " \n", "\r\n", "\t", " \t\n ",
    "123", "4567890", " 1", "Hello", " world", "CamelCase", "HTTPServer", "ÉCOLE", "naïve",
    "😀", "👍🏽", "中文", "!!", "...", "\n/", " /", ":\n\n", ".\n/x", "\u00a0", "\u3000", "٣٤",
    "<|endoftext|>", "<|fim_prefix|>", "<|endofprompt|>",
]  # fmt: skip
# Cn (unassigned in Python's Unicode tables) is left out: the Rust and Python regex engines may
# use different Unicode versions for code points assigned since; Cs (lone surrogates) has its test
unicode_chars = st.characters(exclude_categories=("Cs", "Cn"))
# up to 64 fragments: long enough for runs of whitespace / digits / punctuation to meet and for
# contractions and specials to land next to every other branch
texts = st.lists(
    st.one_of(st.sampled_from(TRICKY), st.text(unicode_chars, max_size=6)), max_size=64
).map("".join)


@given(text=texts)
def test_hypothesis_text_matches_tiktoken(text, encoders):
    for name in NAMES:
        f, r, oracle = encoders[name]
        expected = oracle.encode_ordinary(text)
        assert f.encode_ordinary(text) == expected, name
        assert r.encode_ordinary(text) == expected, name
        plain = oracle.encode(text, disallowed_special=())
        assert f.encode(text, disallowed_special=()) == plain, name
        assert r.encode(text, disallowed_special=()) == plain, name


@given(text=texts)
def test_allowed_special_matches_tiktoken(text, encoders):
    for name in NAMES:
        f, r, oracle = encoders[name]
        expected = oracle.encode(text, allowed_special="all")
        assert f.encode(text, allowed_special="all") == expected, name
        assert r.encode(text, allowed_special="all") == expected, name
        # one allowed, the others plain text
        some = {"<|endoftext|>"}
        expected = oracle.encode(text, allowed_special=some, disallowed_special=())
        assert f.encode(text, allowed_special=some, disallowed_special=()) == expected, name
        assert r.encode(text, allowed_special=some, disallowed_special=()) == expected, name


@pytest.mark.parametrize("name", NAMES)
def test_disallowed_special_raises_like_tiktoken(name, encoders):
    f, r, oracle = encoders[name]
    text = "hello <|endoftext|> world"
    with pytest.raises(ValueError, match="disallowed special token"):
        oracle.encode(text)
    for enc in (f, r):
        with pytest.raises(ValueError, match=r"disallowed special token '<\|endoftext\|>'"):
            enc.encode(text)
        with pytest.raises(ValueError, match=r"'<\|endoftext\|>'"):
            enc.encode(text, allowed_special=set(), disallowed_special={"<|endoftext|>"})
        eot = f.special_tokens["<|endoftext|>"]
        assert enc.encode(text, allowed_special={"<|endoftext|>"}) == oracle.encode(
            text, allowed_special={"<|endoftext|>"}
        )
        assert eot in enc.encode(text, allowed_special="all")
        assert eot not in enc.encode(text, disallowed_special=())
        assert enc.encode_ordinary(text) == oracle.encode_ordinary(text)


def test_lone_surrogates_like_tiktoken(encoders):
    f, r, oracle = encoders["cl100k_base"]
    for text in ["a\ud800b", "\udfff", "x\ud83d\ude00y"]:  # lone, lone, a valid pair
        assert f.encode(text) == r.encode(text) == oracle.encode(text)


# ---------------------------------------------------------------------------------------------
# decoding


@given(text=st.text(max_size=40))
def test_decode_inverts_encode(text, encoders):
    for name in NAMES:
        f, r, _ = encoders[name]
        ids = f.encode(text, allowed_special="all")
        assert f.decode(ids) == text
        assert r.decode(ids) == text
        # a cut anywhere (even inside a UTF-8 character) still joins back to the same bytes
        k = len(ids) // 2
        assert f.decode_bytes(ids[:k]) + f.decode_bytes(ids[k:]) == text.encode("utf-8")


@given(data=st.binary(max_size=40))
def test_arbitrary_bytes_round_trip(data, encoders):
    for name in NAMES:
        f, r, oracle = encoders[name]
        ids = [f.mergeable_ranks[bytes([b])] for b in data]  # one single-byte token per byte
        assert f.decode_bytes(ids) == r.decode_bytes(ids) == data
        assert f.decode_bytes(np.array(ids, dtype=np.int64)) == data
        assert oracle.decode_bytes(ids) == data
        # invalid UTF-8 becomes U+FFFD, as bytes.decode(errors="replace") and tiktoken.decode
        assert (
            f.decode(ids) == r.decode(ids) == oracle.decode(ids) == data.decode("utf-8", "replace")
        )
        for i in ids[:3]:
            assert f.token_bytes(i) == r.token_bytes(i) == oracle.decode_single_token_bytes(i)


# ---------------------------------------------------------------------------------------------
# merging one piece: the heap version == the rescanning version, on long pieces too


def toy_text(seed: int, n_words: int = 1500) -> str:
    """Shakespeare-flavoured text with digits, punctuation, odd whitespace and a few non-ASCII."""
    rng = random.Random(seed)
    words = (
        "the and to of I you my a that in is not with it me be his your this but he have "
        "thou thy thee lord king love what so will do shall good sir let o come now more "
        "Hamlet Romeo Juliet Macbeth O'er 'tis o'th' café naïve 1599 1623 42 — … ✓ 😀"
    ).split()
    seps = [" "] * 12 + [", ", ". ", "! ", "? ", ";\n", "\n", "\n\n", "  ", " \n", "\t", ":\n/"]
    return "".join(rng.choice(words) + rng.choice(seps) for _ in range(n_words))


@pytest.fixture(scope="module")
def toy_ranks():
    return fast.bpe_train(toy_text(0), 256 + 300, pattern=r"[\s\S]{1,40}").mergeable_ranks


@given(piece=st.text(alphabet="the o,\n", min_size=1, max_size=300))
def test_heap_merge_equals_rescanning_merge(piece, toy_ranks):
    data = piece.encode("utf-8")
    assert fast.bpe_encode_piece(data, toy_ranks) == ref.bpe_encode_piece(data, toy_ranks)


def test_long_pieces_match_tiktoken(encoders):
    for name in NAMES:
        f, r, oracle = encoders[name]
        for text in [" " * 3000, "1" * 2000, "!?" * 1500, "a" * 2500, "\n" * 2000 + "x"]:
            assert f.encode_ordinary(text) == oracle.encode_ordinary(text)
            part = text[:300] + text[-1]  # the reference is quadratic in the piece length
            assert r.encode_ordinary(part) == oracle.encode_ordinary(part)


# ---------------------------------------------------------------------------------------------
# training: fast == reference, merge for merge


def assert_same_tokenizer(a, b):
    assert a.mergeable_ranks == b.mergeable_ranks
    assert a.special_tokens == b.special_tokens
    assert a.pattern == b.pattern


def test_tie_break_is_highest_count_then_smallest_bytes():
    # "aaabdaaabac" as one piece: aa (4 times) first; then (a, b) and (aa, a) both occur twice
    # and b"a" < b"aa" picks (a, b); then (aa, ab) occurs twice
    for trainer in (ref.bpe_train, fast.bpe_train):
        tok = trainer("aaabdaaabac", 256 + 3, pattern=r"[\s\S]+")
        merged = sorted((r, t) for t, r in tok.mergeable_ranks.items() if r >= 256)
        assert merged == [(256, b"aa"), (257, b"ab"), (258, b"aaab")]


@pytest.mark.parametrize("pattern", list(bpe_patterns.SPLIT_PATTERNS.values()))
def test_trainers_agree_on_toy_text(pattern):
    text = toy_text(1)
    a = ref.bpe_train(text, 256 + 120, pattern=pattern, special_tokens=["<|endoftext|>"])
    b = fast.bpe_train(text, 256 + 120, pattern=pattern, special_tokens=["<|endoftext|>"])
    assert len(a.mergeable_ranks) == 256 + 119
    assert a.special_tokens == {"<|endoftext|>": 256 + 119}
    assert_same_tokenizer(a, b)
    assert a.encode(text) == b.encode(text)


def test_trainers_agree_on_corpus():
    text = corpus_text(6_000)
    assert_same_tokenizer(ref.bpe_train(text, 400), fast.bpe_train(text, 400))


@settings(max_examples=examples(15))
@given(
    text=st.text(st.sampled_from("aab bc\n'1é😀"), max_size=200),
    n_merges=st.integers(0, 40),
)
def test_trainers_agree_on_hypothesis_text(text, n_merges):
    a = ref.bpe_train(text, 256 + n_merges, pattern=bpe_patterns.GPT2_SPLIT_PATTERN)
    b = fast.bpe_train(text, 256 + n_merges, pattern=bpe_patterns.GPT2_SPLIT_PATTERN)
    assert_same_tokenizer(a, b)
    assert len(a.mergeable_ranks) <= 256 + n_merges  # fewer when the text runs out of pairs


def test_special_tokens_are_not_learned():
    text = "<|endoftext|>" * 50 + "ab ab ab"
    tok = fast.bpe_train(text, 256 + 10, special_tokens=["<|endoftext|>"])
    assert b"<|" not in tok.mergeable_ranks
    assert (
        tok.encode("ab<|endoftext|>", allowed_special="all")[-1]
        == tok.special_tokens["<|endoftext|>"]
    )
    assert_same_tokenizer(tok, ref.bpe_train(text, 256 + 10, special_tokens=["<|endoftext|>"]))


# ---------------------------------------------------------------------------------------------
# fast extras: encode_batch, encode_file


def test_encode_batch_equals_encode(encoders):
    f, _, _ = encoders["cl100k_base"]
    batch = [toy_text(s, 200) for s in range(6)] + ["", "<|endoftext|> x"]
    expected = [f.encode(t, allowed_special="all") for t in batch]
    assert f.encode_batch(batch, allowed_special="all") == expected
    assert f.encode_batch(batch, num_workers=2, allowed_special="all") == expected


@pytest.mark.parametrize("name", NAMES)
def test_encode_file_equals_encode_of_whole_text(name, encoders, tmp_path):
    f, _, oracle = encoders[name]
    # lone newlines (cut points) next to every pattern's newline rules: runs, \r\n, " \n", "\n/"
    text = "".join(toy_text(2, 3000)) + "end\n\n\n  \r\nx.\n/y\n" + "é" * 50 + "\nlast"
    src = tmp_path / "in.txt"
    src.write_bytes(text.encode("utf-8"))
    out = tmp_path / "tokens.bin"
    meta = f.encode_file(src, out, chunk_bytes=777, show_progress=False)  # many cuts
    dtype = np.uint16 if f.n_vocab <= 65536 else np.uint32
    tokens = np.fromfile(out, dtype=dtype)
    assert tokens.tolist() == f.encode(text) == oracle.encode_ordinary(text)
    sidecar = json.loads((tmp_path / "tokens.bin.json").read_text())
    assert sidecar == meta
    assert sidecar["dtype"] == np.dtype(dtype).name and sidecar["n_tokens"] == len(tokens)
    assert sidecar["tokenizer"] == name and sidecar["source"] == str(src)


def test_encode_file_on_corpus(encoders, tmp_path):
    f, _, _ = encoders["gpt2"]
    text = corpus_text(400_000)
    src = tmp_path / "corpus.txt"
    src.write_text(text, encoding="utf-8", newline="")
    f.encode_file(src, tmp_path / "t.bin", chunk_bytes=50_000, show_progress=False)
    assert np.fromfile(tmp_path / "t.bin", dtype=np.uint16).tolist() == f.encode(text)


def test_encode_file_with_special_tokens(encoders, tmp_path):
    f, _, oracle = encoders["o200k_base"]
    text = "first doc\n<|endoftext|>second doc\nmore\n<|endoftext|>third" * 40
    (tmp_path / "d.txt").write_text(text, encoding="utf-8")
    f.encode_file(tmp_path / "d.txt", tmp_path / "d.bin", chunk_bytes=64, show_progress=False,
                  allowed_special="all")  # fmt: skip
    got = np.fromfile(tmp_path / "d.bin", dtype=np.uint32).tolist()
    assert got == oracle.encode(text, allowed_special="all")
    with pytest.raises(ValueError, match="disallowed special token"):
        f.encode_file(tmp_path / "d.txt", tmp_path / "e.bin", show_progress=False)
