"""BM25: our reference (NumPy) and fast (torch) indexes == ``rank_bm25.BM25Okapi`` on the same
tokenized corpus, == each other, and an index grown by ``add`` / shrunk by ``delete`` == a rebuild.

Tolerance against rank_bm25: the issue asks 1e-9; we check rtol = atol = 1e-12. Both sides
evaluate the same float64 formula per (term, document) pair; only the order of the sum over the
query's terms (and of the mean idf in the epsilon floor) differs, and NumPy's log may round
differently from ``math.log``: an error of a few units of 1e-16 relative to the terms (measured:
<= 2e-14 relative on this repository's own sources, where sums of positive and floored negative
idfs cancel). Reference vs fast: the same bound, and the
same rows from ``top_k``. Add / delete vs a rebuild: the stored arrays are canonical (sorted
vocabulary, postings by (term, row)), so they must be identical, not merely close.

The corpora are random documents over a small vocabulary (so many terms occur in more than half
the documents: rank_bm25's negative-idf floor is exercised), with unicode terms, empty
documents, repeated query terms and query terms outside the vocabulary.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from myllm101.fast import bm25 as fast
from myllm101.rag.terms import terms
from myllm101.reference import bm25 as ref
from parity_tests.helpers import assert_close, seeds

RTOL = ATOL = 1e-12
WORDS = ["the", "king", "queen", "é", "日本", "a_b", "x", "y", "z", "w"]
IMPLS = [ref, fast]


def rank_bm25():
    return pytest.importorskip("rank_bm25")


def random_corpus(rng: np.random.Generator, n_docs: int, vocab: int, max_len: int):
    words = WORDS[:vocab]
    return [
        [words[i] for i in rng.integers(0, vocab, rng.integers(0, max_len + 1))]
        for _ in range(n_docs)
    ]


def random_query(rng: np.random.Generator, vocab: int) -> list[str]:
    pool = WORDS[:vocab] + ["unknown"]
    return [pool[i] for i in rng.integers(0, len(pool), rng.integers(1, 6))]  # repeats allowed


def as_np(x) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def assert_same_arrays(a: dict, b: dict, name: str) -> None:
    assert a.keys() == b.keys(), name
    for key in a:
        assert a[key].dtype == b[key].dtype, (name, key, a[key].dtype, b[key].dtype)
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")


params = st.tuples(st.floats(0.0, 3.0), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
# rank_bm25 computes 0 / 0 = NaN for a document without the term when k1 = 0, or when b = 1 and the
# document is empty; ours gives such documents 0 (only postings are scored), so the oracle
# comparison stays off those two corners
oracle_params = st.tuples(st.floats(0.01, 3.0), st.floats(0.0, 0.99), st.floats(0.0, 1.0))


@given(seed=seeds, n_docs=st.integers(1, 15), vocab=st.integers(1, 10), kbe=oracle_params)
def test_scores_match_rank_bm25(seed, n_docs, vocab, kbe):
    BM25Okapi = rank_bm25().BM25Okapi
    rng = np.random.default_rng(seed)
    corpus = random_corpus(rng, n_docs, vocab, 8)
    if not any(corpus):  # rank_bm25 divides by avgdl = 0
        corpus[0] = ["the"]
    k1, b, epsilon = kbe
    oracle = BM25Okapi(corpus, k1=k1, b=b, epsilon=epsilon)
    for impl in IMPLS:
        index = impl.bm25_index(corpus, k1=k1, b=b, epsilon=epsilon)
        for _ in range(3):
            q = random_query(rng, vocab)
            expected = oracle.get_scores(q)
            got = as_np(index.scores(q))
            assert got.dtype == np.float64
            assert_close(got, expected, rtol=RTOL, atol=ATOL, name=f"{impl.__name__} {q}")


def test_negative_idf_floor_is_rank_bm25s():
    """'the' is in every document: idf(the) = ln(0.5/4.5) < 0 -> epsilon * mean idf, as rank_bm25
    does; epsilon=0 turns it off."""
    BM25Okapi = rank_bm25().BM25Okapi
    corpus = [["the", "king"], ["the", "queen"], ["the", "king", "is", "dead"], ["the"]]
    for epsilon in (0.25, 0.0, 1.0):
        oracle = BM25Okapi(corpus, epsilon=epsilon)
        for impl in IMPLS:
            index = impl.bm25_index(corpus, epsilon=epsilon)
            idf = dict(zip(index.vocab, as_np(index.idf).tolist()))
            raw = {w: math.log(4 - df + 0.5) - math.log(df + 0.5) for w, df in
                   {"the": 4, "king": 2, "queen": 1, "is": 1, "dead": 1}.items()}  # fmt: skip
            assert idf["the"] == pytest.approx(epsilon * np.mean(list(raw.values())), rel=1e-14)
            assert idf == pytest.approx(oracle.idf, rel=1e-14)
            assert_close(as_np(index.scores(["the"])), oracle.get_scores(["the"]), RTOL, ATOL)
        if epsilon == 0.0:
            assert not np.any(oracle.get_scores(["the"]))  # the term counts for nothing


def test_realistic_corpus_matches_rank_bm25():
    """Our own source files, 40 lines per document (~1000 documents, ~9k terms)."""
    BM25Okapi = rank_bm25().BM25Okapi
    import myllm101

    root = __import__("pathlib").Path(myllm101.__file__).parent
    lines = [ln for p in sorted(root.rglob("*.py")) for ln in p.read_text().splitlines()]
    docs = [terms("\n".join(lines[i : i + 40])) for i in range(0, len(lines), 40)]
    assert len(docs) > 500
    oracle = BM25Okapi(docs)
    queries = [["def", "forward", "cache"], ["rank_bm25", "epsilon"], ["torch", "the", "the"],
               ["tokenizer", "merges", "bytes"], ["nothing_like_this"]]  # fmt: skip
    for impl in IMPLS:
        index = impl.bm25_index(docs)
        for q in queries:
            expected = oracle.get_scores(q)
            assert_close(as_np(index.scores(q)), expected, RTOL, ATOL, name=f"{impl.__name__} {q}")
            rows, best = index.top_k(q, 10)
            order = np.lexsort((np.arange(len(docs)), -expected))  # ties: the lower row
            matched = order[np.isin(order, [i for i, d in enumerate(docs) if set(q) & set(d)])]
            np.testing.assert_array_equal(as_np(rows), matched[:10])
            assert_close(as_np(best), expected[matched[:10]], RTOL, ATOL)


@given(seed=seeds, n_docs=st.integers(0, 15), vocab=st.integers(1, 10), kbe=params,
       k=st.integers(1, 20))  # fmt: skip
def test_reference_equals_fast(seed, n_docs, vocab, kbe, k):
    rng = np.random.default_rng(seed)
    corpus = random_corpus(rng, n_docs, vocab, 8)
    r = ref.bm25_index(corpus, *kbe)
    f = fast.bm25_index(corpus, *kbe)
    assert_same_arrays(r.to_arrays(), f.to_arrays(), "to_arrays")
    assert r.n_docs == f.n_docs == n_docs
    for _ in range(3):
        q = random_query(rng, vocab)
        assert_close(as_np(f.scores(q)), r.scores(q), RTOL, ATOL, name=f"scores {q}")
        (r_rows, r_s), (f_rows, f_s) = r.top_k(q, k), f.top_k(q, k)
        np.testing.assert_array_equal(as_np(f_rows), r_rows)
        assert_close(as_np(f_s), r_s, RTOL, ATOL, name=f"top_k {q}")


@given(seed=seeds, n_docs=st.integers(0, 15), vocab=st.integers(1, 10), steps=st.integers(1, 4))
def test_add_and_delete_equal_a_rebuild(seed, n_docs, vocab, steps):
    rng = np.random.default_rng(seed)
    for impl in IMPLS:
        docs = random_corpus(rng, n_docs, vocab, 6)
        index = impl.bm25_index(docs, k1=1.2, b=0.6, epsilon=0.3)
        for _ in range(steps):
            if docs and rng.random() < 0.5:
                gone = rng.choice(len(docs), rng.integers(0, len(docs) + 1), replace=False)
                index.delete(gone.tolist())
                docs = [d for i, d in enumerate(docs) if i not in set(gone.tolist())]
            else:
                new = random_corpus(rng, int(rng.integers(0, 5)), vocab, 6)
                index.add(new)
                docs = docs + new
            rebuilt = impl.bm25_index(docs, k1=1.2, b=0.6, epsilon=0.3)
            assert_same_arrays(index.to_arrays(), rebuilt.to_arrays(), impl.__name__)
            q = random_query(rng, vocab)
            np.testing.assert_array_equal(as_np(index.scores(q)), as_np(rebuilt.scores(q)))


def test_arrays_round_trip_and_cross_load(tmp_path):
    corpus = [["the", "king"], ["日本", "the", "queen"], [], ["é", "é", "x"]]
    for impl, other in ((ref, fast), (fast, ref)):
        index = impl.bm25_index(corpus, k1=1.1, b=0.5, epsilon=0.1)
        np.savez(tmp_path / "bm25.npz", **index.to_arrays())
        with np.load(tmp_path / "bm25.npz") as stored:
            loaded = other.BM25Index.from_arrays(stored)
        assert (loaded.k1, loaded.b, loaded.epsilon) == (1.1, 0.5, 0.1)
        assert_same_arrays(loaded.to_arrays(), index.to_arrays(), "round trip")
        q = ["é", "the", "日本", "none"]
        assert_close(as_np(loaded.scores(q)), as_np(index.scores(q)), rtol=0, atol=0)


@pytest.mark.parametrize("impl", IMPLS, ids=["reference", "fast"])
def test_top_k_ties_and_matches(impl):
    corpus = [["b"], ["a", "b"], ["a", "b"], ["c"], ["a", "b"]]
    index = impl.bm25_index(corpus)
    rows, s = index.top_k(["a"], 2)  # rows 1, 2, 4 score the same: the lower rows first
    assert as_np(rows).tolist() == [1, 2] and as_np(s)[0] == as_np(s)[1] != 0
    rows, _ = index.top_k(["c", "nope"], 10)  # only documents holding a query term
    assert as_np(rows).tolist() == [3]
    rows, s = index.top_k(["nope"], 3)
    assert len(rows) == len(s) == 0
    empty = impl.bm25_index([])
    assert empty.n_docs == 0 and len(empty.scores(["a"])) == 0
    empty.add([["a"]])
    assert as_np(empty.top_k(["a"], 1)[0]).tolist() == [0]


@pytest.mark.parametrize("impl", IMPLS, ids=["reference", "fast"])
def test_bad_input(impl):
    with pytest.raises(ValueError, match=r"b: expected a float in \[0, 1\], got 1.5"):
        impl.bm25_index([["a"]], b=1.5)
    with pytest.raises(ValueError, match="k1: expected a finite float >= 0, got -1"):
        impl.bm25_index([["a"]], k1=-1)
    with pytest.raises(ValueError, match="epsilon: expected a finite float >= 0, got nan"):
        impl.bm25_index([["a"]], epsilon=float("nan"))
    with pytest.raises(ValueError, match="docs_terms: expected a list of term lists, got str"):
        impl.bm25_index("a b c")
    with pytest.raises(
        ValueError, match=r"docs_terms\[1\]: expected a list of terms \(str\), got str"
    ):
        impl.bm25_index([["a"], "b c"])
    with pytest.raises(ValueError, match="docs_terms: expected terms of type str, got int 3"):
        impl.bm25_index([["a", 3]])
    index = impl.bm25_index([["a"], ["b"]])
    with pytest.raises(ValueError, match=r"query_terms: expected at least one term, got \[\]"):
        index.scores([])
    with pytest.raises(ValueError, match="query_terms: expected a list of terms .*, got str"):
        index.top_k("a", 1)
    with pytest.raises(ValueError, match="k: expected a positive int, got 0"):
        index.top_k(["a"], 0)
    with pytest.raises(ValueError, match=r"doc_rows: expected rows in \[0, 2\), got 2"):
        index.delete([0, 2])
    arrays = index.to_arrays()
    with pytest.raises(ValueError, match=r"arrays: expected the keys .*, missing \['tf'\]"):
        impl.BM25Index.from_arrays({k: v for k, v in arrays.items() if k != "tf"})
    with pytest.raises(ValueError, match="arrays: not a BM25 index: rows must lie in"):
        impl.BM25Index.from_arrays({**arrays, "rows": arrays["rows"] + 5})
