"""Byte-level BPE, fast: the same ``Tokenizer`` and ``bpe_train`` as ``reference/bpe.py``, same ids.

Pure Python + ``regex`` (+ NumPy for token files); no torch, no compiled tokenizer. What makes it
fast (read next to the reference to see each change):

- encode: a text is mostly repeated words, so each distinct pre-tokenized piece is merged once and
  cached (piece -> ids); a whole text is one C-level ``findall``, one set difference to find the
  pieces not seen yet, and one ``chain.from_iterable`` over cached tuples.
- merging one piece: a heap of (rank, start) over a linked list of parts instead of rescanning every
  pair after every merge: O(n log n) instead of O(n^2) for long pieces (runs of spaces, digits).
- training: each distinct word once with its count, pair counts updated only for the words a merge
  touches (an index pair -> words), the next pair taken from a heap with lazy invalidation.
- encode_batch / encode_file: several processes, and big files streamed in safe chunks.

Tie-breaks and the merge rule are exactly the reference's (and tiktoken's); parity_tests/test_bpe.py
checks ids against tiktoken for GPT-2, cl100k_base and o200k_base. Input validation is the
reference's too (``myllm101/checks.py``): the same checks raise the same errors.
"""

from __future__ import annotations

import codecs
import heapq
import json
import os
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from itertools import chain

import numpy as np
import regex

from myllm101.bpe_patterns import GPT4_SPLIT_PATTERN, SPLIT_PATTERNS, fix_surrogates
from myllm101.checks import (
    check_bpe_vocab,
    check_special_args,
    check_special_tokens,
    check_vocab_size,
    disallowed_special_error,
    expect_str,
    expect_token_id,
)


def _alternation(strings) -> str:
    """A regex matching any of ``strings``, longest first (a prefix never shadows a longer one)."""
    return "|".join(regex.escape(s) for s in sorted(strings, key=len, reverse=True))


# ----------------------------------------------------------------------------------------------
# merging one piece


def bpe_encode_piece(piece: bytes, ranks: dict[bytes, int]) -> tuple[int, ...]:
    """Token ids of one piece by lowest-rank-first merging (same result as the reference).

    Parts form a linked list over byte offsets (part i spans piece[i:nxt[i]]); the heap holds
    (rank, start, end) for candidate pairs; an entry is stale when its start part has died or now
    ends elsewhere. Ties pop the smallest start first: the leftmost pair, like tiktoken.
    """
    rank = ranks.get(piece)
    if rank is not None:  # the whole piece is one token (most words)
        return (rank,)
    n = len(piece)
    nxt = list(range(1, n + 1))  # start of the next part; n = none; -1 = merged away
    prv = list(range(-1, n - 1))  # start of the previous part; -1 = none
    heap = []
    for i in range(n - 1):
        rank = ranks.get(piece[i : i + 2])
        if rank is not None:
            heap.append((rank, i, i + 2))
    heapq.heapify(heap)
    get, pop, push = ranks.get, heapq.heappop, heapq.heappush
    while heap:
        rank, i, end = pop(heap)
        j = nxt[i]
        if j < 0 or j >= n or nxt[j] != end:  # stale: i merged away, or pair (i, j) changed
            continue
        nxt[i] = end  # i absorbs j
        nxt[j] = -1
        if end < n:
            prv[end] = i
            rank = get(piece[i : nxt[end]])  # the new pair (i, end)
            if rank is not None:
                push(heap, (rank, i, nxt[end]))
        p = prv[i]
        if p >= 0:
            rank = get(piece[p:end])  # the new pair (p, i)
            if rank is not None:
                push(heap, (rank, p, end))
    ids, i = [], 0
    while i < n:
        ids.append(ranks[piece[i : nxt[i]]])
        i = nxt[i]
    return tuple(ids)


# ----------------------------------------------------------------------------------------------
# the tokenizer

# where a text may be cut without changing its tokens, for the three shipped patterns: after a
# lone "\n" between non-space characters (not before "/": o200k keeps "\n/" after punctuation)
_SAFE_CUT = regex.compile(r"(?<=\S\n)(?=[^\s/])")
_SAFE_CUT_PATTERNS = frozenset(SPLIT_PATTERNS.values())


class Tokenizer:
    """A byte-level BPE tokenizer in tiktoken's representation (GPT-2, cl100k_base, o200k_base).

    mergeable_ranks: token bytes -> rank (= id); pattern: the pre-tokenization regex;
    special_tokens: special-token string -> id (ids not used by any rank).
    """

    max_cache = 1 << 20  # cached pieces before the cache is cleared (bounds memory on huge files)

    def __init__(
        self,
        mergeable_ranks: dict[bytes, int],
        pattern: str,
        special_tokens: dict[str, int] | None = None,
        name: str = "custom",
    ):
        self._ranks, self._special = check_bpe_vocab(mergeable_ranks, special_tokens)
        self._pattern = pattern
        self._findall = regex.compile(pattern).findall
        self._name = name
        self._n_vocab = max(max(self._ranks.values()), max(self._special.values(), default=-1)) + 1
        # id -> bytes as a list (None for unused ids): decoding is one C-level map
        self._decoder: list[bytes | None] = [None] * self._n_vocab
        for token, rank in self._ranks.items():
            self._decoder[rank] = token
        for s, i in self._special.items():
            self._decoder[i] = s.encode("utf-8")
        self._cache: dict[str, tuple[int, ...]] = {}  # piece -> ids
        self._splitters: dict[frozenset, object] = {}  # allowed specials -> compiled split

    def __reduce__(self):  # pickle the vocabulary, not the cache (for encode_batch's workers)
        return (type(self), (self._ranks, self._pattern, self._special, self._name))

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
    def _encode_plain(self, text: str) -> list[int]:
        pieces = self._findall(text)
        cache = self._cache
        if len(cache) > self.max_cache:
            cache.clear()
        ranks = self._ranks
        for piece in set(pieces).difference(cache):  # merge each new piece once
            cache[piece] = bpe_encode_piece(piece.encode("utf-8"), ranks)
        return list(chain.from_iterable(map(cache.__getitem__, pieces)))

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of ``text`` with special tokens treated as plain text."""
        expect_str("text", text)
        return self._encode_plain(fix_surrogates(text))

    def _splitter(self, allowed: frozenset):
        """text -> [plain, special, plain, ...] (a capturing group keeps the specials)."""
        split = self._splitters.get(allowed)
        if split is None:
            split = self._splitters[allowed] = regex.compile(f"({_alternation(allowed)})").split
        return split

    def encode(self, text: str, allowed_special=set(), disallowed_special="all") -> list[int]:  # noqa: B006
        """Ids of ``text``. Special tokens in ``allowed_special`` ("all" or a set of names) become
        their ids; any in ``disallowed_special`` (default: every one not allowed) raises a
        ValueError naming it; special tokens in neither set are encoded as plain text.
        """
        expect_str("text", text)
        text = fix_surrogates(text)
        allowed, disallowed = check_special_args(allowed_special, disallowed_special, self._special)
        if disallowed:
            # str.find per special token: a C substring search, faster than one regex pass
            hits = [(i, -len(s), s) for s in disallowed if (i := text.find(s)) >= 0]
            if hits:
                token = min(hits)[2]  # the first in the text (the longest at one position)
                raise disallowed_special_error(token)
        if not allowed:
            return self._encode_plain(text)
        if not any(s in text for s in allowed):
            return self._encode_plain(text)
        ids = []
        for i, part in enumerate(self._splitter(frozenset(allowed))(text)):
            if i % 2 == 1:  # odd positions hold the special tokens themselves
                ids.append(self._special[part])
            elif part:
                ids.extend(self._encode_plain(part))
        return ids

    def encode_batch(
        self,
        texts: list[str],
        num_workers: int = 1,
        allowed_special=set(),  # noqa: B006
        disallowed_special="all",
    ) -> list[list[int]]:
        """[encode(t) for t in texts], in ``num_workers`` processes when > 1."""
        texts = list(texts)
        if num_workers <= 1 or len(texts) < 2:
            return [self.encode(t, allowed_special, disallowed_special) for t in texts]
        chunksize = max(1, len(texts) // (4 * num_workers))
        with ProcessPoolExecutor(num_workers, initializer=_worker_init, initargs=(self,)) as pool:
            n = len(texts)
            args = ([allowed_special] * n, [disallowed_special] * n)
            return list(pool.map(_worker_encode, texts, *args, chunksize=chunksize))

    def encode_file(
        self,
        path,
        out_path,
        chunk_bytes: int = 1 << 22,
        show_progress: bool = True,
        allowed_special=set(),  # noqa: B006
        disallowed_special="all",
        errors: str = "strict",
    ) -> dict:
        """Stream the UTF-8 text file ``path`` into a flat token file ``out_path`` (np.uint16 when
        n_vocab <= 65536, else np.uint32) and write ``out_path + ".json"``:
        {dtype, n_tokens, n_vocab, tokenizer, source}. Returns that dict.

        The text is read ``chunk_bytes`` at a time and encoded up to the last safe cut (after a lone
        newline between non-space characters, where none of the three shipped patterns can match
        across), so the tokens equal ``encode`` of the whole text. With any other pattern the file
        is encoded in one piece. The bytes are decoded exactly (``\\r\\n``, lone ``\\r``, a BOM
        and NULs kept); invalid UTF-8 is a ValueError naming the file and the absolute byte offset
        of the first bad byte, or with ``errors="replace"`` U+FFFD, as
        ``bytes.decode("utf-8", errors="replace")`` of the whole file.
        """
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes: expected a positive value, got {chunk_bytes}")
        if not os.path.isfile(path):
            raise ValueError(f"path: expected an existing text file, got {str(path)!r}")
        from tqdm.auto import tqdm

        from myllm101.textio import check_errors, utf8_error

        dtype = np.uint16 if self.n_vocab <= 65536 else np.uint32
        can_cut = self._pattern in _SAFE_CUT_PATTERNS
        decoder = codecs.getincrementaldecoder("utf-8")(check_errors(errors))
        n_tokens, n_read, pending = 0, 0, ""
        bar = tqdm(
            total=os.path.getsize(path),
            unit="B",
            unit_scale=True,
            desc=f"encoding {os.path.basename(str(path))}",
            disable=not show_progress,
        )
        with open(path, "rb") as src, open(out_path, "wb") as out, bar:
            while True:
                raw = src.read(chunk_bytes if can_cut else -1)
                final = not raw
                # bytes of a character cut by the previous chunk wait in the decoder: an error's
                # offset counts from them, not from this chunk
                held = len(decoder.getstate()[0])
                # the last scan found no cut in pending but at its very end (a newline there needs
                # the next character): scan only from there on, so a text with no cuts (all \r\n
                # line ends) is not rescanned chunk after chunk (quadratic time)
                scanned = max(0, len(pending) - 2)
                try:
                    pending += decoder.decode(raw, final=final)
                except UnicodeDecodeError as e:
                    raise utf8_error(str(path), e, n_read - held) from None
                n_read += len(raw)
                if final:
                    cut = len(pending)
                else:
                    cut = _last_safe_cut(pending[scanned:])
                    cut = scanned + cut if cut else 0
                if cut > 0:
                    ids = self.encode(pending[:cut], allowed_special, disallowed_special)
                    out.write(np.asarray(ids, dtype=dtype).tobytes())
                    n_tokens += len(ids)
                    pending = pending[cut:]
                bar.update(len(raw))
                if final:
                    break
        meta = {
            "dtype": np.dtype(dtype).name,
            "n_tokens": n_tokens,
            "n_vocab": self.n_vocab,
            "tokenizer": self._name,
            "source": str(path),
        }
        with open(str(out_path) + ".json", "w") as f:
            json.dump(meta, f, indent=2)
        return meta

    # decoding ------------------------------------------------------------------------------------
    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token; ValueError naming the id and n_vocab if it has none."""
        token_id = expect_token_id(token_id, self._n_vocab, lambda i: self._decoder[i] is not None)
        return self._decoder[token_id]

    def decode_bytes(self, ids) -> bytes:
        """The concatenated bytes of the tokens (may end inside a multi-byte UTF-8 character)."""
        ids = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        try:
            if ids and min(ids) < 0:  # a negative index would silently read from the end
                raise TypeError
            return b"".join(map(self._decoder.__getitem__, ids))
        except (TypeError, IndexError):  # an unused id (None), out of range, or not an int
            for i in ids:
                self.token_bytes(i)  # raises the ValueError naming the first bad id
            raise

    def decode(self, ids) -> str:
        """The text of the tokens. Bytes that are not valid UTF-8 (a token sequence cut inside a
        character, or an arbitrary one) become U+FFFD, like ``bytes.decode(errors="replace")``.
        """
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


def _last_safe_cut(text: str) -> int:
    """Offset just after the last newline where ``text`` can be cut (0 if none)."""
    end = len(text) - 1  # a cut needs the character after the newline
    while True:
        i = text.rfind("\n", 1, end)
        if i < 0:
            return 0
        if _SAFE_CUT.match(text, i + 1):
            return i + 1
        end = i


_worker_tokenizer: Tokenizer | None = None


def _worker_init(tokenizer: Tokenizer) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer


def _worker_encode(text: str, allowed_special, disallowed_special) -> list[int]:
    return _worker_tokenizer.encode(text, allowed_special, disallowed_special)


# ----------------------------------------------------------------------------------------------
# training


def _merge_word(word: tuple[bytes, ...], a: bytes, b: bytes) -> tuple[bytes, ...]:
    """Replace every (a, b) in ``word``, left to right (the reference's ``merge``)."""
    out, i, n = [], 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == a and word[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def bpe_train(
    text: str,
    vocab_size: int,
    pattern: str = GPT4_SPLIT_PATTERN,
    special_tokens=None,
    verbose: bool = False,
) -> Tokenizer:
    """Learn a byte-level BPE vocabulary; the same merges, ranks and ids as the reference.

    Most frequent pair first; ties to the smallest (bytes_a, bytes_b); special tokens (a list of
    strings) are cut out of the text and get the last ids; stops early when no pair is left.
    """
    expect_str("text", text)
    specials = check_special_tokens(special_tokens)
    check_vocab_size(vocab_size, len(specials))
    findall = regex.compile(pattern).findall
    parts = regex.split(_alternation(specials), text) if specials else [text]
    piece_counts = Counter(chain.from_iterable(map(findall, parts)))

    # each distinct word once (a tuple of byte tokens) and how often it occurs
    words = [tuple(bytes([b]) for b in piece.encode("utf-8")) for piece in piece_counts]
    counts = list(piece_counts.values())
    stats: dict[tuple[bytes, bytes], int] = defaultdict(int)  # pair -> weighted count
    where: dict[tuple[bytes, bytes], set[int]] = defaultdict(set)  # pair -> words (may be stale)
    for w, word in enumerate(words):
        for pair in zip(word, word[1:]):
            stats[pair] += counts[w]
            where[pair].add(w)
    heap = [(-c, a, b) for (a, b), c in stats.items()]  # max count, then smallest bytes
    heapq.heapify(heap)

    ranks = {bytes([b]): b for b in range(256)}
    n_target = vocab_size - len(specials)
    while len(ranks) < n_target and heap:
        neg_count, a, b = heapq.heappop(heap)
        if stats.get((a, b), 0) != -neg_count:  # stale: the count changed since it was pushed
            continue
        new_token = a + b
        if new_token not in ranks:
            ranks[new_token] = len(ranks)
        changed = set()
        for w in where.pop((a, b)):
            word = words[w]
            new_word = _merge_word(word, a, b)
            if len(new_word) == len(word):  # stale index entry: the pair is gone from this word
                continue
            c = counts[w]
            for pair in zip(word, word[1:]):  # take the old word's pairs out ...
                stats[pair] -= c
                changed.add(pair)
            for pair in zip(new_word, new_word[1:]):  # ... and the new word's in
                stats[pair] += c
                changed.add(pair)
                where[pair].add(w)
            words[w] = new_word
        for pair in changed:
            c = stats[pair]
            if c > 0:
                heapq.heappush(heap, (-c, *pair))
            else:
                del stats[pair]
        if verbose:
            print(
                f"merge {len(ranks) - 256}/{n_target - 256}: {a!r} + {b!r} -> {new_token!r} "
                f"(rank {ranks[new_token]}, {-neg_count} occurrences)"
            )

    special_ids = {s: len(ranks) + i for i, s in enumerate(specials)}
    return Tokenizer(ranks, pattern, special_ids)
