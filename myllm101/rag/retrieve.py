"""Search an index three ways: BM25 (words), dense (MiniLM cosine) and hybrid (both, fused).

    retriever = Retriever(load_index("idx/"))
    for hit in retriever.search("who killed the king?", k=5, method="weighted"):
        print(hit.rank, hit.score, hit.chunk.doc, hit.chunk.start, hit.chunk.end)

bm25:   ``BM25Index.top_k`` over the query's ``terms`` (rag/terms.py: the same analyzer as the chunks).
dense:  the query embedded like the chunks (same model, same dtype), exact cosine top-k
        (fast/dense.py ``cosine_top_k``; the vectors are unit length, so a dot product).
hybrid: the top ``candidates`` of each (BM25 rows with a zero score left out: they share no word
        with the query) fused by reciprocal rank (rag/fusion.py, k=60): score = sum 1/(60 + rank).
        Rank fusion needs no calibration between BM25's unbounded scores and cosines in [-1, 1].
weighted: the same candidates fused by score: each list min-max scaled to [0, 1], then
        ``bm25_weight`` x BM25 + (1 - ``bm25_weight``) x cosine (rag/fusion.py weighted_fusion).
rerank: BM25's top ``candidates`` re-ordered by their cosine to the query (fusion.rerank_dense):
        words choose the candidates, meaning orders them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from myllm101.rag.embedder import Embedder
from myllm101.rag.store import RagIndex

METHODS = ("bm25", "dense", "hybrid", "weighted", "rerank")
# what ``ask`` and every caller use unless told: the best recall@5/10 and MRR of docs/rag's eval
DEFAULT_METHOD = "weighted"


@dataclass
class Hit:
    rank: int  # 1 = best
    row: int  # row in the index
    score: float  # the method's own score (BM25, cosine or fused)
    chunk: object  # rag/chunk.py Chunk


def _numpy(x) -> np.ndarray:
    """A torch tensor or an array -> a NumPy array (the fast twins return tensors)."""
    if hasattr(x, "detach"):
        import torch

        x = x.detach().cpu()
        x = (x.float() if x.dtype in (torch.bfloat16, torch.float16) else x).numpy()
    return np.asarray(x)


def _pairs(ranked: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """[(row, score)] -> (rows int64, scores float64)."""
    return (np.array([r for r, _ in ranked], dtype=np.int64),
            np.array([s for _, s in ranked], dtype=np.float64))  # fmt: skip


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"retriever: expected one of {', '.join(METHODS)}, got {method!r}")


def check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k: expected a positive int, got {k!r}")


class Retriever:
    """BM25 / dense / hybrid search over a ``RagIndex``. The embedding model is loaded on the
    first dense or hybrid query (``embedder`` default: the index's model in the index's dtype)."""

    def __init__(self, index: RagIndex, embedder: Embedder | None = None, candidates: int = 50,
                 rrf_k: int = 60, bm25_weight: float = 0.5):  # fmt: skip
        if not 0.0 <= bm25_weight <= 1.0:
            raise ValueError(f"bm25_weight: expected a float in [0, 1], got {bm25_weight!r}")
        self.index = index
        self._embedder = embedder
        self.candidates = candidates
        self.rrf_k = rrf_k
        self.bm25_weight = bm25_weight
        self._dense_keys = None  # dense_keys(): made on the first dense search

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            meta = self.index.meta["embedding"]
            self._embedder = Embedder(meta["name"], meta["dtype"])
        return self._embedder

    @property
    def n_chunks(self) -> int:
        return len(self.index.chunks)

    # -- one method each, many queries at once: lists of (rows, scores) --------------------------

    def bm25_rankings(self, queries: list[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        from myllm101.rag.terms import terms

        k = min(k, self.n_chunks)
        out = []
        for q in queries:
            words = terms(q)
            if not words:  # "?!": no word to match
                out.append((np.zeros(0, dtype=np.int64), np.zeros(0)))
                continue
            rows, scores = self.index.bm25.top_k(words, k)
            out.append((_numpy(rows).astype(np.int64), _numpy(scores).astype(np.float64)))
        return out

    def dense_rankings(self, queries: list[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        import torch

        from myllm101.fast.dense import cosine_top_k

        k = min(k, self.n_chunks)
        q = torch.from_numpy(self.embedder.embed(list(queries)))  # (Q, D) unit vectors
        rows, scores = cosine_top_k(q, self.dense_keys(), k, normalized=True)  # (Q, k) each
        rows, scores = _numpy(rows).astype(np.int64), _numpy(scores).astype(np.float64)
        return [(rows[i], scores[i]) for i in range(len(queries))]

    def dense_keys(self):
        """The index's unit vectors (N, D) in fast/dense.py's ``scoring_layout``: a copy made on
        the first dense search and kept (one query then reads them ~2x faster)."""
        if self._dense_keys is None:
            from myllm101.fast.dense import scoring_layout

            self._dense_keys = scoring_layout(self.index.embeddings)
        return self._dense_keys

    def hybrid_rankings(self, queries: list[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        c = max(k, self.candidates)
        return self.fuse(self.bm25_rankings(queries, c), self.dense_rankings(queries, c), k)

    def fuse(self, lexical, dense, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, BM25's and the dense (rows, scores) fused by reciprocal rank: the top k."""
        from myllm101.rag.fusion import reciprocal_rank_fusion

        out = []
        for (br, bs), (dr, _) in zip(lexical, dense, strict=True):
            fused = reciprocal_rank_fusion([br[bs > 0].tolist(), dr.tolist()], k=self.rrf_k)[:k]
            out.append(_pairs(fused))
        return out

    def weighted_rankings(self, queries: list[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:

        c = max(k, self.candidates)
        return self.weighted_fuse(
            self.bm25_rankings(queries, c), self.dense_rankings(queries, c), k
        )

    def weighted_fuse(self, lexical, dense, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, BM25's and the dense (rows, scores) fused by min-max scaled score."""
        from myllm101.rag.fusion import weighted_fusion

        w = [self.bm25_weight, 1.0 - self.bm25_weight]
        out = []
        for (br, bs), (dr, ds) in zip(lexical, dense, strict=True):
            lists = [dict(zip(br[bs > 0].tolist(), bs[bs > 0].tolist())),
                     dict(zip(dr.tolist(), ds.tolist()))]  # fmt: skip
            out.append(_pairs(weighted_fusion(lists, w)[:k]))
        return out

    def rerank_rankings(self, queries: list[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        from myllm101.rag.fusion import rerank_dense

        lexical = self.bm25_rankings(queries, max(k, self.candidates))
        q = self.embedder.embed(list(queries))  # (Q, D), unit length like the index's
        out = []
        for i, (rows, scores) in enumerate(lexical):
            rows = rows[scores > 0].tolist()
            out.append(
                _pairs(rerank_dense(rows, q[i], self.index.embeddings, min(k, len(rows)) or None))
            )
        return out

    def rankings(self, queries: list[str], k: int, method: str = DEFAULT_METHOD):
        """[(rows (k,), scores (k,)) per query], best first; k is capped at the index's size."""
        check_method(method)
        check_k(k)
        if isinstance(queries, str):
            raise ValueError("queries: expected a list of strings, got one str")
        return getattr(self, f"{method}_rankings")(list(queries), k)

    # -- what callers use ------------------------------------------------------------------------

    def search_many(
        self, queries: list[str], k: int = 5, method: str = DEFAULT_METHOD
    ) -> list[list[Hit]]:
        return [
            [Hit(i + 1, int(r), float(s), self.index.chunks[int(r)])
             for i, (r, s) in enumerate(zip(rows, scores, strict=True))]
            for rows, scores in self.rankings(queries, k, method)
        ]  # fmt: skip

    def search(self, query: str, k: int = 5, method: str = DEFAULT_METHOD) -> list[Hit]:
        """The ``k`` best chunks for ``query``, best first."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"question: expected a non-empty string, got {query!r}")
        return self.search_many([query], k, method)[0]
