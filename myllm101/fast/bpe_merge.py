"""Merging pre-tokenized pieces, fast: four exact versions of one rule, picked by length.

The rule is the reference's ``bpe_encode_piece`` (and tiktoken's): start from single bytes and
merge the adjacent pair whose concatenation has the lowest rank, the leftmost on a tie, until no
adjacent pair is a token. Every version below returns the reference's ids for any rank table
(tests/test_bpe_fast_paths.py checks each one, forced, against it):

- ``merge_loop`` (short pieces: words): the reference's loop, but the pair ranks live in a list
  that ``min`` and ``list.index`` scan at C speed, and a merge updates only its two neighbours.
  O(n^2), the fastest below ~``HEAP_FROM`` bytes.
- ``merge_heap`` (longer pieces): a heap of rank-then-start keys over a linked list of parts;
  an entry whose pair has changed since it was pushed is skipped when popped. O(n log n).
- ``merge_batched`` (long pieces: a character repeated, a long number): NumPy, one rank at a time.
  All pairs of the lowest rank r are merged in one vectorized step, left to right (the leftmost
  of two overlapping ones, as the sequential rule would). That equals merging them one by one as
  long as no merge creates a pair ranked below r; where one would, the step stops right after it
  and the lower pair goes next, so the order stays exactly the sequential one. Python work per
  distinct rank, NumPy work per merge: O(n log n).
- ``merge_many`` (a text's new short pieces, all at once): NumPy again, one merge per piece per
  step, every piece's next merge found by a segmented minimum (``encode_pieces`` picks it when a
  text brings ``MANY_FROM`` new pieces or more).
"""

from __future__ import annotations

import functools
import heapq
from itertools import repeat

import numpy as np

HEAP_FROM = 40  # pieces this long (bytes) or longer use the heap ...
BATCHED_PER_PAIR = 512  # ... or NumPy if at least this long per distinct byte pair in them
MANY_FROM = 256  # new short pieces in one text from which they are merged together in NumPy
MAX_CUT_STEPS = 64  # batched steps cut short (see merge_batched) before the heap takes over
NONE = 1 << 62  # "no such token": larger than every rank


def merge_loop(piece: bytes, ranks: dict[bytes, int]) -> tuple[int, ...]:
    """Token ids of ``piece`` (at least 2 bytes); the reference's loop with C-level scans.

    bounds[k]:bounds[k+1] is part k; pair[k] is the rank of parts k and k+1 joined (NONE if not a
    token). ``min`` finds the lowest rank, ``index`` its leftmost position.
    """
    get = ranks.get
    bounds = list(range(len(piece) + 1))
    pair = [get(piece[i : i + 2], NONE) for i in range(len(piece) - 1)]
    low = min(pair)
    while low != NONE:
        k = pair.index(low)
        del bounds[k + 1]  # parts k and k+1 become one
        del pair[k]
        if k < len(pair):  # the new part and the one after it
            pair[k] = get(piece[bounds[k] : bounds[k + 2]], NONE)
        if k:  # the one before and the new part
            pair[k - 1] = get(piece[bounds[k - 1] : bounds[k + 1]], NONE)
        low = min(pair) if pair else NONE
    return tuple([ranks[piece[a:b]] for a, b in zip(bounds, bounds[1:])])


def merge_heap(piece: bytes, ranks: dict[bytes, int], starts=None) -> tuple[int, ...]:
    """Token ids of ``piece`` by a heap over adjacent pairs; ``starts``: where the parts begin if
    some merging is already done (default: single bytes).

    Parts form a linked list over byte offsets (part i spans piece[i:nxt[i]]); ``cur[i]`` is the
    rank of the pair starting at part i now, so a popped key rank * (n + 1) + i is stale exactly
    when cur[i] differs (a pair's rank is its bytes' rank, and a position's span only grows).
    Ties pop the smallest start first: the leftmost pair.
    """
    n = len(piece)
    n1 = n + 1
    get = ranks.get
    if starts is None:
        starts = range(n)
        nxt = list(range(1, n + 1))  # start of the next part; n = none
        prv = list(range(-1, n - 1))  # start of the previous part; -1 = none
    else:
        nxt, prv = [n] * n, [-1] * n
        for a, b in zip(starts, starts[1:]):
            nxt[a], prv[b] = b, a
    cur = [NONE] * n
    for i in starts:
        j = nxt[i]
        if j < n:
            cur[i] = get(piece[i : nxt[j]], NONE)
    heap = [cur[i] * n1 + i for i in starts if cur[i] != NONE]
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        rank, i = divmod(pop(heap), n1)
        if cur[i] != rank:  # stale: i merged away, or the pair starting at i changed
            continue
        j = nxt[i]
        end = nxt[i] = nxt[j]  # i absorbs j
        cur[j] = NONE
        if end < n:
            prv[end] = i
            rank = cur[i] = get(piece[i : nxt[end]], NONE)  # the new pair (i, end)
            if rank != NONE:
                push(heap, rank * n1 + i)
        else:
            cur[i] = NONE
        p = prv[i]
        if p >= 0:
            rank = cur[p] = get(piece[p:end], NONE)  # the new pair (p, i)
            if rank != NONE:
                push(heap, rank * n1 + p)
    ids, i = [], starts[0]
    while i < n:
        ids.append(ranks[piece[i : nxt[i]]])
        i = nxt[i]
    return tuple(ids)


class PairRanks:
    """rank(token a + token b) by id, vectorized: what the NumPy merges look up.

    One per vocabulary, built as it is used: the 256 x 256 byte pairs as one array, other pairs in
    a sorted array of keys a * n_ids + b with their ranks, to which each lookup adds the keys it
    has not met before (computed from the tokens' bytes at C speed). Encoding a text meets a few
    hundred thousand distinct pairs at most; a vocabulary has billions of possible ones.
    """

    def __init__(self, ranks: dict[bytes, int]):
        self.ranks = ranks
        self.n_ids = max(ranks.values()) + 1
        self.keys = np.empty(0, dtype=np.int64)  # sorted
        self.values = np.empty(0, dtype=np.int64)

    @functools.cached_property
    def tokens(self) -> list[bytes | None]:
        """id -> bytes (None for unused ids)."""
        tokens: list[bytes | None] = [None] * self.n_ids
        for token, rank in self.ranks.items():
            tokens[rank] = token
        return tokens

    @functools.cached_property
    def byte_ids(self) -> np.ndarray:
        return np.array([self.ranks[bytes([b])] for b in range(256)], dtype=np.int64)

    @functools.cached_property
    def byte_pairs(self) -> np.ndarray:
        """rank of bytes (a, b) at a * 256 + b (NONE if not a token)."""
        get = self.ranks.get
        pairs = [get(bytes([a, b]), NONE) for a in range(256) for b in range(256)]
        return np.array(pairs, dtype=np.int64)

    def __call__(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Ranks of the joined pairs (NONE where not a token), for id arrays of equal length."""
        keys = left * self.n_ids + right
        at = np.searchsorted(self.keys, keys)
        known = self.keys[np.minimum(at, len(self.keys) - 1)] == keys if len(self.keys) else at < 0
        if not known.all():
            new = np.unique(keys[~known])
            self._learn(new)
            at += np.searchsorted(new, keys)  # each key's place moves by the new keys below it
        return self.values[at]

    def _learn(self, keys: np.ndarray) -> None:
        """Add ``keys`` (sorted, none known yet) to the table."""
        a, b = np.divmod(keys, self.n_ids)
        tokens, get = self.tokens, self.ranks.get
        joined = map(
            bytes.__add__, map(tokens.__getitem__, a.tolist()), map(tokens.__getitem__, b.tolist())
        )
        values = np.fromiter(map(get, joined, repeat(NONE)), dtype=np.int64, count=len(keys))
        at = np.searchsorted(self.keys, keys)
        self.keys = np.insert(self.keys, at, keys)
        self.values = np.insert(self.values, at, values)


def merge_batched(
    piece: bytes, ranks: dict[bytes, int], pair_ranks: PairRanks | None = None
) -> tuple[int, ...]:
    """Token ids of ``piece`` merging all pairs of one rank per NumPy step (see the module doc).

    State over byte offsets (n = len(piece); index n is a sentinel, no part): ``tok[i]`` the id
    of the part starting at i, ``nxt``/``prv`` the linked list, ``alive[i]`` whether a part starts
    at i. ``todo``: rank -> arrays of starts of pairs pushed with that rank (maybe stale since);
    ``order``: a heap of the ranks in ``todo``.
    """
    pr = pair_ranks or PairRanks(ranks)
    n = len(piece)
    data = np.frombuffer(piece, dtype=np.uint8).astype(np.int64)
    tok = np.append(pr.byte_ids[data], -1)
    nxt = np.arange(1, n + 2)  # the sentinel's nxt[n] = n + 1 never equals a pair's end
    prv = np.arange(-1, n)
    alive = np.ones(n + 1, dtype=bool)
    alive[n] = False
    token_len = {}
    todo: dict[int, list[np.ndarray]] = {}
    order: list[int] = []

    def add(starts: np.ndarray, rank: np.ndarray) -> None:
        """Queue the pairs starting at ``starts`` (ascending) under their ranks."""
        keep = rank != NONE
        starts, rank = starts[keep], rank[keep]
        if len(rank) == 0:
            return
        by_rank = np.argsort(rank, kind="stable")  # stable: starts stay ascending per rank
        starts, rank = starts[by_rank], rank[by_rank]
        cuts = np.flatnonzero(rank[1:] != rank[:-1]) + 1
        for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(rank)]):
            r = int(rank[lo])
            if r in todo:
                todo[r].append(starts[lo:hi])
            else:
                todo[r] = [starts[lo:hi]]
                heapq.heappush(order, r)

    add(np.arange(n - 1), pr.byte_pairs[data[:-1] * 256 + data[1:]])
    lowered = 0  # steps cut short by a lower-ranked pair
    while order:
        r = heapq.heappop(order)
        queued = todo.pop(r)
        pos = queued[0] if len(queued) == 1 else _sorted_set(np.concatenate(queued))
        if r not in token_len:
            token_len[r] = len(pr.tokens[r])
        # still there: its start is a part and the pair still spans the token's bytes
        pos = pos[alive[pos] & (nxt[nxt[pos]] == pos + token_len[r])]
        if len(pos) == 0:
            continue
        # overlapping pairs (x, x, x: both pairs are r) chain up; take every other from the left
        chained = nxt[pos[:-1]] == pos[1:]
        if chained.any():
            k = np.arange(len(pos))
            head = np.maximum.accumulate(np.where(np.append(True, ~chained), k, 0))
            todo_later = pos
            pos = pos[(k - head) % 2 == 0]
        else:
            todo_later = pos
        j = nxt[pos]  # the right halves
        end = nxt[j]
        # the pairs each merge creates at the moment it happens (the merges before it done, the
        # ones after it not yet): (left neighbour, new) and (new, right neighbour)
        after_merge = np.append(False, end[:-1] == pos[1:])  # the left neighbour was just merged
        left = np.where(after_merge, r, tok[prv[pos]])
        has_left = prv[pos] >= 0
        has_right = end < n
        lower = np.zeros(len(pos), dtype=bool)
        lower[has_left] = pr(left[has_left], np.full(has_left.sum(), r)) < r
        lower[has_right] |= pr(np.full(has_right.sum(), r), tok[end[has_right]]) < r
        if lower.any():  # merge up to the first such pair; it goes next, then the rest of r
            stop = int(np.argmax(lower)) + 1
            rest = todo_later[todo_later > pos[stop - 1]]
            pos, j, end = pos[:stop], j[:stop], end[:stop]
            if len(rest):
                todo[r] = [rest]
                heapq.heappush(order, r)
            lowered += 1
            if lowered > MAX_CUT_STEPS:  # a rank table built to defeat batching: heap from here
                tok[pos], alive[j], nxt[pos] = r, False, end
                return merge_heap(piece, ranks, np.flatnonzero(alive).tolist())
        tok[pos] = r
        alive[j] = False
        nxt[pos] = end
        prv[end] = pos  # (prv[n], the sentinel's, is never read)
        # the new pairs, (left neighbour, new) and (new, right neighbour), in order: a merge's
        # left pair lies after the previous merge unless it is that merge's right pair
        starts = np.stack((prv[pos], pos), axis=1)
        starts = starts[np.stack((~after_merge[: len(pos)] & (starts[:, 0] >= 0), end < n), 1)]
        add(starts, pr(tok[starts], tok[nxt[starts]]))
    return tuple(tok[np.flatnonzero(alive)].tolist())


def merge_many(pieces: list[bytes], pair_ranks: PairRanks) -> list[tuple[int, ...]]:
    """Token ids of many short pieces (2+ bytes each) at once: every NumPy step does one merge,
    the reference's next one, in each piece still merging (a whole text's new words take ~20).

    The pieces' parts sit side by side in flat arrays (``piece[k]``: which piece part k is of);
    a piece's lowest pair, leftmost on a tie, is the minimum of rank * m + position over its
    parts (``reduceat``). Finished pieces leave the arrays.
    """
    pr = pair_ranks
    out: list[tuple[int, ...]] = [()] * len(pieces)
    sizes = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    data = np.frombuffer(b"".join(pieces), dtype=np.uint8).astype(np.int64)
    tok = pr.byte_ids[data]
    piece = np.repeat(np.arange(len(pieces)), sizes)
    rank = np.append(pr.byte_pairs[data[:-1] * 256 + data[1:]], NONE)  # pair (k, k + 1)
    rank[np.cumsum(sizes) - 1] = NONE  # a piece's last part pairs with nothing
    while len(tok):
        m = len(tok)
        first = np.flatnonzero(np.append(True, piece[1:] != piece[:-1]))  # each piece's start
        sizes = np.diff(np.append(first, m))
        # NONE -> n_ids (above every rank) keeps rank * m + position inside int64
        best = np.minimum.reduceat(np.minimum(rank, pr.n_ids) * m + np.arange(m), first)
        low, at = np.divmod(best, m)
        done = low == pr.n_ids
        if done.any():  # no pair left to merge: those pieces are finished
            ids = tok[np.repeat(done, sizes)].tolist()
            k = 0
            for p, size in zip(piece[first[done]].tolist(), sizes[done].tolist()):
                out[p] = tuple(ids[k : k + size])
                k += size
            at, low = at[~done], low[~done]
        tok[at] = low  # part at absorbs part at + 1
        rank[at] = NONE
        # the new pairs (at - 1, at) and (at, at + 2) where inside the piece, looked up together
        before, after = at - 1, at + 2
        has_before, has_after = before >= 0, after < m
        has_before[has_before] = piece[before[has_before]] == piece[at[has_before]]
        has_after[has_after] = piece[after[has_after]] == piece[at[has_after]]
        lefts, rights = before[has_before], at[has_after]  # where the new pairs start
        found = pr(
            np.concatenate((tok[lefts], low[has_after])),
            np.concatenate((low[has_before], tok[after[has_after]])),
        )
        rank[lefts] = found[: len(lefts)]
        rank[rights] = found[len(lefts) :]
        keep = np.repeat(~done, sizes)
        keep[at + 1] = False
        tok, rank, piece = tok[keep], rank[keep], piece[keep]
    return out


def encode_pieces(
    pieces: list[bytes], ranks: dict[bytes, int], pair_ranks: PairRanks
) -> list[tuple[int, ...]]:
    """[bpe_encode_piece(p, ...) for p in pieces], the short ones together (``merge_many``) when
    there are enough of them to pay for NumPy's per-step cost."""
    out = [None] * len(pieces)
    short = []
    for i, piece in enumerate(pieces):
        rank = ranks.get(piece)
        if rank is not None:
            out[i] = (rank,)
        elif len(piece) < HEAP_FROM:
            short.append(i)
        else:
            out[i] = bpe_encode_piece(piece, ranks, pair_ranks)
    if len(short) >= MANY_FROM and pair_ranks.n_ids <= 1 << 31:
        for i, ids in zip(short, merge_many([pieces[i] for i in short], pair_ranks)):
            out[i] = ids
    else:
        for i in short:
            out[i] = merge_loop(pieces[i], ranks)
    return out


def _sorted_set(a: np.ndarray) -> np.ndarray:
    """np.unique(a) by sorting (NumPy 2's hash-based unique is slow on large int arrays)."""
    a = np.sort(a)
    return a[np.append(True, a[1:] != a[:-1])]


def _distinct_byte_pairs(piece: bytes) -> int:
    data = np.frombuffer(piece, dtype=np.uint8).astype(np.int32)
    return int(np.count_nonzero(np.bincount(data[:-1] * 256 + data[1:], minlength=65536)))


def bpe_encode_piece(
    piece: bytes, ranks: dict[bytes, int], pair_ranks: PairRanks | None = None
) -> tuple[int, ...]:
    """Token ids of one piece (the reference's result), by the version fastest for it.

    ``merge_batched`` pays per distinct rank it meets, the heap per byte: the batched version
    wins on pieces that repeat a few byte pairs (BATCHED_PER_PAIR bytes or more per distinct pair).
    """
    rank = ranks.get(piece)
    if rank is not None:  # the whole piece is one token (most words)
        return (rank,)
    n = len(piece)
    if n < HEAP_FROM:
        return merge_loop(piece, ranks)
    if n >= BATCHED_PER_PAIR:
        pair_ranks = pair_ranks or PairRanks(ranks)
        # (ids below 2**31: a pair's key a * n_ids + b fits in int64)
        if pair_ranks.n_ids <= 1 << 31 and n >= BATCHED_PER_PAIR * _distinct_byte_pairs(piece):
            return merge_batched(piece, ranks, pair_ranks)
    return merge_heap(piece, ranks)
