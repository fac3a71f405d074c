"""Okapi BM25 over an inverted index held in CSR tensors (PyTorch).

    index = bm25_index([["the", "king", "is", "dead"], ["long", "live", "the", "king"]])
    index.scores(["king", "dead"])            # (n_docs,) float64 tensor
    rows, scores = index.top_k(["king"], k=5)
    index.add([["a", "new", "doc"]]); index.delete([0])       # == a rebuild of what is left

The same index as reference/bm25.py (the formula, the rank_bm25 idf floor ``epsilon`` and the
array layout are explained there), with the arrays as torch tensors: a query adds each of its
terms' posting slices (rows and precomputed weights) into the document scores with
``index_add_``, then ``fast.dense.top_k``. Scores are float64, as the reference's, so the two agree to rounding and rank
alike; ``to_arrays`` gives the same NumPy arrays as the reference's (either loads the other's).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from myllm101.checks.retrieval import (
    check_bm25_arrays,
    check_bm25_options,
    check_doc_rows,
    check_docs_terms,
    check_query_terms,
    check_terms_are_str,
    check_top_k_count,
)
from myllm101.fast.dense import top_k

ARRAY_KEYS = ("vocab_bytes", "vocab_offsets", "indptr", "rows", "tf", "doc_len", "params")


def _long(values) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.int64))


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[idx] along dim 0. ``index_select``, not ``x[idx]``: on CPU with several threads the
    advanced-indexing kernel was ~100x slower here (13 ms for 6k elements)."""
    return x.index_select(0, idx)


def _postings(docs_terms, first_row: int, n_rows: int):
    """(sorted vocabulary, term ids, rows, tf, doc_len) of new documents numbered from
    ``first_row``; postings sorted by (term, row). ``n_rows``: an upper bound on the rows."""
    doc_len = _long([len(doc) for doc in docs_terms])  # (n,)
    flat = list(itertools.chain.from_iterable(docs_terms))  # every occurrence, in order
    distinct = dict.fromkeys(flat)  # C-speed loops from here: no Python code per occurrence
    check_terms_are_str(distinct)
    words = sorted(distinct)
    term_id = {w: i for i, w in enumerate(words)}
    local = torch.from_numpy(np.fromiter(map(term_id.__getitem__, flat), np.int64, len(flat)))
    row = torch.repeat_interleave(torch.arange(first_row, first_row + len(doc_len)), doc_len)
    # one key per (term, row): the unique keys are the postings, their counts the tf. NumPy's
    # unique: torch's CPU sort of int64 keys measured ~6x slower here (0.47 s vs 0.08 s, 550k)
    key = (local * n_rows + row).numpy()
    key, tf = (torch.from_numpy(a) for a in np.unique(key, return_counts=True))
    return words, key // n_rows, key % n_rows, tf, doc_len


def _indptr_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """Postings per term -> CSR offsets (V + 1,): [2, 0, 1] -> [0, 2, 2, 3]."""
    return torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(counts, 0)])


def _indptr(term: torch.Tensor, n_terms: int) -> torch.Tensor:
    """Sorted term id per posting -> CSR offsets (V + 1,): [0, 0, 2] -> [0, 2, 2, 3]."""
    return _indptr_from_counts(torch.bincount(term, minlength=n_terms))


def _scatter(n: int, at_a, a: torch.Tensor, at_b, b: torch.Tensor) -> torch.Tensor:
    """out (n,) with out[at_a] = a and out[at_b] = b (the two index sets partition 0..n-1)."""
    out = torch.empty(n, dtype=a.dtype)
    return out.index_copy_(0, at_a, a).index_copy_(0, at_b, b)


def _terms_of_postings(indptr: torch.Tensor) -> torch.Tensor:
    """(V + 1,) offsets -> (P,) the term of each posting."""
    return torch.repeat_interleave(torch.arange(len(indptr) - 1), torch.diff(indptr))


class BM25Index:
    """The CSR tensors of reference/bm25.py plus k1, b, epsilon; built by ``bm25_index``."""

    def __init__(self, vocab, indptr, rows, tf, doc_len, k1=1.5, b=0.75, epsilon=0.25):
        check_bm25_options(k1, b, epsilon)
        self.k1, self.b, self.epsilon = float(k1), float(b), float(epsilon)
        self.vocab: list[str] = list(vocab)
        self.term_id = {w: i for i, w in enumerate(self.vocab)}
        self.indptr, self.rows, self.tf, self.doc_len = indptr, rows, tf, doc_len
        self._derive()

    @property
    def n_docs(self) -> int:
        return len(self.doc_len)

    def _derive(self) -> None:
        """idf (V,), avgdl and weight (P,) from the stored tensors (reference/bm25.py's math)."""
        N = self.n_docs
        df = torch.diff(self.indptr).double()  # (V,) documents per term
        idf = torch.log(N - df + 0.5) - torch.log(df + 0.5)  # (V,)
        if len(idf):  # rank_bm25's floor: negative idf -> epsilon * the mean idf
            idf[idf < 0] = self.epsilon * idf.mean()
        self.idf = idf
        self.avgdl = float(self.doc_len.sum()) / N if N else 0.0
        dl = _take(self.doc_len, self.rows).double()  # (P,) length of each posting's document
        tf = self.tf.double()
        norm = self.k1 * (1 - self.b + self.b * dl / self.avgdl) if len(dl) else dl
        self.weight = _take(idf, _terms_of_postings(self.indptr)) * (
            tf * (self.k1 + 1) / (tf + norm)
        )

    # ---- storage ----

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The index as plain NumPy arrays (the reference's keys and values)."""
        encoded = [w.encode("utf-8") for w in self.vocab]
        offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype(np.int64)
        return {
            "vocab_bytes": np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(),
            "vocab_offsets": offsets,
            "indptr": self.indptr.numpy().copy(),
            "rows": self.rows.numpy().copy(),
            "tf": self.tf.numpy().copy(),
            "doc_len": self.doc_len.numpy().copy(),
            "params": np.array([self.k1, self.b, self.epsilon], dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays) -> BM25Index:
        """The inverse of ``to_arrays`` (a mapping of its keys to arrays or tensors)."""
        missing = [key for key in ARRAY_KEYS if key not in arrays]
        if missing:
            raise ValueError(f"arrays: expected the keys {list(ARRAY_KEYS)}, missing {missing}")
        a = {key: np.asarray(arrays[key]) for key in ARRAY_KEYS}
        check_bm25_arrays(a)
        buf, off = a["vocab_bytes"].tobytes(), a["vocab_offsets"].tolist()
        vocab = [buf[off[i] : off[i + 1]].decode("utf-8") for i in range(len(off) - 1)]
        k1, b, epsilon = a["params"].tolist()
        return cls(vocab, _long(a["indptr"]), _long(a["rows"]), _long(a["tf"]),
                   _long(a["doc_len"]), k1, b, epsilon)  # fmt: skip

    # ---- updates ----

    def add(self, docs_terms: list[list[str]]) -> None:
        """Append documents as rows n_docs, n_docs + 1, ...; equal to a rebuild with them."""
        check_docs_terms(docs_terms)
        if not docs_terms:
            return
        N = self.n_docs + len(docs_terms)
        words, term, rows, tf, doc_len = _postings(docs_terms, self.n_docs, N)
        vocab = sorted(set(self.vocab).union(words))
        where = {w: i for i, w in enumerate(vocab)}
        old_map = _long([where[w] for w in self.vocab])  # both vocabularies sorted: ascending
        old_term = _take(old_map, _terms_of_postings(self.indptr))  # (P_old,) ascending
        new_term = _take(_long([where[w] for w in words]), term)  # (P_new,) ascending
        # merge two sorted posting lists, a term's old postings first (their rows are lower):
        # each posting's place is its term's start + its rank within the term (no sort needed)
        n_old = torch.bincount(old_term, minlength=len(vocab))
        n_new = torch.bincount(new_term, minlength=len(vocab))
        indptr = _indptr_from_counts(n_old + n_new)
        old_start, new_start = _indptr_from_counts(n_old), _indptr_from_counts(n_new)
        at_old = _take(indptr - old_start, old_term) + torch.arange(len(old_term))
        at_new = _take(indptr[:-1] + n_old - new_start[:-1], new_term) + torch.arange(len(term))
        self.vocab, self.term_id, self.indptr = vocab, where, indptr
        self.rows = _scatter(len(old_term) + len(term), at_old, self.rows, at_new, rows)
        self.tf = _scatter(len(old_term) + len(term), at_old, self.tf, at_new, tf)
        self.doc_len = torch.cat([self.doc_len, doc_len])
        self._derive()

    def delete(self, doc_rows: list[int]) -> None:
        """Remove these rows; the rows after them move down (row r -> r - deleted rows below r).
        Terms left in no document leave the vocabulary. Equal to a rebuild without them."""
        gone = torch.from_numpy(check_doc_rows(doc_rows, self.n_docs))
        dead = torch.zeros(self.n_docs, dtype=torch.bool).index_fill_(0, gone, True)
        keep = ~_take(dead, self.rows)  # (P,) postings that stay
        new_row = torch.cumsum(~dead, 0) - 1  # (N,) old row -> new row
        term = _terms_of_postings(self.indptr)[keep]
        alive = torch.bincount(term, minlength=len(self.vocab)) > 0  # (V,) terms still used
        self.vocab = [w for w, a in zip(self.vocab, alive.tolist()) if a]
        self.term_id = {w: i for i, w in enumerate(self.vocab)}
        self.indptr = _indptr(_take(torch.cumsum(alive, 0) - 1, term), len(self.vocab))
        self.rows, self.tf = _take(new_row, self.rows[keep]), self.tf[keep]
        self.doc_len = self.doc_len[~dead]
        self._derive()

    # ---- queries ----

    def _spans(self, query_terms) -> list[tuple[int, int, int]]:
        """(start, end, count) of each known query term: its postings are [start, end), and a
        term repeated in the query counts ``count`` times."""
        check_query_terms(query_terms)
        counts: dict[int, int] = {}
        for t in query_terms:
            i = self.term_id.get(t)
            if i is not None:
                counts[i] = counts.get(i, 0) + 1
        ptr = self.indptr.numpy()  # a few scalars: cheaper read from NumPy than as tensor ops
        return [(int(ptr[i]), int(ptr[i + 1]), c) for i, c in counts.items()]

    def _accumulate(self, spans) -> torch.Tensor:
        """(n_docs,) float64: each term's posting slice added in place, no concatenated copy.
        The zeros come from NumPy (calloc'd pages): torch.zeros fills them in a parallel region,
        which waited ~12 ms per query for a second thread when other work shared the cores."""
        scores = torch.from_numpy(np.zeros(self.n_docs))
        for s, e, c in spans:
            scores.index_add_(0, self.rows[s:e], self.weight[s:e], alpha=c)
        return scores

    def scores(self, query_terms: list[str]) -> torch.Tensor:
        """BM25 score of every document: (n_docs,) float64 (0 where no query term occurs)."""
        return self._accumulate(self._spans(query_terms))

    def top_k(self, query_terms: list[str], k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k best documents that contain a query term: (rows int64, scores float64), best
        first, equal scores by the lower row. Fewer than k when fewer documents match."""
        check_top_k_count(k)
        spans = self._spans(query_terms)
        scores = self._accumulate(spans)
        cols, best = top_k(scores[None], k)
        if len(best[0]) and best[0, -1] > 0:  # all k score > 0, so all hold a query term
            return cols[0], best[0]
        # a document without a query term scores 0: rank the matches alone (-inf for the rest).
        # Not the common path: ops over all N documents (a fill, a mask) cost a scheduler
        # quantum each when torch's threads share busy cores; zeros and index_add_ do not.
        hit = torch.zeros(self.n_docs, dtype=torch.bool)
        for s, e, _ in spans:
            hit.index_fill_(0, self.rows[s:e], True)
        cols, best = top_k(scores.masked_fill_(~hit, -math.inf)[None], k)
        n = int(torch.isfinite(best[0]).sum())  # the matches among the k (they come first)
        return cols[0, :n], best[0, :n]


def bm25_index(
    docs_terms: list[list[str]], k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25
) -> BM25Index:
    """A BM25 index of documents given as term lists (``rag.terms.terms(text)`` each); row i is
    ``docs_terms[i]``. k1, b, epsilon: as reference/bm25.py."""
    check_bm25_options(k1, b, epsilon)
    check_docs_terms(docs_terms)
    words, term, rows, tf, doc_len = _postings(docs_terms, 0, max(len(docs_terms), 1))
    return BM25Index(words, _indptr(term, len(words)), rows, tf, doc_len, k1, b, epsilon)
