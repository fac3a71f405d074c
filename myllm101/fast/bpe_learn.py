"""Learning BPE merges, fast: the reference's training loop, merge for merge, on counted words.

What makes it fast (read next to ``reference/bpe.py``'s ``bpe_train``):

- each distinct word once with its count, as a str of one character per token (``chr(id)``): a
  merge of a word is ``str.replace`` (left to right, as the reference's ``merge``), finding it
  ``str.find``, and a pair the 2-character str of its tokens;
- pair counts kept up to date instead of recounted: a merge changes only the pairs around each
  occurrence, in the words an index (pair -> words) names;
- the next pair from a heap: max count, then the smallest (bytes_a, bytes_b), the reference's
  tie-break. An entry is not removed when its count changes: a stale one is skipped (or, if its
  pair became rarer, put back with the new count) when it comes to the top.
"""

from __future__ import annotations

import gc
import heapq
from collections import Counter, defaultdict


def learn_ranks(piece_counts: Counter, n_target: int, verbose: bool = False) -> dict[bytes, int]:
    """Ranks (token bytes -> rank) of the 256 bytes and the merges learned from ``piece_counts``
    (piece -> occurrences) until there are ``n_target`` tokens or no pair is left."""
    # The loop makes ~10^5 heap tuples and lists that are never garbage: without this, the cyclic
    # collector would walk every object the process holds again and again (10-30% of the time).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _learn_ranks(piece_counts, n_target, verbose)
    finally:
        if was_enabled:
            gc.enable()


def _learn_ranks(piece_counts: Counter, n_target: int, verbose: bool) -> dict[bytes, int]:
    # each distinct word once (a str of one character per token) and how often it occurs
    words = [piece.encode("utf-8").decode("latin-1") for piece in piece_counts]
    counts = list(piece_counts.values())
    stats: dict[str, int] = defaultdict(int)  # pair -> weighted count
    where: dict[str, list[int]] = defaultdict(list)  # pair -> words (may repeat or be stale)
    for w, word in enumerate(words):
        c = counts[w]
        for i in range(len(word) - 1):
            pair = word[i : i + 2]
            stats[pair] += c
            where[pair].append(w)
    token = [bytes([b]) for b in range(256)]  # id -> bytes
    # max count, then smallest (bytes_a, bytes_b)
    heap = [(-c, token[ord(p[0])], token[ord(p[1])], p) for p, c in stats.items()]
    heapq.heapify(heap)

    ranks = {bytes([b]): b for b in range(256)}
    while len(ranks) < n_target and heap:
        neg_count, a, b, pair = heapq.heappop(heap)
        count = stats.get(pair, 0)
        if count != -neg_count:  # stale: pushed when the pair was more (or less) frequent
            if 0 < count < -neg_count:  # fell since: back in with its count (see below)
                heapq.heappush(heap, (-count, a, b, pair))
            continue
        new_token = a + b
        if new_token not in ranks:
            if len(ranks) == 0x110000:
                raise ValueError("bpe_train: the fast trainer holds at most 1,114,112 tokens")
            ranks[new_token] = len(ranks)
            token.append(new_token)
        t = chr(ranks[new_token])
        left, right = pair  # the pair's two tokens, as characters
        delta: dict[str, int] = defaultdict(int)  # pair -> change of its count
        for w in where.pop(pair):
            word = words[w]
            i = word.find(pair)
            if i < 0:  # stale entry: the pair is gone from this word (or it was listed twice)
                continue
            c, n, end = counts[w], len(word), -1
            while i >= 0:  # each occurrence, left to right, as str.replace merges them
                if i > 0:  # (x, a) -> (x, t); x is t if the previous occurrence ends here
                    x = t if i == end else word[i - 1]
                    delta[x + left] -= c
                    new = x + t
                    delta[new] += c
                    where[new].append(w)
                end = i + 2
                if end < n:  # (b, y) -> (t, y)
                    y = word[end]
                    delta[right + y] -= c
                    new = t + y
                    delta[new] += c
                    where[new].append(w)
                i = word.find(pair, end)
            words[w] = word.replace(pair, t)
        # no (a, b) is left: str.replace took every one (an (a, a) overlapping one included,
        # which delta counts as a (b, y)), and no new pair can be (a, b): it holds t
        del stats[pair]
        delta.pop(pair, None)
        # a pair that became more frequent needs a new heap entry; one that became less
        # frequent keeps its old entry, too high, which goes back in with the count when popped:
        # every pair's best entry is never below its count, so the first accurate pop is the max
        for p, d in delta.items():
            c = stats[p] + d
            if c <= 0:
                del stats[p]
                continue
            stats[p] = c
            if d > 0:
                heapq.heappush(heap, (-c, token[ord(p[0])], token[ord(p[1])], p))
        if verbose:
            print(
                f"merge {len(ranks) - 256}/{n_target - 256}: {a!r} + {b!r} -> {new_token!r} "
                f"(rank {ranks[new_token]}, {-neg_count} occurrences)"
            )
    return ranks
