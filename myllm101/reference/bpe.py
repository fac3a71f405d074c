"""Byte-level BPE (Sennrich et al., 2016; byte-level as in GPT-2), the way GPT-2/GPT-4 tokenize.

A vocabulary is a dict ``mergeable_ranks: token bytes -> rank`` (the rank is also the token id):
the 256 single bytes plus every merged token, a lower rank meaning "merged earlier in training".
Special tokens (``<|endoftext|>``) are strings with ids of their own, never produced by merging.

Encoding a text:
  1. split the text at allowed special tokens; each special becomes its id,
  2. cut every other stretch into pieces with the split regex (words, numbers, punctuation, spaces),
  3. in each piece, start from single bytes and repeatedly merge the adjacent pair whose
     concatenation has the lowest rank, until no adjacent pair is a token.
Step 3 is tiktoken's rule, and it reproduces the original GPT-2 encoder exactly.

Training (``bpe_train``) is the mirror image: count adjacent pairs over the pre-tokenized text,
merge the most frequent pair everywhere, give the new token the next rank, repeat.

This file is the slow, readable version; ``myllm101/fast/bpe.py`` has the same API and results.
Both validate their input with the same functions (``myllm101/checks/bpe.py``).
"""

from __future__ import annotations

from collections import Counter

import regex

from myllm101.bpe_patterns import GPT4_SPLIT_PATTERN, fix_surrogates
from myllm101.checks import expect_str
from myllm101.checks.bpe import (
    check_bpe_vocab,
    check_special_args,
    check_special_tokens,
    check_vocab_size,
    disallowed_special_error,
    expect_token_id,
)

# --------------------------------------------------------------------------------------------------
# small helpers


def get_stats(words: dict[tuple[bytes, ...], int]) -> Counter:
    """Count adjacent pairs, each word weighted by how often it occurs.

    {(b"a", b"b", b"a", b"b"): 1, (b"a", b"b"): 2} -> {(b"a", b"b"): 4, (b"b", b"a"): 1}
    """
    stats = Counter()
    for word, count in words.items():
        for pair in zip(word, word[1:]):
            stats[pair] += count
    return stats


def merge(word: tuple[bytes, ...], pair: tuple[bytes, bytes]) -> tuple[bytes, ...]:
    """Replace every occurrence of ``pair`` in ``word``, scanning left to right.

    (b"a", b"a", b"a", b"b"), (b"a", b"a") -> (b"aa", b"a", b"b")
    """
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])  # the pair becomes one token
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def best_pair(stats: Counter) -> tuple[bytes, bytes]:
    """The pair to merge next: the highest count; on a tie, the smallest (bytes_a, bytes_b).

    {(b"b", b"c"): 3, (b"a", b"b"): 3, (b"a", b"a"): 1} -> (b"a", b"b")
    """
    return min(stats, key=lambda pair: (-stats[pair], pair))


def split_specials(text: str, specials) -> list[str]:
    """Cut ``text`` at occurrences of the special-token strings, dropping them.

    "a<|x|>b", ["<|x|>"] -> ["a", "b"]
    """
    if not specials:
        return [text]
    # longest first, so that a special token that is a prefix of another never wins
    alternatives = "|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True))
    return regex.split(alternatives, text)


# --------------------------------------------------------------------------------------------------
# training


def bpe_train(
    text: str,
    vocab_size: int,
    pattern: str = GPT4_SPLIT_PATTERN,
    special_tokens=None,
    verbose: bool = False,
) -> Tokenizer:
    """Learn a byte-level BPE vocabulary of ``vocab_size`` tokens (special tokens included).

    ``special_tokens``: list of strings; they get the last ids, in the order given, and their
    occurrences in ``text`` are cut out before training (so "<|" is never learned from them).
    Ties between pairs with the same count go to the smallest (bytes_a, bytes_b), compared as bytes,
    which makes training deterministic (and the fast trainer reproduces it merge for merge).
    If the text runs out of pairs first, training stops early with a smaller vocabulary.
    """
    expect_str("text", text)
    specials = check_special_tokens(special_tokens)
    check_vocab_size(vocab_size, len(specials))
    compiled = regex.compile(pattern)

    # pre-tokenize: the text -> pieces; merges never cross a piece boundary
    pieces = [p for part in split_specials(text, specials) for p in compiled.findall(part)]
    # each distinct piece once, as a tuple of one-byte tokens, with its number of occurrences
    words = Counter(tuple(bytes([b]) for b in p.encode("utf-8")) for p in pieces)

    ranks = {bytes([b]): b for b in range(256)}  # every single byte is a token, rank = byte value
    n_target = vocab_size - len(specials)  # how many mergeable tokens we want
    while len(ranks) < n_target:
        stats = get_stats(words)  # count every adjacent pair in the (weighted) words
        if not stats:  # every word is a single token: nothing left to merge
            break
        pair = best_pair(stats)  # the most frequent pair (ties: smallest bytes)
        new_token = pair[0] + pair[1]  # the merged token is the concatenated bytes
        if new_token not in ranks:  # (rarely the same bytes arise from a different pair)
            ranks[new_token] = len(ranks)  # the next rank
        # replace the pair in every word; words that become equal are added up
        merged = Counter()
        for word, count in words.items():
            merged[merge(word, pair)] += count
        words = merged
        if verbose:
            print(
                f"merge {len(ranks) - 256}/{n_target - 256}: {pair[0]!r} + {pair[1]!r} -> "
                f"{new_token!r} (rank {ranks[new_token]}, {stats[pair]} occurrences)"
            )

    special_ids = {s: len(ranks) + i for i, s in enumerate(specials)}
    return Tokenizer(ranks, pattern, special_ids)


# --------------------------------------------------------------------------------------------------
# encoding one piece


def bpe_encode_piece(piece: bytes, ranks: dict[bytes, int]) -> tuple[int, ...]:
    """Token ids of one pre-tokenized piece: merge the lowest-rank adjacent pair until none is left.

    With ranks {b"a"..: byte, b"ab": 256, b"abc": 257}: b"abcd" -> (257, 100)
    (a,b,c,d) -> (ab,c,d) -> (abc,d): "bc" and "cd" are not tokens, "abcd" is not either.
    Quadratic in the piece length (every step rescans all pairs); fine for words.
    """
    if piece in ranks:  # the whole piece is a token (tiktoken's shortcut; kept for equal results)
        return (ranks[piece],)
    parts = [bytes([b]) for b in piece]  # start from single bytes
    while len(parts) > 1:
        # the adjacent pair whose concatenation has the lowest rank (leftmost on a tie)
        best_rank, best_i = None, None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (best_rank is None or rank < best_rank):
                best_rank, best_i = rank, i
        if best_rank is None:  # no adjacent pair is a token: done
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return tuple(ranks[p] for p in parts)


# --------------------------------------------------------------------------------------------------
# the tokenizer


def raise_if_disallowed(text: str, disallowed: set) -> None:
    if not disallowed:
        return
    alternatives = "|".join(regex.escape(s) for s in sorted(disallowed, key=len, reverse=True))
    found = regex.search(alternatives, text)
    if found:
        raise disallowed_special_error(found.group())


class Tokenizer:
    """A byte-level BPE tokenizer in tiktoken's representation (GPT-2, cl100k_base, o200k_base).

    mergeable_ranks: token bytes -> rank (= id); pattern: the pre-tokenization regex;
    special_tokens: special-token string -> id (ids not used by any rank).
    """

    def __init__(
        self,
        mergeable_ranks: dict[bytes, int],
        pattern: str,
        special_tokens: dict[str, int] | None = None,
        name: str = "custom",
    ):
        self._ranks, self._special = check_bpe_vocab(mergeable_ranks, special_tokens)
        self._pattern = pattern
        self._compiled = regex.compile(pattern)
        self._name = name
        # id -> bytes, for decoding (special tokens decode to their UTF-8 text)
        self._decoder = {rank: token for token, rank in self._ranks.items()}
        self._decoder.update({i: s.encode("utf-8") for s, i in self._special.items()})
        self._n_vocab = max(self._decoder) + 1

    # the read-only description of the vocabulary ------------------------------------------------
    @property
    def mergeable_ranks(self) -> dict[bytes, int]:
        return self._ranks

    @property
    def pattern(self) -> str:
        return self._pattern

    @property
    def special_tokens(self) -> dict[str, int]:
        return self._special

    @property
    def name(self) -> str:
        return self._name

    @property
    def n_vocab(self) -> int:
        """One more than the largest id (as in tiktoken; a vocabulary may have unused ids)."""
        return self._n_vocab

    def __repr__(self) -> str:
        return f"Tokenizer(name={self._name!r}, n_vocab={self.n_vocab})"

    # encoding ------------------------------------------------------------------------------------
    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of ``text`` with special tokens treated as plain text."""
        expect_str("text", text)
        ids = []
        for piece in self._compiled.findall(fix_surrogates(text)):  # 1. pre-tokenize
            ids.extend(bpe_encode_piece(piece.encode("utf-8"), self._ranks))  # 2. merge
        return ids

    def encode(self, text: str, allowed_special=set(), disallowed_special="all") -> list[int]:  # noqa: B006
        """Ids of ``text``. Special tokens in ``allowed_special`` ("all" or a set of names) become
        their ids; any in ``disallowed_special`` (default: every one not allowed) raises a
        ValueError naming it; special tokens in neither set are encoded as plain text.
        """
        expect_str("text", text)
        text = fix_surrogates(text)
        allowed, disallowed = check_special_args(allowed_special, disallowed_special, self._special)
        raise_if_disallowed(text, disallowed)
        if not allowed:
            return self.encode_ordinary(text)
        # a capturing group keeps the specials: "a<|x|>b" -> ["a", "<|x|>", "b"]
        alternatives = "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True))
        ids = []
        for i, part in enumerate(regex.split(f"({alternatives})", text)):
            if i % 2 == 1:  # odd positions hold the special tokens themselves
                ids.append(self._special[part])
            elif part:
                ids.extend(self.encode_ordinary(part))
        return ids

    # decoding ------------------------------------------------------------------------------------
    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token; ValueError naming the id and n_vocab if it has none."""
        token_id = expect_token_id(token_id, self.n_vocab, self._decoder.__contains__)
        return self._decoder[token_id]

    def decode_bytes(self, ids) -> bytes:
        """The concatenated bytes of the tokens (may end inside a multi-byte UTF-8 character)."""
        return b"".join(self.token_bytes(i) for i in ids)

    def decode(self, ids) -> str:
        """The text of the tokens. Bytes that are not valid UTF-8 (a token sequence cut inside a
        character, or an arbitrary one) become U+FFFD, like ``bytes.decode(errors="replace")``.
        """
        return self.decode_bytes(ids).decode("utf-8", errors="replace")
