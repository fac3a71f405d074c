"""Byte-level BPE, fast: the same ``Tokenizer`` and ``bpe_train`` as ``reference/bpe.py``, same ids.

Pure Python + ``regex``/``re`` (+ NumPy for long pieces and token files); no torch, no compiled
tokenizer. What makes it fast (read next to the reference to see each change):

- encode: a text is mostly repeated words, so each distinct pre-tokenized piece is merged once and
  cached (piece -> ids); a whole text is one C-level ``findall`` and one C-level pass extending a
  list with cached tuples (when a piece is new, one set difference finds the new pieces first).
- pre-tokenizing: the shipped patterns run in Python's ``re``, about twice as fast as ``regex``,
  for every text without characters above U+FFFF (``bpe_split.py``).
- merging (``bpe_merge.py``): a C-level scan for a short piece, a heap over a linked list for a
  longer one (O(n log n)), NumPy one rank at a time for a long run (a character repeated), and
  NumPy one merge per step for all of a text's new short pieces together.
- training: the words of a big text counted in several processes, then each distinct word once
  with its count, pair counts updated only around a merge's occurrences, the next pair taken
  from a heap with lazy invalidation (``bpe_learn.py``).
- encode_batch / encode_file: several processes, and big files streamed in safe chunks.

Tie-breaks and the merge rule are exactly the reference's (and tiktoken's); parity_tests/test_bpe.py
checks ids against tiktoken for GPT-2, cl100k_base and o200k_base. Input validation is the
reference's too (``myllm101/checks/bpe.py``): the same checks raise the same errors.
"""

from __future__ import annotations

import codecs
import json
import os
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import regex

from myllm101.bpe_patterns import GPT4_SPLIT_PATTERN, SPLIT_PATTERNS, fix_surrogates
from myllm101.checks import expect_str
from myllm101.checks.bpe import (
    check_bpe_vocab,
    check_special_args,
    check_special_tokens,
    check_vocab_size,
    disallowed_special_error,
    expect_token_id,
)
from myllm101.fast.bpe_learn import learn_ranks
from myllm101.fast.bpe_merge import (
    PairRanks,
    bpe_encode_piece,  # noqa: F401 (re-exported: the API)
    encode_pieces,
)
from myllm101.fast.bpe_split import count_pieces, count_pieces_elsewhere, in_bmp, split_bmp


def _alternation(strings) -> str:
    """A regex matching any of ``strings``, longest first (a prefix never shadows a longer one)."""
    return "|".join(regex.escape(s) for s in sorted(strings, key=len, reverse=True))


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
        self._pair_ranks = PairRanks(self._ranks)  # for long pieces (its tables built on first use)

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
    def _split(self, text: str) -> list[str]:
        """The pieces of ``text``: Python's ``re`` where it gives regex's pieces, else regex."""
        split = split_bmp(self._pattern)
        if split is not None and in_bmp(text):
            return split(text)
        return self._findall(text)

    def _encode_plain(self, text: str) -> list[int]:
        pieces = self._split(text)
        cache = self._cache
        try:  # every piece seen before (a warm cache): no set of new pieces to build
            return self._cached_ids(pieces)
        except KeyError:
            pass
        if len(cache) > self.max_cache:
            cache.clear()
        new = list(set(pieces).difference(cache))  # merge each new piece once
        data = [piece.encode("utf-8") for piece in new]
        cache.update(zip(new, encode_pieces(data, self._ranks, self._pair_ranks)))
        return self._cached_ids(pieces)

    def _cached_ids(self, pieces: list[str]) -> list[int]:
        """The cached ids of every piece in one list: ``list.extend`` per piece, consumed at C
        speed (~20% faster than ``list(chain.from_iterable(...))`` here)."""
        ids: list[int] = []
        deque(map(ids.extend, map(self._cache.__getitem__, pieces)), maxlen=0)
        return ids

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

# characters of text from which training counts words in several processes: counting runs at
# ~15 MB/s, starting a process costs ~0.1 s, so halving the count pays from a few MB on
PARALLEL_FROM = 4 << 20
# characters more that this process counts than each fresh one: a fresh process needs ~0.06 s to
# start and to send its Counter back, the time this one takes to count about 1 MB
HEAD_START = 1 << 20


def default_workers() -> int:
    """Processes ``bpe_train`` counts words in: one per core, at most 4 (the counting is ~1/4 of
    training; more processes cost more to start than they save)."""
    return min(os.cpu_count() or 1, 4)


def _shares(parts: list[str], pattern: str, n: int, head_start: int = 0) -> list[list[str]]:
    """``parts`` regrouped into at most n lists, the first ``head_start`` characters longer than
    each of the others (which are about equal); a long part is cut only where the pattern cannot
    match across (``_last_safe_cut``; with other patterns it stays whole), so the pieces of the
    shares are the pieces of the parts."""
    can_cut = pattern in _SAFE_CUT_PATTERNS
    total = sum(map(len, parts))
    rest = max(total - head_start, 0) // n + 1  # what each share but the first holds
    targets = [total - rest * (n - 1)] + [rest] * (n - 1)
    shares: list[list[str]] = [[]]
    size = 0
    for part in parts:
        while can_cut and len(shares) < n and size + len(part) > targets[len(shares) - 1]:
            cut = _last_safe_cut(part[: targets[len(shares) - 1] - size])
            if cut == 0:  # no cut in reach: the part stays whole
                break
            shares[-1].append(part[:cut])
            shares.append([])
            part, size = part[cut:], 0
        shares[-1].append(part)
        size += len(part)
        if size >= targets[len(shares) - 1] and len(shares) < n:
            shares.append([])
            size = 0
    return [share for share in shares if share]


def _count_pieces_in(parts: list[str], pattern: str, workers: int) -> Counter:
    """Counter(pieces of all parts); for a big text in ``workers`` processes: this one counts one
    share while fresh ones count the others (``count_pieces_elsewhere``)."""
    big = workers > 1 and sum(map(len, parts)) >= PARALLEL_FROM
    shares = _shares(parts, pattern, workers, HEAD_START) if big else [parts]
    others = [count_pieces_elsewhere(pattern, share) for share in shares[1:]]
    counts = count_pieces(pattern, shares[0])
    for other in others:
        counts.update(other())
    return counts


def bpe_train(
    text: str,
    vocab_size: int,
    pattern: str = GPT4_SPLIT_PATTERN,
    special_tokens=None,
    verbose: bool = False,
    workers: int | None = None,
) -> Tokenizer:
    """Learn a byte-level BPE vocabulary; the same merges, ranks and ids as the reference.

    Most frequent pair first; ties to the smallest (bytes_a, bytes_b); special tokens (a list of
    strings) are cut out of the text and get the last ids; stops early when no pair is left.
    workers: processes that count the words of a text of PARALLEL_FROM characters or more (default
    ``default_workers()``; 1 = this process only). The merges do not depend on it.
    """
    expect_str("text", text)
    specials = check_special_tokens(special_tokens)
    check_vocab_size(vocab_size, len(specials))
    workers = default_workers() if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected an int >= 1, got {workers!r}")
    regex.compile(pattern)  # a bad pattern fails here, as in the reference
    parts = regex.split(_alternation(specials), text) if specials else [text]
    piece_counts = _count_pieces_in(parts, pattern, workers)
    ranks = learn_ranks(piece_counts, vocab_size - len(specials), verbose)
    special_ids = {s: len(ranks) + i for i, s in enumerate(specials)}
    return Tokenizer(ranks, pattern, special_ids)
