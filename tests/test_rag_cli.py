"""``myllm101 rag index`` / ``rag ask`` end to end on a tiny folder, through rag/cli.py's ``run``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from myllm101.rag import cli
from tests.weights import skip_without_smollm2

DOCS = {
    "bees.md": "# Bees\n\nThe beekeeper Marta Olsen keeps forty hives on the hill. Her bees make "
    "heather honey in August.\n",
    "trains.txt": "The night train to Tromso leaves at nine from platform four. It carries a "
    "sleeping car and a dining car.\n",
    "notes/tea.md": "Green tea is steeped at eighty degrees for two minutes; black tea wants "
    "boiling water and four minutes.\n",
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rag") / "docs"
    for name, text in DOCS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def index_dir(folder) -> Path:
    out = folder.parent / "idx"
    assert cli.run(["index", str(folder), "--out", str(out), "--dtype", "fp32",
                    "--no-progress"]) == 0  # fmt: skip
    return out


@pytest.mark.parametrize("retriever", ["bm25", "dense", "hybrid", "weighted", "rerank"])
def test_ask_no_generate_prints_the_right_passage_first(index_dir, folder, capsys, retriever):
    q = "Who keeps the beehives?" if retriever not in ("bm25", "rerank") else "beekeeper hives"
    assert cli.run(["ask", str(index_dir), q, "--no-generate", "-k", "2",
                    "--retriever", retriever]) == 0  # fmt: skip
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("[1] ") and "bees.md (bytes 0-" in first and retriever in first
    assert "Marta Olsen" in out.split("[2]")[0]
    if retriever in ("bm25", "rerank"):  # BM25's candidates share a word with the query
        assert "[2] " not in out
    else:
        assert "[2] " in out and "[3] " not in out


def test_ask_json_offsets_point_into_the_files(index_dir, folder, capsys):
    assert cli.run(["ask", str(index_dir), "train to Tromso", "--no-generate", "--json",
                    "-k", "10"]) == 0  # fmt: skip
    res = json.loads(capsys.readouterr().out)
    hits = res["hits"]
    assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
    assert hits[0]["doc"].endswith("trains.txt")
    assert len(hits) == 3  # k is capped at the index's 3 chunks
    for h in hits:
        data = (folder / h["doc"].split("docs/")[-1]).read_bytes()
        assert data[h["start"] : h["end"]].decode("utf-8") == h["text"]


def test_index_update_through_the_cli(folder, tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Apples grow in the orchard.\n")
    (docs / "b.md").write_text("Boats sail on the fjord.\n")
    out = tmp_path / "idx"
    assert cli.run(["index", str(docs), "--out", str(out), "--dtype", "fp32",
                    "--no-progress"]) == 0  # fmt: skip
    assert "2 chunks from 2 documents (2 added, 0 changed, 0 deleted" in capsys.readouterr().out
    (docs / "a.md").write_text("Apples and pears grow in the orchard.\n")
    (docs / "b.md").unlink()
    (docs / "c.md").write_text("Clouds gather over the mountains.\n")
    assert cli.run(["index", str(docs), "--out", str(out), "--update", "--no-progress"]) == 0
    assert "(1 added, 1 changed, 1 deleted, 0 unchanged); embeddings minilm fp32" in (
        capsys.readouterr().out
    )
    assert cli.run(["ask", str(out), "pears", "--no-generate", "--retriever", "bm25"]) == 0
    assert "Apples and pears" in capsys.readouterr().out


def test_errors_are_one_line(index_dir, tmp_path, capsys):
    assert cli.run(["ask", str(tmp_path / "none"), "q", "--no-generate"]) == 2
    assert "no such index directory" in capsys.readouterr().err
    assert cli.run(["ask", str(index_dir), "q", "--no-generate", "-k", "0"]) == 2
    assert "k: expected a positive int, got 0" in capsys.readouterr().err
    assert cli.run(["ask", str(index_dir), "  ", "--no-generate"]) == 2
    assert "QUESTION: expected a non-empty question" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in index_dir.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    (broken / "chunks.jsonl").write_bytes(b"")
    assert cli.run(["ask", str(broken), "q", "--no-generate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: index ") and "chunks.jsonl is truncated" in err
    assert err.count("\n") == 1
    with pytest.raises(SystemExit):
        cli.run(["ask", str(index_dir), "q", "--retriever", "grep"])
    assert "invalid choice: 'grep'" in capsys.readouterr().err
    assert cli.run(["index", str(tmp_path / "empty-nothing"), "--out", str(tmp_path / "x")]) == 2
    capsys.readouterr()


@pytest.mark.slow
def test_ask_generates_an_answer_with_sources(index_dir, capsys):
    skip_without_smollm2()
    assert cli.run(["ask", str(index_dir), "Who keeps bees on the hill?", "-k", "2",
                    "--max-new-tokens", "8", "--budget", "400"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    answer, sources = out.split("\nSources:\n")
    assert answer.strip()  # 8 greedy tokens of something
    lines = sources.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("[1] ") and "bees.md (bytes 0-" in lines[0]
    assert lines[1].startswith("[2] ")


def test_hybrid_fuses_the_two_rankings_by_reciprocal_rank(index_dir):
    from myllm101.rag.retrieve import Retriever
    from myllm101.rag.store import load_index

    r = Retriever(load_index(index_dir), candidates=3)
    q = ["which platform does the night train leave from", "tea water temperature"]
    lexical, dense = r.rankings(q, 3, "bm25"), r.rankings(q, 3, "dense")
    for (hr, hs), (br, _), (dr, _) in zip(r.rankings(q, 3, "hybrid"), lexical, dense, strict=True):
        want: dict[int, float] = {}
        for ranking in (br.tolist(), dr.tolist()):
            for rank, row in enumerate(ranking, 1):  # score = sum over rankings of 1 / (60 + rank)
                want[row] = want.get(row, 0.0) + 1.0 / (60 + rank)
        assert dict(zip(hr.tolist(), hs.tolist())) == pytest.approx(want, rel=1e-12)
        assert list(hs) == sorted(hs, reverse=True)


def test_weighted_fusion_and_rerank_follow_their_definitions(index_dir):
    """weighted: w x min-max(BM25) + (1 - w) x min-max(cosine) over both candidate lists;
    rerank: BM25's matching candidates ordered by their cosine to the query."""
    import numpy as np

    from myllm101.rag.retrieve import Retriever
    from myllm101.rag.store import load_index

    index = load_index(index_dir)
    r = Retriever(index, candidates=3, bm25_weight=0.7)
    q = ["which platform does the night train leave from", "tea water temperature"]
    lexical, dense = r.rankings(q, 3, "bm25"), r.rankings(q, 3, "dense")
    vectors = r.embedder.embed(q)
    for i, ((wr, ws), (br, bs), (dr, ds)) in enumerate(
        zip(r.rankings(q, 3, "weighted"), lexical, dense, strict=True)
    ):
        want: dict[int, float] = {}
        for w, rows, scores in ((0.7, br, bs), (0.3, dr, ds)):
            lo, hi = scores.min(), scores.max()
            for row, s in zip(rows.tolist(), scores.tolist()):
                want[row] = want.get(row, 0.0) + w * ((s - lo) / (hi - lo) if hi > lo else 1.0)
        assert dict(zip(wr.tolist(), ws.tolist())) == pytest.approx(want, rel=1e-12)
        rr, rs = r.rankings([q[i]], 3, "rerank")[0]
        assert set(rr.tolist()) == set(br[bs > 0].tolist())
        cos = index.embeddings[rr] @ vectors[i]
        np.testing.assert_allclose(rs, cos, rtol=1e-5)
        assert list(rs) == sorted(rs, reverse=True)
    with pytest.raises(ValueError, match=r"bm25_weight: expected a float in \[0, 1\], got 1.5"):
        Retriever(index, bm25_weight=1.5)
