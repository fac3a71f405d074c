"""Inputs for benchmarks/test_rag.py, built offline from text already on this machine.

- ``corpus_chunks(n)``: n chunk texts. The Shakespeare splits (data/shakespeare/{train,val,test}.txt,
  when ``make data`` has fetched them), then the Python standard library's own ``.py`` sources in
  sorted order (~32 MB), then the installed packages' sources (this environment's site-packages,
  sorted), cut by our chunker (rag/chunk.py) into chunks of at most 64 whitespace-separated
  words (~100 BPE tokens), without overlap. 10k chunks are Shakespeare; 100k add ~31 MB of the
  standard library and ~15 MB of installed packages.
- ``sample_queries(docs_terms, n, seed)``: n queries of 2-5 distinct terms, each drawn from one
  random chunk, so every query matches something and mixes common terms with rare ones.
- ``unit_vectors(n, dim, seed)``: random unit float32 vectors. The dense benchmark times exact
  top-k, whose cost depends on the shape only; embedding 100k chunks with MiniLM would take an
  hour on 2 cores.
"""

from __future__ import annotations

import functools
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from myllm101.rag.chunk import chunk_document
from myllm101.rag.documents import Document

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = [ROOT / "data" / "shakespeare" / f"{s}.txt" for s in ("train", "val", "test")]
WORDS_PER_CHUNK = 64


class WhitespaceWords:
    """Counts whitespace-separated words: a tokenizer for the chunker that costs nothing."""

    def encode(self, text: str) -> list[int]:
        return [0] * len(text.split())


def _documents() -> Iterator[Document]:
    for path in SHAKESPEARE:
        if path.is_file():
            yield Document(str(path), path.read_text(encoding="utf-8"))
    paths = sysconfig.get_paths()
    stdlib = sorted(
        p for p in Path(paths["stdlib"]).rglob("*.py") if "site-packages" not in p.parts
    )
    installed = sorted(Path(paths["purelib"]).rglob("*.py"))
    for path in stdlib + installed:
        try:
            yield Document(str(path), path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue  # a few test files are deliberately not UTF-8


@functools.cache
def corpus_chunks(n: int) -> tuple[str, ...]:
    """The first n chunk texts (module docstring); fewer only if the sources run out."""
    out: list[str] = []
    for doc in _documents():
        out.extend(c.text for c in chunk_document(doc, WhitespaceWords(), WORDS_PER_CHUNK, 0))
        if len(out) >= n:
            break
    return tuple(out[:n])


def sample_queries(docs_terms: list[list[str]], n: int, seed: int = 0) -> list[list[str]]:
    """n queries of 2-5 distinct terms, each from one random non-empty chunk."""
    rng = np.random.default_rng(seed)
    nonempty = [t for t in docs_terms if t]
    queries = []
    for _ in range(n):
        words = sorted(set(nonempty[int(rng.integers(len(nonempty)))]))
        size = min(len(words), int(rng.integers(2, 6)))
        queries.append([words[i] for i in rng.choice(len(words), size, replace=False)])
    return queries


def unit_vectors(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    """(n, dim) float32, each row of unit length."""
    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
