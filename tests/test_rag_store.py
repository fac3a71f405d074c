"""The RAG index on disk (rag/store.py): round trip, incremental update == rebuild, clear errors
for damaged or foreign indexes, and an interrupted build that leaves the old index intact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from myllm101.rag.embedder import Embedder
from myllm101.rag.store import (
    EMB_FILE,
    MANIFEST,
    IndexSettings,
    build_index,
    index_documents,
    load_index,
    save_index,
)
from myllm101.rag.terms import terms
from myllm101.train.checkpoint import TMP_PREFIX, write_manifest

SETTINGS = IndexSettings(max_tokens=40, overlap=8)  # small chunks: several per file
QUERIES = ["the river and the mill", "copper kettle", "winter snow on the hills", "bread"]

TEXTS = {
    "a.md": "# The mill\n\nThe old mill stands by the river. Its wheel turns all day and the "
    "miller grinds wheat into flour for the village bakers.\n\nIn spring the river floods the "
    "meadow and the mill stops until the water falls again.\n",
    "b.txt": "A copper kettle sings on the stove. The tinker mends pots and pans and sells new "
    "kettles at the market every Saturday morning.\n\nHis cart is painted blue.\n",
    "c.md": "Winter brings snow to the hills. Shepherds bring the sheep down to the valley "
    "before the passes close, and the village bakes extra bread for the long nights.\n",
}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(dtype="fp32")  # fp32: vectors from different batches agree to ~1e-7


def write_docs(folder: Path, texts: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for p in folder.iterdir():
        p.unlink()
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def by_id(index) -> dict[str, tuple]:
    """chunk id -> (doc, start, end, text, vector, {query: bm25 score})."""
    scores = {q: np.asarray(index.bm25.scores(terms(q))) for q in QUERIES}
    return {c.id: (c.doc, c.start, c.end, c.text, index.embeddings[i],
                   {q: float(s[i]) for q, s in scores.items()})
            for i, c in enumerate(index.chunks)}  # fmt: skip


def assert_same_index(a, b, vec_atol: float) -> None:
    """Same chunks, BM25 scores and vectors, matched by chunk id (row order may differ)."""
    ia, ib = by_id(a), by_id(b)
    assert sorted(ia) == sorted(ib)
    for cid, (doc, start, end, text, vec, sc) in ia.items():
        doc2, start2, end2, text2, vec2, sc2 = ib[cid]
        assert (doc, start, end, text) == (doc2, start2, end2, text2), cid
        # float64 sums of the same terms: equal to rounding
        for q in QUERIES:
            assert sc[q] == pytest.approx(sc2[q], rel=1e-12, abs=1e-12), (cid, q)
        # fp32 MiniLM: a chunk padded within another batch changes the GEMMs' blocking only
        np.testing.assert_allclose(vec, vec2, atol=vec_atol, rtol=0, err_msg=cid)
    assert a.documents == b.documents
    assert a.meta["embedding"] == b.meta["embedding"]


def test_round_trip(tmp_path, embedder):
    docs = write_docs(tmp_path / "docs", TEXTS)
    index, report = index_documents(docs, tmp_path / "idx", embedder=embedder, settings=SETTINGS)
    assert len(index.chunks) > len(TEXTS) and sorted(report.added) == sorted(index.documents)
    loaded = load_index(tmp_path / "idx")
    assert loaded.chunks == index.chunks
    assert loaded.meta == index.meta
    np.testing.assert_array_equal(loaded.embeddings, index.embeddings)
    a, b = index.bm25.to_arrays(), loaded.bm25.to_arrays()
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert_same_index(index, loaded, vec_atol=0)
    # byte offsets point into the files
    for c in loaded.chunks:
        data = (docs / Path(c.doc).name).read_bytes()
        assert data[c.start : c.end].decode("utf-8") == c.text
    assert loaded.meta["embedding"]["dtype"] == "fp32" and loaded.meta["embedding"]["dim"] == 384


def test_update_adds_changes_deletes_like_a_rebuild(tmp_path, embedder):
    docs = write_docs(tmp_path / "docs", TEXTS)
    index_documents(docs, tmp_path / "idx", embedder=embedder, settings=SETTINGS)
    new = dict(TEXTS)
    new["a.md"] = TEXTS["a.md"].replace("old mill", "ruined mill")  # changed
    del new["b.txt"]  # vanished
    new["d.txt"] = "Bees keep the orchard alive. The beekeeper sells honey by the river.\n"  # new
    write_docs(docs, new)
    updated, report = index_documents(docs, tmp_path / "idx", update=True)
    assert report.changed == [p for p in updated.documents if p.endswith("a.md")]
    assert len(report.added) == 1 and report.added[0].endswith("d.txt")
    assert len(report.deleted) == 1 and report.deleted[0].endswith("b.txt")
    assert len(report.unchanged) == 1 and report.unchanged[0].endswith("c.md")
    rebuilt = build_index([d for d in _load(docs)], embedder, SETTINGS)
    assert_same_index(updated, rebuilt, vec_atol=2e-6)
    assert_same_index(load_index(tmp_path / "idx"), rebuilt, vec_atol=2e-6)
    # nothing changed: nothing re-embedded, the index stays as it was
    again, report = index_documents(docs, tmp_path / "idx", update=True)
    assert report.summary() == "0 added, 0 changed, 0 deleted, 3 unchanged"
    np.testing.assert_array_equal(again.embeddings, updated.embeddings)


def _load(folder):
    from myllm101.rag.documents import load_documents

    return load_documents(folder)


@pytest.fixture()
def saved(tmp_path, embedder) -> Path:
    docs = write_docs(tmp_path / "docs", TEXTS)
    index_documents(docs, tmp_path / "idx", embedder=embedder, settings=SETTINGS)
    return tmp_path / "idx"


def test_truncated_or_edited_files_are_named(saved):
    emb = saved / EMB_FILE
    emb.write_bytes(emb.read_bytes()[:-100])
    with pytest.raises(ValueError, match=f"{EMB_FILE} is truncated or altered: expected"):
        load_index(saved)


def test_edited_chunk_text_is_caught(saved):
    path = saved / "chunks.jsonl"
    data = path.read_bytes()
    path.write_bytes(data.replace(b"mill", b"mull", 1))  # same size, other bytes
    with pytest.raises(ValueError, match="chunks.jsonl is corrupted or was edited"):
        load_index(saved)


def test_missing_or_corrupt_manifest(saved):
    (saved / MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="corrupted manifest"):
        load_index(saved)
    (saved / MANIFEST).unlink()
    with pytest.raises(ValueError, match="not a complete rag index .manifest.json is missing"):
        load_index(saved)
    with pytest.raises(FileNotFoundError, match="no such index directory"):
        load_index(saved.parent / "nowhere")


def test_arrays_that_disagree_or_do_not_parse(saved):
    from safetensors.numpy import save_file

    save_file({"embeddings": np.zeros((2, 384), dtype=np.float32)}, str(saved / EMB_FILE))
    write_manifest(saved)  # a consistent manifest over inconsistent parts
    with pytest.raises(ValueError, match=r"its parts disagree: .* embeddings \(2, 384\)"):
        load_index(saved)
    (saved / "bm25.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    write_manifest(saved)
    with pytest.raises(ValueError, match="unreadable arrays"):
        load_index(saved)


def test_index_of_another_embedding_model_is_refused(tmp_path, embedder, monkeypatch):
    class OtherModel(Embedder):
        @property
        def identity(self):
            return {**super().identity, "weights_sha256": "0" * 64}

    docs = write_docs(tmp_path / "docs", TEXTS)
    index_documents(docs, tmp_path / "idx", embedder=OtherModel(dtype="fp32"), settings=SETTINGS)
    with pytest.raises(ValueError, match="built with another embedding model .weights_sha256"):
        load_index(tmp_path / "idx")
    with pytest.raises(ValueError, match="another embedding model"):
        index_documents(docs, tmp_path / "idx", update=True)
    assert load_index(tmp_path / "idx", check_model=False).meta["embedding"]["weights_sha256"] == (
        "0" * 64
    )


def test_update_refuses_other_settings_or_dtype(saved):
    with pytest.raises(ValueError, match="--update: the index was built with"):
        index_documents(saved.parent / "docs", saved, update=True, settings=IndexSettings())
    with pytest.raises(ValueError, match="dtype: the index's vectors were made in fp32"):
        index_documents(saved.parent / "docs", saved, update=True, embedder=Embedder(dtype="bf16"))


def test_interrupted_build_leaves_the_previous_index(saved, embedder, monkeypatch):
    before = load_index(saved)
    manifest = (saved / MANIFEST).read_bytes()
    docs = write_docs(saved.parent / "docs", {"z.md": "Something else entirely, about zebras.\n"})
    import safetensors.numpy

    def crash(*args, **kwargs):
        raise RuntimeError("power cut while writing the embeddings")

    monkeypatch.setattr(safetensors.numpy, "save_file", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        index_documents(docs, saved, embedder=embedder, settings=SETTINGS)
    assert (saved / MANIFEST).read_bytes() == manifest
    after = load_index(saved)
    assert after.chunks == before.chunks and after.meta == before.meta
    np.testing.assert_array_equal(after.embeddings, before.embeddings)
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_bad_settings_and_targets(tmp_path, embedder):
    with pytest.raises(
        ValueError, match="overlap: expected 0 <= overlap < max_tokens .10., got 10"
    ):
        IndexSettings(max_tokens=10, overlap=10)
    with pytest.raises(ValueError, match="max_tokens: expected >= 1, got 0"):
        IndexSettings(max_tokens=0, overlap=0)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    index = build_index(_load(write_docs(tmp_path / "docs", TEXTS)), embedder, SETTINGS)
    with pytest.raises(ValueError, match="a non-empty directory that is not a rag index"):
        save_index(index, other)
    assert (other / "notes.txt").read_text() == "keep me"
    meta = json.loads(json.dumps(index.meta))
    assert meta["settings"] == {"max_tokens": 40, "overlap": 8, "k1": 1.5, "b": 0.75,
                                "epsilon": 0.25}  # fmt: skip
