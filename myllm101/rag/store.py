"""The RAG index on disk: chunks, BM25 postings and embeddings, written atomically.

    index = build_index(load_documents("docs/"), Embedder())     # in memory (rag/embedder.py)
    save_index(index, "idx/")                                     # atomic: all or nothing
    index = load_index("idx/")                                    # verified: clear errors
    index, report = update_index(index, load_documents("docs/"), Embedder(index.meta["embedding"]["dtype"]))

One index directory holds

    index.json              format version, the embedding model (name, sha256 of its weights, dim,
                            the dtype the vectors were made in), the chunking tokenizer (name,
                            sha256 of its vocabulary), chunk and BM25 settings, and every document:
                            {path: {"sha256", "bytes", "chunks"}}
    chunks.jsonl            one chunk a line: {"id", "doc", "start", "end", "text"} (byte offsets)
    bm25.npz                BM25Index.to_arrays() (fast/bm25.py; the vocabulary is arrays too)
    embeddings.safetensors  "embeddings": (n_chunks, dim) float32, unit length, row i = chunk i
    manifest.json           size and sha256 of the four files above, written last

Atomic: ``save_index`` writes everything into a hidden temp folder beside the target, fsyncs and
renames it into place (train/checkpoint.py ``write_dir_atomically``), so an interrupted build leaves
the previous index as it was. ``load_index`` checks the manifest (a missing, truncated or edited
file is a ValueError naming it), the shapes (rows of every part agree) and the embedding model: an
index made with other weights or another tokenizer is refused, since its vectors and the query's
would not be comparable.

Incremental update (``update_index``): documents are compared by the sha256 of their bytes;
unchanged ones keep their chunks, BM25 rows and vectors; changed and vanished ones are deleted
(``BM25Index.delete``), changed and new ones chunked, embedded and appended (``BM25Index.add``).
The result equals a rebuild chunk for chunk (same ids, texts, BM25 scores, vectors); only the row
order differs (kept rows first, new ones after).

Chunks are counted in the embedding model's own (WordPiece) tokens, so a 200-token chunk fits
MiniLM's 256-token window whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from myllm101.files import sha256_file
from myllm101.rag.embedder import Embedder

FORMAT = "myllm101-rag-index"
FORMAT_VERSION = 1
META_FILE, CHUNKS_FILE, BM25_FILE, EMB_FILE = (
    "index.json",
    "chunks.jsonl",
    "bm25.npz",
    "embeddings.safetensors",
)
INDEX_FILES = (META_FILE, CHUNKS_FILE, BM25_FILE, EMB_FILE)
MANIFEST = "manifest.json"


# ----------------------------------------------------------------------------------------------
# the index in memory


@dataclass
class IndexSettings:
    """How chunks are cut and BM25 scores."""

    max_tokens: int = 200
    overlap: int = 40
    k1: float = 1.5
    b: float = 0.75
    epsilon: float = 0.25

    def __post_init__(self) -> None:
        for name in ("max_tokens", "overlap"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{name}: expected an int, got {v!r}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens: expected >= 1, got {self.max_tokens}")
        if not 0 <= self.overlap < self.max_tokens:
            raise ValueError(
                f"overlap: expected 0 <= overlap < max_tokens ({self.max_tokens}), got {self.overlap}"
            )


@dataclass
class RagIndex:
    """Everything a retriever needs; row i of ``bm25`` and ``embeddings`` is ``chunks[i]``."""

    chunks: list  # list[Chunk]
    bm25: object  # fast.bm25.BM25Index
    embeddings: np.ndarray  # (n_chunks, dim) float32
    meta: dict = field(default_factory=dict)  # index.json

    @property
    def documents(self) -> dict[str, dict]:
        return self.meta["documents"]

    @property
    def embedding_dtype(self) -> str:
        return self.meta["embedding"]["dtype"]


@dataclass
class UpdateReport:
    """What ``update_index`` did, by document path."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.changed)} changed, {len(self.deleted)} deleted, "
            f"{len(self.unchanged)} unchanged"
        )


def _doc_sha256(doc) -> str:
    return hashlib.sha256(doc.text.encode("utf-8")).hexdigest()


def _doc_entry(doc, n_chunks: int) -> dict:
    return {"sha256": _doc_sha256(doc), "bytes": len(doc.text.encode("utf-8")), "chunks": n_chunks}


def _check_unique_paths(documents) -> None:
    seen = set()
    for d in documents:
        if d.path in seen:
            raise ValueError(f"documents: expected unique paths, got {d.path!r} twice")
        seen.add(d.path)


def _chunk(documents, embedder: Embedder, settings: IndexSettings) -> list:
    from myllm101.rag.chunk import chunk_document

    out = []
    tok = embedder.tokenizer
    for d in documents:
        out.extend(chunk_document(d, tok, max_tokens=settings.max_tokens, overlap=settings.overlap))
    return out


def _chunk_counts(chunks) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in chunks:
        counts[c.doc] = counts.get(c.doc, 0) + 1
    return counts


def _meta(embedder: Embedder, settings: IndexSettings, docs: dict[str, dict], n: int) -> dict:
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "embedding": {**embedder.identity, "dtype": embedder.dtype},
        "settings": asdict(settings),
        "n_chunks": n,
        "documents": dict(sorted(docs.items())),
    }


def build_index(
    documents, embedder: Embedder | None = None, settings: IndexSettings | None = None,
    progress: bool = False,
) -> RagIndex:  # fmt: skip
    """Chunk, BM25-index and embed ``documents`` (rag/documents.py ``Document``s) from scratch."""
    from myllm101.fast.bm25 import bm25_index
    from myllm101.rag.terms import terms

    embedder = embedder or Embedder()
    settings = settings or IndexSettings()
    documents = sorted(documents, key=lambda d: d.path)
    _check_unique_paths(documents)
    chunks = _chunk(documents, embedder, settings)
    if not chunks:
        raise ValueError(
            "documents: expected at least one non-empty document, got no text to index"
        )
    bm25 = bm25_index([terms(c.text) for c in chunks], k1=settings.k1, b=settings.b,
                      epsilon=settings.epsilon)  # fmt: skip
    vectors = embedder.embed([c.text for c in chunks], progress=progress)
    counts = _chunk_counts(chunks)
    docs = {d.path: _doc_entry(d, counts.get(d.path, 0)) for d in documents}
    return RagIndex(chunks, bm25, vectors, _meta(embedder, settings, docs, len(chunks)))


def check_embedder(index: RagIndex, embedder: Embedder, where: str = "index") -> None:
    """The index's vectors and ``embedder``'s are comparable (same weights, tokenizer, dim)."""
    have = {k: v for k, v in index.meta["embedding"].items() if k != "dtype"}
    want = embedder.identity
    if have != want:
        diff = ", ".join(
            f"{k}: index {have.get(k)!r:.20} vs now {want.get(k)!r:.20}"
            for k in sorted(set(have) | set(want))
            if have.get(k) != want.get(k)
        )
        raise ValueError(
            f"{where}: built with another embedding model ({diff}); its vectors cannot be compared "
            f"with this model's: rebuild it with myllm101 rag index DOCS --out IDX (no --update)"
        )


def update_index(
    index: RagIndex, documents, embedder: Embedder | None = None, progress: bool = False
) -> tuple[RagIndex, UpdateReport]:
    """``index`` brought up to date with ``documents`` (the whole current set: a document not in
    it is deleted) without a rebuild. Chunk and BM25 settings are the index's own; ``embedder``
    must be the index's model (default: the index's model in the index's dtype)."""
    from myllm101.rag.terms import terms

    embedder = embedder or Embedder(index.meta["embedding"]["name"], index.embedding_dtype)
    check_embedder(index, embedder)
    if embedder.dtype != index.embedding_dtype:
        raise ValueError(
            f"dtype: the index's vectors were made in {index.embedding_dtype}; expected the same "
            f"for new ones, got {embedder.dtype} (rebuild the index to change it)"
        )
    settings = IndexSettings(**index.meta["settings"])
    documents = sorted(documents, key=lambda d: d.path)
    _check_unique_paths(documents)
    old = index.documents
    report = UpdateReport()
    fresh = []  # documents to chunk and embed
    for d in documents:
        if d.path not in old:
            report.added.append(d.path)
            fresh.append(d)
        elif old[d.path]["sha256"] != _doc_sha256(d):
            report.changed.append(d.path)
            fresh.append(d)
        else:
            report.unchanged.append(d.path)
    current = {d.path for d in documents}
    report.deleted = sorted(p for p in old if p not in current)
    stale = set(report.changed) | set(report.deleted)
    drop = [i for i, c in enumerate(index.chunks) if c.doc in stale]
    keep = [i for i, c in enumerate(index.chunks) if c.doc not in stale]
    new_chunks = _chunk(fresh, embedder, settings)
    if not keep and not new_chunks:
        raise ValueError(
            "documents: expected at least one non-empty document, got no text to index"
        )
    bm25 = type(index.bm25).from_arrays(index.bm25.to_arrays())  # ``index`` stays as it was
    if drop:
        bm25.delete(drop)
    if new_chunks:
        bm25.add([terms(c.text) for c in new_chunks])
    vectors = np.concatenate(
        [index.embeddings[keep], embedder.embed([c.text for c in new_chunks], progress=progress)]
    )
    chunks = [index.chunks[i] for i in keep] + new_chunks
    counts = _chunk_counts(chunks)
    docs = {d.path: _doc_entry(d, counts.get(d.path, 0)) for d in documents}
    return RagIndex(chunks, bm25, vectors, _meta(embedder, settings, docs, len(chunks))), report


# ----------------------------------------------------------------------------------------------
# on disk


def save_index(index: RagIndex, path) -> Path:
    """Write ``index`` to the directory ``path`` atomically (replacing an index there)."""
    from safetensors.numpy import save_file

    from myllm101.train.checkpoint import write_dir_atomically

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path}: expected a directory (or nothing), got a file")
    if path.is_dir() and any(path.iterdir()) and not (path / META_FILE).exists():
        raise ValueError(
            f"--out {path}: a non-empty directory that is not a rag index; refusing to replace it"
        )

    def fill(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / META_FILE).write_text(json.dumps(index.meta, indent=1), encoding="utf-8")
        with open(tmp / CHUNKS_FILE, "w", encoding="utf-8") as f:
            for c in index.chunks:
                row = {"id": c.id, "doc": c.doc, "start": c.start, "end": c.end, "text": c.text}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        arrays = {k: np.ascontiguousarray(v) for k, v in index.bm25.to_arrays().items()}
        np.savez(tmp / BM25_FILE, **arrays)
        emb = np.ascontiguousarray(index.embeddings, dtype=np.float32)
        save_file({"embeddings": emb}, str(tmp / EMB_FILE))
        for name in INDEX_FILES:  # durable before the manifest vouches for them
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())

    return write_dir_atomically(path, fill)


def _verify_files(path: Path) -> None:
    """manifest.json present, well-formed and matching every index file's size and sha256."""
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise ValueError(
            f"{path}: not a complete rag index ({MANIFEST} is missing); build it with "
            f"myllm101 rag index DOCS --out {path}"
        )
    try:
        files = json.loads(mpath.read_text(encoding="utf-8"))["files"]
        listed = {name: (int(files[name]["size"]), str(files[name]["sha256"])) for name in files}
    except (ValueError, KeyError, TypeError) as e:  # JSONDecodeError and UnicodeDecodeError too
        raise ValueError(f"{mpath}: corrupted manifest ({type(e).__name__}: {e})") from None
    missing = [n for n in INDEX_FILES if n not in listed]
    if missing:
        raise ValueError(f"{mpath}: does not list {', '.join(missing)}: not a myllm101 rag index")
    for name in INDEX_FILES:
        size, sha = listed[name]
        p = path / name
        if not p.is_file():
            raise ValueError(f"index {path}: {name} is missing")
        if p.stat().st_size != size:
            raise ValueError(
                f"index {path}: {name} is truncated or altered: expected {size} bytes, "
                f"got {p.stat().st_size}"
            )
        if sha256_file(p) != sha:
            raise ValueError(
                f"index {path}: {name} is corrupted or was edited after it was written "
                f"(sha256 mismatch with {MANIFEST})"
            )


def _read_meta(path: Path) -> dict:
    mpath = path / META_FILE
    try:
        meta = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise ValueError(f"{mpath}: corrupted index metadata ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{mpath}: expected a {FORMAT} file, got something else")
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{mpath}: expected index format version {FORMAT_VERSION}, got {meta.get('version')!r}"
            f"; rebuild it with myllm101 rag index DOCS --out {path}"
        )
    need = ("embedding", "settings", "n_chunks", "documents")
    if any(k not in meta for k in need):
        raise ValueError(f"{mpath}: expected keys {', '.join(need)}, got {sorted(meta)}")
    return meta


def _read_chunks(path: Path) -> list:
    from myllm101.rag.chunk import Chunk

    out = []
    with open(path / CHUNKS_FILE, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                out.append(Chunk(row["id"], row["doc"], int(row["start"]), int(row["end"]),
                                 row["text"]))  # fmt: skip
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(
                    f"{path / CHUNKS_FILE}:{i}: expected a chunk object, got {type(e).__name__}: {e}"
                ) from None
    return out


def load_index(path, embedder: Embedder | None = None, check_model: bool = True) -> RagIndex:
    """Read and verify the index in ``path``. ``check_model``: refuse an index made with another
    embedding model than ``embedder`` (default: the index's model name, as installed now)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from myllm101.fast.bm25 import BM25Index
    from myllm101.train.checkpoint import OLD_PREFIX

    path = Path(path)
    if not path.is_dir():
        # killed between write_dir_atomically's two renames: the old index waits beside it
        aside = sorted(path.parent.glob(f"{OLD_PREFIX}{path.name}-*"))
        hint = (
            f"; an interrupted save left the previous one at {aside[-1]}: rename it"
            if aside
            else ""
        )
        raise FileNotFoundError(
            f"{path}: no such index directory (build one with myllm101 rag index DOCS --out "
            f"{path}){hint}"
        )
    _verify_files(path)
    meta = _read_meta(path)
    chunks = _read_chunks(path)
    try:
        with np.load(path / BM25_FILE, allow_pickle=False) as z:
            bm25 = BM25Index.from_arrays({k: z[k] for k in z.files})
        emb = load_file(str(path / EMB_FILE))["embeddings"]
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile, SafetensorError) as e:
        raise ValueError(f"index {path}: unreadable arrays ({type(e).__name__}: {e})") from None
    n, dim = len(chunks), meta["embedding"].get("dim")
    if meta["n_chunks"] != n or bm25.n_docs != n or emb.shape != (n, dim):
        raise ValueError(
            f"index {path}: its parts disagree: index.json says {meta['n_chunks']} chunks, "
            f"chunks.jsonl has {n}, bm25 {bm25.n_docs} rows, embeddings {tuple(emb.shape)} "
            f"(expected ({n}, {dim}))"
        )
    index = RagIndex(chunks, bm25, emb.astype(np.float32, copy=False), meta)
    if check_model:
        embedder = embedder or Embedder(meta["embedding"]["name"], index.embedding_dtype)
        check_embedder(index, embedder, where=f"index {path}")
    return index


def index_documents(
    docs, out, update: bool = False, embedder: Embedder | None = None,
    settings: IndexSettings | None = None, progress: bool = False,
) -> tuple[RagIndex, UpdateReport]:  # fmt: skip
    """``myllm101 rag index DOCS --out IDX [--update]``: build (or update) and save atomically.
    Without an index in ``out``, ``update`` builds one."""
    from myllm101.rag.documents import load_documents

    documents = load_documents(docs)
    out = Path(out)
    if update and (out / MANIFEST).exists():
        old = load_index(out, embedder)
        if settings is not None and asdict(settings) != old.meta["settings"]:
            raise ValueError(
                f"--update: the index was built with {old.meta['settings']}, got {asdict(settings)}"
                f"; rebuild it (without --update) to change how chunks are cut"
            )
        index, report = update_index(old, documents, embedder, progress=progress)
    else:
        index = build_index(documents, embedder, settings, progress=progress)
        report = UpdateReport(added=sorted(index.documents))
    save_index(index, out)
    return index, report
