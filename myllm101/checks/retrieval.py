"""Input checks of the retrieval twins (reference/ and fast/ ``bm25.py`` and ``dense.py``).

NumPy is allowed here (both trees have it; the index arrays are NumPy in both), torch is not.
"""

from __future__ import annotations

import math

import numpy as np

from myllm101.checks import FLOAT_DTYPES, dtype_name


def check_top_k_count(k) -> None:
    """k: a positive int (the number of results asked for)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected a positive int, got {k!r}")


def check_cosine_top_k(queries, keys, k, block_size) -> None:
    """queries (Q, D) and keys (N, D): float arrays of the same width; k, block_size > 0."""
    for name, x in (("queries", queries), ("keys", keys)):
        if len(x.shape) != 2:
            raise ValueError(
                f"{name}: expected a 2-D array (rows, dim), got shape {tuple(x.shape)}"
            )
        if dtype_name(x) not in FLOAT_DTYPES:
            raise ValueError(f"{name}: expected a float dtype, got {dtype_name(x)}")
    if queries.shape[1] != keys.shape[1]:
        raise ValueError(
            f"queries: expected dim {keys.shape[1]} (the keys' width), got {queries.shape[1]}"
        )
    check_top_k_count(k)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size: expected a positive int, got {block_size!r}")


def check_bm25_options(k1, b, epsilon) -> None:
    """k1 >= 0, 0 <= b <= 1, epsilon >= 0 (finite floats)."""
    for name, v in (("k1", k1), ("epsilon", epsilon)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
            raise ValueError(f"{name}: expected a finite float >= 0, got {v!r}")
    if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b <= 1:
        raise ValueError(f"b: expected a float in [0, 1], got {b!r}")


def check_docs_terms(docs_terms) -> None:
    """A list of documents, each a list of terms (str); terms themselves are checked later."""
    if isinstance(docs_terms, (str, bytes)) or not isinstance(docs_terms, (list, tuple)):
        raise ValueError(
            f"docs_terms: expected a list of term lists, got {type(docs_terms).__name__}"
        )
    for i, doc in enumerate(docs_terms):
        if not isinstance(doc, (list, tuple)):
            raise ValueError(
                f"docs_terms[{i}]: expected a list of terms (str), got {type(doc).__name__}"
                + (" (split it first: rag.terms.terms(text))" if isinstance(doc, str) else "")
            )


def check_terms_are_str(words, name: str = "docs_terms") -> None:
    """Every distinct term is a str (checked once per vocabulary entry, not per occurrence)."""
    for w in words:
        if type(w) is not str:
            raise ValueError(f"{name}: expected terms of type str, got {type(w).__name__} {w!r}")


def check_query_terms(query_terms) -> None:
    """A non-empty list of str."""
    if isinstance(query_terms, str) or not isinstance(query_terms, (list, tuple)):
        raise ValueError(
            f"query_terms: expected a list of terms (str), got {type(query_terms).__name__}"
            + (" (split it first: rag.terms.terms(query))" if isinstance(query_terms, str) else "")
        )
    if not query_terms:
        raise ValueError("query_terms: expected at least one term, got [] (a query with no words)")
    check_terms_are_str(query_terms, "query_terms")


def check_doc_rows(doc_rows, n_docs: int) -> np.ndarray:
    """A list of distinct-or-repeated int rows in [0, n_docs) -> int64 array."""
    if isinstance(doc_rows, (str, bytes)) or not hasattr(doc_rows, "__len__"):
        raise ValueError(f"doc_rows: expected a list of int rows, got {type(doc_rows).__name__}")
    arr = np.asarray(doc_rows)
    if arr.size and (arr.ndim != 1 or arr.dtype.kind not in "iu"):
        raise ValueError(
            f"doc_rows: expected a list of int rows, got {arr.dtype} shape {arr.shape}"
        )
    arr = arr.astype(np.int64).reshape(-1)
    bad = arr[(arr < 0) | (arr >= n_docs)]
    if bad.size:
        raise ValueError(f"doc_rows: expected rows in [0, {n_docs}), got {int(bad[0])}")
    return arr


def check_bm25_arrays(a: dict) -> None:
    """Shapes and ranges of ``to_arrays``' output, so a damaged file fails with a clear message."""
    V = len(a["vocab_offsets"]) - 1
    P, N = len(a["rows"]), len(a["doc_len"])
    problems = []
    if V < 0 or len(a["indptr"]) != V + 1:
        problems.append(f"indptr length {len(a['indptr'])} != vocabulary size {V} + 1")
    elif a["indptr"][0] != 0 or a["indptr"][-1] != P or np.any(np.diff(a["indptr"]) < 0):
        problems.append(f"indptr must rise from 0 to the {P} postings")
    if len(a["tf"]) != P:
        problems.append(f"tf length {len(a['tf'])} != rows length {P}")
    if P and (a["rows"].min() < 0 or a["rows"].max() >= N):
        problems.append(f"rows must lie in [0, {N})")
    if V >= 0 and len(a["vocab_offsets"]) and a["vocab_offsets"][-1] != len(a["vocab_bytes"]):
        problems.append("vocab_offsets must end at len(vocab_bytes)")
    if a["params"].shape != (3,):
        problems.append(f"params: expected (k1, b, epsilon), got shape {a['params'].shape}")
    if problems:
        raise ValueError("arrays: not a BM25 index: " + "; ".join(problems))
