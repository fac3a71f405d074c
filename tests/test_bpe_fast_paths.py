"""The fast BPE's speed paths each give exactly the reference's result (no timings here).

- merging one piece: ``merge_loop``, ``merge_heap`` (also from a half-merged state),
  ``merge_batched`` (with its cut-short steps and its hand-over to the heap) and ``merge_many``,
  each forced, against ``reference.bpe_encode_piece`` on arbitrary and trained rank tables; the
  one-character-repeated-1M-times piece against tiktoken;
- pre-tokenizing with Python's ``re`` (``bpe_split``): the same pieces as ``regex`` on every BMP
  character in context, and on random text;
- encoding: warm, partly warm and cold caches, and the batched merging of a text's new pieces;
- training: the word counts of several processes, and so the merges, equal one process's.
"""

from __future__ import annotations

import random
import re

import pytest
import regex
from hypothesis import given
from hypothesis import strategies as st

from myllm101 import bpe_patterns
from myllm101.fast import bpe as fast
from myllm101.fast import bpe_merge, bpe_split
from myllm101.reference import bpe as ref
from myllm101.tokenizer.pretrained import load_pretrained

PATTERNS = list(bpe_patterns.SPLIT_PATTERNS.values())

# ---------------------------------------------------------------------------------------------
# merging one piece


def random_ranks(seed: int, alphabet: bytes, n_tokens: int) -> dict[bytes, int]:
    """An arbitrary rank table: the 256 bytes in shuffled order, then random strings over
    ``alphabet`` with random distinct ranks (often below their parts' ranks, unlike a trained
    table: the cases where batching must cut a step short)."""
    rng = random.Random(seed)
    ids = rng.sample(range(4 * (256 + n_tokens)), 256 + n_tokens)
    ranks = {bytes([b]): ids[b] for b in range(256)}
    for rank in ids[256:]:
        token = bytes(rng.choice(alphabet) for _ in range(rng.randint(2, 6)))
        ranks.setdefault(token, rank)
    return ranks


def merge_by_every_path(piece: bytes, ranks: dict[bytes, int]) -> dict[str, tuple[int, ...]]:
    pair_ranks = bpe_merge.PairRanks(ranks)
    return {
        "loop": bpe_merge.merge_loop(piece, ranks),
        "heap": bpe_merge.merge_heap(piece, ranks),
        "batched": bpe_merge.merge_batched(piece, ranks, pair_ranks),
        "many": bpe_merge.merge_many([piece], pair_ranks)[0],
    }


@given(
    seed=st.integers(0, 10**6),
    alphabet=st.sampled_from([b"a", b"ab", b"abc", b"abcd", b"ab c"]),
    n_tokens=st.integers(1, 60),
    data=st.data(),
)
def test_every_merge_path_equals_the_reference_on_arbitrary_tables(seed, alphabet, n_tokens, data):
    ranks = random_ranks(seed, alphabet, n_tokens)
    piece = data.draw(st.binary(min_size=2, max_size=300).map(lambda b: bytes(alphabet[x % len(alphabet)] for x in b)))  # fmt: skip
    expected = ref.bpe_encode_piece(piece, ranks)
    if piece in ranks:  # the whole-piece shortcut comes before any merging (the paths skip it)
        assert bpe_merge.bpe_encode_piece(piece, ranks) == expected
        return
    for path, ids in merge_by_every_path(piece, ranks).items():
        assert ids == expected, path
    assert bpe_merge.bpe_encode_piece(piece, ranks) == expected
    # several pieces side by side in merge_many's arrays: no merge crosses from one to the next
    batch = [p for p in (piece[:5], piece, piece[::-1], piece[1:]) if len(p) > 1 and p not in ranks]
    got = bpe_merge.merge_many(batch, bpe_merge.PairRanks(ranks))
    assert got == [ref.bpe_encode_piece(p, ranks) for p in batch]


@pytest.fixture(scope="module")
def trained_ranks():
    """A real (trained) table: merges learned on varied text, no pattern (pieces of <= 40 chars)."""
    rng = random.Random(0)
    words = "the and thee thou o'er 1599 42 — ✓ aaaa    \n\n".split(" ")
    text = "".join(rng.choice(words) + rng.choice([" ", "  ", ", ", "\n"]) for _ in range(3000))
    return fast.bpe_train(text, 256 + 300, pattern=r"[\s\S]{1,40}").mergeable_ranks


@given(piece=st.text(alphabet="the o,a1\n—", min_size=2, max_size=400))
def test_every_merge_path_equals_the_reference_on_a_trained_table(piece, trained_ranks):
    data = piece.encode("utf-8")
    expected = ref.bpe_encode_piece(data, trained_ranks)
    if data not in trained_ranks:
        for path, ids in merge_by_every_path(data, trained_ranks).items():
            assert ids == expected, path


def test_batched_step_cut_short_by_a_lower_pair(monkeypatch):
    # "bb" (rank 1000) everywhere; merging it creates (a, bb) = "abb" with the LOWER rank 500,
    # which the sequential rule merges before the next "bb": the step must stop right there
    ranks = {bytes([b]): b for b in range(256)} | {b"bb": 1000, b"abb": 500}
    piece = b"abb" * 40
    expected = ref.bpe_encode_piece(piece, ranks)
    assert expected == (500,) * 40
    assert bpe_merge.merge_batched(piece, ranks) == expected
    monkeypatch.setattr(bpe_merge, "MAX_CUT_STEPS", 0)  # the heap takes over at the first cut
    assert bpe_merge.merge_batched(piece, ranks) == expected


def test_batched_step_cut_short_where_the_order_changes_the_result():
    # merging "ab" at 0 makes (ab, a) = "aba", ranked below "ab": it takes the "a" that the next
    # "ab" needed. Merging every "ab" in one step would give (ab, ab, ...) instead
    ranks = {bytes([b]): b for b in range(256)} | {b"ab": 1000, b"aba": 500}
    piece = b"ab" * 50
    expected = ref.bpe_encode_piece(piece, ranks)
    assert expected[:2] == (500, ranks[b"b"])
    assert bpe_merge.merge_batched(piece, ranks) == expected


def test_heap_from_a_half_merged_state_equals_from_bytes(trained_ranks):
    piece = ("thee and thou 1599 " * 12).encode()
    full = bpe_merge.merge_heap(piece, trained_ranks)
    assert full == ref.bpe_encode_piece(piece, trained_ranks)
    parts = [piece[i : i + 1] for i in range(len(piece))]
    for n_done in range(0, 60, 7):  # the reference's first merges, then the heap from there
        while len(parts) > len(piece) - n_done:
            pairs = [trained_ranks.get(a + b) for a, b in zip(parts, parts[1:])]
            k = min((r, k) for k, r in enumerate(pairs) if r is not None)[1]
            parts[k : k + 2] = [parts[k] + parts[k + 1]]
        starts = [0, *[len(b"".join(parts[:k])) for k in range(1, len(parts))]]
        assert bpe_merge.merge_heap(piece, trained_ranks, starts) == full, n_done


@pytest.fixture(scope="module")
def gpt2():
    return load_pretrained("gpt2")


def test_long_runs_use_numpy_and_match_the_heap(gpt2):
    ranks, pair_ranks = gpt2.mergeable_ranks, bpe_merge.PairRanks(gpt2.mergeable_ranks)
    for piece in [b"a" * 5000, b" " * 3000, b"12" * 2000, b"ab" * 1500 + b"c"]:
        assert bpe_merge._distinct_byte_pairs(piece) * bpe_merge.BATCHED_PER_PAIR <= len(piece)
        heap = bpe_merge.merge_heap(piece, ranks)
        assert bpe_merge.merge_batched(piece, ranks, pair_ranks) == heap
        assert bpe_merge.bpe_encode_piece(piece, ranks, pair_ranks) == heap


def test_one_character_a_million_times_matches_tiktoken(gpt2):
    """One 1M-byte piece: the benchmark's worst case (the rescanning merge would never finish;
    this takes ~1 s here, tiktoken ~0.3 s)."""
    tiktoken = pytest.importorskip("tiktoken")
    oracle = tiktoken.Encoding(
        name="gpt2-test",
        pat_str=gpt2.pattern,
        mergeable_ranks=gpt2.mergeable_ranks,
        special_tokens=gpt2.special_tokens,
    )
    text = "a" * 1_000_000
    assert gpt2.encode_ordinary(text) == oracle.encode_ordinary(text)


# ---------------------------------------------------------------------------------------------
# pre-tokenizing with Python's re


def test_translated_classes_hold_regexs_characters():
    bmp = bpe_split._bmp_string()
    classes = {m for p in PATTERNS for m in re.findall(r"\\p\{\w+\}|\\s", p)}
    assert {r"\p{L}", r"\p{N}", r"\s", r"\p{Lu}", r"\p{M}"} <= classes
    for cls in classes:
        members = bpe_split._members(cls)
        assert re.findall(f"[{members}]", bmp) == regex.findall(cls, bmp), cls
    for letter in "sdmtlvre":  # the case-insensitive contractions
        members = bpe_split._members(f"(?i){letter}")
        assert re.findall(f"[{members}]", bmp) == regex.findall(f"(?i){letter}", bmp), letter


@pytest.mark.parametrize("pattern", PATTERNS, ids=list(bpe_patterns.SPLIT_PATTERNS))
def test_re_pieces_equal_regex_pieces_for_every_bmp_character(pattern):
    chars = [chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF]
    # each character as a word, after a space, a letter, an apostrophe, before a digit, a newline
    text = "".join(f"'{c}a {c}{c}1\n{c}" for c in chars)
    assert bpe_split.split_bmp(pattern)(text) == regex.findall(pattern, text)


TRICKY = ["'s", "'LL", "'ſ", " ", "  ", "\n", "\r\n", "\t", " \n ", "123", "a1", "Hello",
          "ÉCOLE", "naïve", "CamelCase", "中文", "!!", "...", "\n/", "\u00a0", "\u3000", "٣٤",
          "\u2028", "K", "ǅ", "\u0345", "ß"]  # fmt: skip


@given(
    text=st.lists(
        st.one_of(
            st.sampled_from(TRICKY),
            st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)), max_size=5),
        ),
        max_size=40,
    ).map("".join)
)
def test_re_pieces_equal_regex_pieces_on_random_text(text):
    assert bpe_split.in_bmp(text)
    for pattern in PATTERNS:
        assert bpe_split.split_bmp(pattern)(text) == regex.findall(pattern, text)


def test_in_bmp_and_which_patterns_translate():
    assert bpe_split.in_bmp("") and bpe_split.in_bmp("abc") and bpe_split.in_bmp("é\uffff")
    assert not bpe_split.in_bmp("a😀b") and not bpe_split.in_bmp("\U00010000")
    assert bpe_split.split_bmp(r"\w+") is None  # not a shipped pattern: regex does the work
    with pytest.raises(ValueError, match=r"\\S inside a set"):
        bpe_split.translate(r"[\S]")


# ---------------------------------------------------------------------------------------------
# encoding: caches and the batched merging of new pieces


def test_warm_partly_warm_and_cold_encodes_agree(gpt2):
    fresh = fast.Tokenizer(gpt2.mergeable_ranks, gpt2.pattern, gpt2.special_tokens)
    reference = load_pretrained("gpt2", impl="reference")
    a = "To be, or not to be, that is the question:\n" * 20
    b = "Whether 'tis nobler in the mind to suffer 1599 slings 😀 and arrows\n"
    for text in (a, a, a + b, b + a, b):  # cold, warm, then texts with some new pieces
        assert fresh.encode_ordinary(text) == reference.encode_ordinary(text)


@pytest.mark.parametrize("many_from", [1, 10**9], ids=["numpy", "loop"])
def test_new_pieces_merged_together_or_one_by_one(many_from, gpt2, monkeypatch):
    monkeypatch.setattr(bpe_merge, "MANY_FROM", many_from)
    rng = random.Random(1)
    pieces = [bytes(rng.choice(b"etaoinshrd ,.1") for _ in range(rng.randint(1, 45))) for _ in range(400)]  # fmt: skip
    got = bpe_merge.encode_pieces(pieces, gpt2.mergeable_ranks, bpe_merge.PairRanks(gpt2.mergeable_ranks))  # fmt: skip
    assert got == [ref.bpe_encode_piece(p, gpt2.mergeable_ranks) for p in pieces]


# ---------------------------------------------------------------------------------------------
# training in several processes


def toy_text(seed: int, n: int) -> str:
    rng = random.Random(seed)
    words = "the and thee thou o'er 'tis 1599 café naïve — ✓ 😀 <|endoftext|>".split()
    seps = [" "] * 8 + ["\n", "\n\n", "  ", " \n", ":\n/", ".\n"]
    return "".join(rng.choice(words) + rng.choice(seps) for _ in range(n))


@pytest.mark.parametrize("pattern", PATTERNS + [r"\S+|\s+"], ids=[*bpe_patterns.SPLIT_PATTERNS, "custom"])  # fmt: skip
@pytest.mark.parametrize("head_start", [0, 4000])
def test_shares_hold_the_same_pieces(pattern, head_start):
    parts = regex.split(r"<\|endoftext\|>", toy_text(3, 3000))
    shares = fast._shares(parts, pattern, 3, head_start)
    assert 1 <= len(shares) <= 3
    assert "".join(map("".join, shares)) == "".join(parts)
    if pattern in bpe_patterns.SPLIT_PATTERNS.values():  # cut anywhere safe: sizes near targets
        sizes = [sum(map(len, share)) for share in shares]
        assert len(sizes) == 3
        assert abs(sizes[0] - sizes[1] - head_start) < 200 and abs(sizes[1] - sizes[2]) < 200
    counts = bpe_split.Counter()
    for share in shares:
        counts.update(bpe_split.count_pieces(pattern, share))
    assert counts == bpe_split.count_pieces(pattern, parts)


@pytest.mark.parametrize("pattern", [bpe_patterns.GPT4_SPLIT_PATTERN, r"\S+|\s+"], ids=["gpt4", "custom"])  # fmt: skip
def test_training_in_two_processes_learns_the_same_merges(pattern, monkeypatch):
    monkeypatch.setattr(fast, "PARALLEL_FROM", 1000)  # a small text, split across processes
    monkeypatch.setattr(fast, "HEAD_START", 100)
    started = []
    start = fast.count_pieces_elsewhere
    monkeypatch.setattr(fast, "count_pieces_elsewhere", lambda *a: started.append(a) or start(*a))
    text = toy_text(4, 2000)
    kwargs = dict(pattern=pattern, special_tokens=["<|endoftext|>"])
    one = fast.bpe_train(text, 256 + 80, workers=1, **kwargs)
    assert not started
    two = fast.bpe_train(text, 256 + 80, workers=2, **kwargs)
    assert len(started) == 1  # one more process counted a share
    assert one.mergeable_ranks == two.mergeable_ranks
    assert one.mergeable_ranks == ref.bpe_train(text, 256 + 80, **kwargs).mergeable_ranks


def test_training_workers_must_be_a_positive_int():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match=rf"workers: expected an int >= 1, got {bad!r}"):
            fast.bpe_train("abc abc", 260, workers=bad)
    assert 1 <= fast.default_workers() <= 4


def test_a_failing_counting_process_raises_with_its_error():
    wait = bpe_split.count_pieces_elsewhere("(", ["x"])  # the worker cannot compile "("
    with pytest.raises(RuntimeError, match=r"failed \(exit 1\):\n(.|\n)*missing \)"):
        wait()
