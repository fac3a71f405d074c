"""Okapi BM25 over an inverted index held in CSR arrays (NumPy).

    index = bm25_index([["the", "king", "is", "dead"], ["long", "live", "the", "king"]])
    index.scores(["king", "dead"])            # (n_docs,) float64
    rows, scores = index.top_k(["king"], k=5)
    index.add([["a", "new", "doc"]]); index.delete([0])       # == a rebuild of what is left

The score of document d for a query (a list of terms; a repeated term counts each time):

    score(d) = sum_t idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)   = ln(N - df(t) + 0.5) - ln(df(t) + 0.5)

N documents, df(t) of them contain t, tf(t, d) = occurrences of t in d, |d| = terms in d, avgdl =
the mean |d|. A term found in more than half of the documents has a negative idf; like
``rank_bm25.BM25Okapi`` (the oracle of parity_tests/test_bm25.py), such an idf is replaced by
``epsilon * mean(idf over the vocabulary)`` (the mean taken before the replacement). So
``epsilon=0.25`` (the default, rank_bm25's) matches ``BM25Okapi(corpus, k1, b, epsilon)``
within float rounding, and ``epsilon=0`` makes those terms count for nothing.

Layout: the V x N term-document matrix in compressed sparse rows (one row per term):

    vocab            V terms, sorted (stored as UTF-8 bytes + offsets, so an .npz holds them)
    indptr (V + 1,)  the postings of term t are [indptr[t], indptr[t + 1])
    rows (P,)        each posting's document row, ascending within a term
    tf (P,)          each posting's raw term frequency
    doc_len (N,)     terms per document

Only these are kept and stored; df = diff(indptr), idf, avgdl and each posting's weight
(idf times the tf part of the formula) are recomputed from them after a load, an add or a
delete. Sorted vocabulary and postings sorted by (term, row) make the arrays canonical: an index
grown by ``add`` and shrunk by ``delete`` is array-for-array the index a rebuild would give.

A query touches only its terms' postings: gather them, and sum their weights per document with
``np.bincount``. No loop runs over documents.
"""

from __future__ import annotations

import itertools

import numpy as np

from myllm101.checks.retrieval import (
    check_bm25_arrays,
    check_bm25_options,
    check_doc_rows,
    check_docs_terms,
    check_query_terms,
    check_terms_are_str,
    check_top_k_count,
)
from myllm101.reference.dense import top_k

ARRAY_KEYS = ("vocab_bytes", "vocab_offsets", "indptr", "rows", "tf", "doc_len", "params")


def _postings(docs_terms, first_row: int, n_rows: int):
    """(sorted vocabulary, term ids, rows, tf, doc_len) of new documents numbered from
    ``first_row``; postings sorted by (term, row). ``n_rows``: an upper bound on the rows."""
    doc_len = np.array([len(doc) for doc in docs_terms], dtype=np.int64)  # (n,)
    flat = list(itertools.chain.from_iterable(docs_terms))  # every occurrence, in order
    distinct = dict.fromkeys(flat)  # C-speed loops from here: no Python code per occurrence
    check_terms_are_str(distinct)
    words = sorted(distinct)
    term_id = {w: i for i, w in enumerate(words)}
    local = np.fromiter(map(term_id.__getitem__, flat), np.int64, len(flat))  # (T,) term ids
    row = np.repeat(np.arange(first_row, first_row + len(doc_len)), doc_len)  # (T,)
    # one key per (term, row): the unique keys are the postings, their counts the tf
    key, tf = np.unique(local * n_rows + row, return_counts=True)
    return words, key // n_rows, key % n_rows, tf.astype(np.int64), doc_len


def _indptr(term: np.ndarray, n_terms: int) -> np.ndarray:
    """Sorted term id per posting -> CSR offsets (V + 1,): [0, 0, 2] -> [0, 2, 2, 3]."""
    return np.concatenate([[0], np.cumsum(np.bincount(term, minlength=n_terms))]).astype(np.int64)


class BM25Index:
    """The CSR arrays of the module docstring plus k1, b, epsilon; built by ``bm25_index``."""

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
        """idf (V,), avgdl and weight (P,) from the stored arrays (the module docstring's math)."""
        N = self.n_docs
        df = np.diff(self.indptr)  # (V,) documents per term
        idf = np.log(N - df + 0.5) - np.log(df + 0.5)  # (V,)
        if len(idf):  # rank_bm25's floor: negative idf -> epsilon * the mean idf
            idf[idf < 0] = self.epsilon * idf.mean()
        self.idf = idf
        self.avgdl = float(self.doc_len.sum()) / N if N else 0.0
        dl = self.doc_len[self.rows]  # (P,) length of each posting's document
        tf = self.tf.astype(np.float64)
        norm = self.k1 * (1 - self.b + self.b * dl / self.avgdl) if len(dl) else dl
        term = np.repeat(np.arange(len(df)), df)  # (P,) each posting's term
        self.weight = idf[term] * (tf * (self.k1 + 1) / (tf + norm))  # (P,)

    # ---- storage ----

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The index as plain arrays (``ARRAY_KEYS``), for np.savez / safetensors."""
        encoded = [w.encode("utf-8") for w in self.vocab]
        offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype(np.int64)
        return {
            "vocab_bytes": np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(),
            "vocab_offsets": offsets,
            "indptr": self.indptr.copy(),
            "rows": self.rows.copy(),
            "tf": self.tf.copy(),
            "doc_len": self.doc_len.copy(),
            "params": np.array([self.k1, self.b, self.epsilon], dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays) -> BM25Index:
        """The inverse of ``to_arrays`` (any mapping of those keys to arrays, e.g. an NpzFile)."""
        missing = [key for key in ARRAY_KEYS if key not in arrays]
        if missing:
            raise ValueError(f"arrays: expected the keys {list(ARRAY_KEYS)}, missing {missing}")
        a = {key: np.asarray(arrays[key]) for key in ARRAY_KEYS}
        check_bm25_arrays(a)
        buf, off = a["vocab_bytes"].tobytes(), a["vocab_offsets"].tolist()
        vocab = [buf[off[i] : off[i + 1]].decode("utf-8") for i in range(len(off) - 1)]
        k1, b, epsilon = a["params"].tolist()
        return cls(vocab, a["indptr"].astype(np.int64), a["rows"].astype(np.int64),
                   a["tf"].astype(np.int64), a["doc_len"].astype(np.int64), k1, b, epsilon)  # fmt: skip

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
        old_map = np.array([where[w] for w in self.vocab], dtype=np.int64)
        new_map = np.array([where[w] for w in words], dtype=np.int64)
        old_term = old_map[np.repeat(np.arange(len(self.vocab)), np.diff(self.indptr))]
        all_term = np.concatenate([old_term, new_map[term]])
        # a stable sort by term keeps rows ascending: the new rows all follow the old ones
        order = np.argsort(all_term, kind="stable")
        self.vocab, self.term_id = vocab, where
        self.indptr = _indptr(all_term[order], len(vocab))
        self.rows = np.concatenate([self.rows, rows])[order]
        self.tf = np.concatenate([self.tf, tf])[order]
        self.doc_len = np.concatenate([self.doc_len, doc_len])
        self._derive()

    def delete(self, doc_rows: list[int]) -> None:
        """Remove these rows; the rows after them move down (row r -> r - deleted rows below r).
        Terms left in no document leave the vocabulary. Equal to a rebuild without them."""
        dead = np.zeros(self.n_docs, dtype=bool)
        dead[check_doc_rows(doc_rows, self.n_docs)] = True
        keep = ~dead[self.rows]  # (P,) postings that stay
        new_row = np.cumsum(~dead) - 1  # (N,) old row -> new row
        term = np.repeat(np.arange(len(self.vocab)), np.diff(self.indptr))[keep]
        alive = np.bincount(term, minlength=len(self.vocab)) > 0  # (V,) terms still used
        self.vocab = [w for w, a in zip(self.vocab, alive.tolist()) if a]
        self.term_id = {w: i for i, w in enumerate(self.vocab)}
        self.indptr = _indptr((np.cumsum(alive) - 1)[term], len(self.vocab))
        self.rows, self.tf = new_row[self.rows[keep]], self.tf[keep]
        self.doc_len = self.doc_len[~dead]
        self._derive()

    # ---- queries ----

    def _gather(self, query_terms) -> tuple[np.ndarray, np.ndarray]:
        """(rows, weights) of every posting of the query's known terms, a repeated term's
        weights multiplied by its count."""
        check_query_terms(query_terms)
        counts: dict[int, int] = {}
        for t in query_terms:
            i = self.term_id.get(t)
            if i is not None:
                counts[i] = counts.get(i, 0) + 1
        ids = np.array(list(counts), dtype=np.int64)
        starts, lengths = self.indptr[ids], self.indptr[ids + 1] - self.indptr[ids]
        # posting indices of all the ranges [start, start + length) at once
        skip = starts - (np.cumsum(lengths) - lengths)
        idx = np.arange(int(lengths.sum())) + np.repeat(skip, lengths)  # (P_q,)
        weight = self.weight[idx]
        if any(c > 1 for c in counts.values()):
            weight = weight * np.repeat(np.array(list(counts.values())), lengths)
        return self.rows[idx], weight

    def scores(self, query_terms: list[str]) -> np.ndarray:
        """BM25 score of every document: (n_docs,) float64 (0 where no query term occurs)."""
        rows, weight = self._gather(query_terms)
        return np.bincount(rows, weights=weight, minlength=self.n_docs).astype(np.float64)

    def top_k(self, query_terms: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best documents that contain a query term: (rows int64, scores float64), best
        first, equal scores by the lower row. Fewer than k when fewer documents match."""
        check_top_k_count(k)
        rows, weight = self._gather(query_terms)
        scores = np.bincount(rows, weights=weight, minlength=self.n_docs).astype(np.float64)
        matched = np.flatnonzero(np.bincount(rows, minlength=self.n_docs))  # ascending rows
        cols, best = top_k(scores[matched][None], k)
        return matched[cols[0]], best[0]


def bm25_index(
    docs_terms: list[list[str]], k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25
) -> BM25Index:
    """A BM25 index of documents given as term lists (``rag.terms.terms(text)`` each); row i is
    ``docs_terms[i]``. k1: tf saturation; b: length normalisation; epsilon: the negative-idf
    floor of rank_bm25 (module docstring)."""
    check_bm25_options(k1, b, epsilon)
    check_docs_terms(docs_terms)
    words, term, rows, tf, doc_len = _postings(docs_terms, 0, max(len(docs_terms), 1))
    return BM25Index(words, _indptr(term, len(words)), rows, tf, doc_len, k1, b, epsilon)
