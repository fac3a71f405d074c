"""Loading documents: folders walked for .txt / .md (sorted), single files, stdin; text decoded
exactly (bytes round-trip); binary, non-UTF-8 and oversized files skipped with a warning that
names them; empty folders and nothing-usable raise with a clear message; the analyzer."""

import io
import sys

import pytest

from myllm101.rag.documents import Document, load_documents
from myllm101.rag.terms import terms


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folder_walk_sorted_and_filtered(tmp_path):
    write(tmp_path / "b.md", b"# B\n")
    write(tmp_path / "a.txt", b"a\r\nwindows line\r\n")
    write(tmp_path / "sub" / "c.TXT", "\ufeffwith BOM é".encode())
    write(tmp_path / "notes.pdf", b"%PDF")  # not a .txt / .md: ignored without a warning
    docs = load_documents(tmp_path)
    assert [d.path for d in docs] == [str(tmp_path / p) for p in ("a.txt", "b.md", "sub/c.TXT")]
    for d in docs:  # decoded exactly: byte offsets into the text are offsets into the file
        assert d.text.encode("utf-8") == (tmp_path / d.path).read_bytes()
    assert docs[0].text == "a\r\nwindows line\r\n" and docs[2].text.startswith("\ufeff")


def test_files_and_folders_in_the_given_order(tmp_path):
    a = write(tmp_path / "x" / "a.md", b"A")
    z = write(tmp_path / "z.log", b"Z")  # named explicitly: any suffix
    assert [d.text for d in load_documents([str(z), tmp_path / "x"])] == ["Z", "A"]
    assert load_documents(a) == [Document(str(a), "A")]


def test_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("from a pipe é\n".encode())))
    assert load_documents("-") == [Document("<stdin>", "from a pipe é\n")]


def test_unusable_files_are_skipped_with_a_warning(tmp_path):
    write(tmp_path / "good.txt", b"fine")
    write(tmp_path / "bin.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    write(tmp_path / "latin1.md", "caf\u00e9".encode("latin-1"))
    write(tmp_path / "big.txt", b"x" * 2000)
    with pytest.warns(UserWarning) as record:
        docs = load_documents(tmp_path, max_bytes=1000)
    assert [d.path for d in docs] == [str(tmp_path / "good.txt")]
    messages = sorted(str(w.message) for w in record)
    assert messages[0].startswith(f"DOCS: skipping {tmp_path / 'big.txt'}: 0.0 MiB is over max_bytes=1000")  # fmt: skip
    assert (
        messages[1] == f"DOCS: skipping {tmp_path / 'bin.txt'}: binary file (NUL bytes), not text"
    )
    assert messages[2] == (
        f"DOCS: skipping {tmp_path / 'latin1.md'}: not UTF-8 (byte 0xe9 at offset 3): "
        "re-save it as UTF-8"
    )


def test_nothing_usable(tmp_path):
    write(tmp_path / "bin.md", b"\x00\x01")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="DOCS: no usable text: skipped .*bin.md \\(binary file"):  # fmt: skip
        load_documents(tmp_path)


def test_empty_and_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    write(tmp_path / "other" / "x.csv", b"a,b")
    with pytest.raises(ValueError, match="DOCS: no .txt or .md files in .*empty"):
        load_documents(tmp_path / "empty")
    with pytest.raises(ValueError, match="DOCS: no .txt or .md files in .*other"):
        load_documents(tmp_path / "other")
    with pytest.raises(ValueError, match="DOCS: no such file or folder: .*nope"):
        load_documents(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"DOCS: expected a path or a non-empty list of paths, got \[\]"):  # fmt: skip
        load_documents([])
    with pytest.raises(ValueError, match="max_bytes: expected a positive int, got 0"):
        load_documents(tmp_path, max_bytes=0)


def test_an_empty_file_is_a_document(tmp_path):
    write(tmp_path / "e.txt", b"")
    assert load_documents(tmp_path) == [Document(str(tmp_path / "e.txt"), "")]


def test_terms():
    assert terms("The King's 2 sons, KING_LEAR!") == ["the", "king", "s", "2", "sons", "king_lear"]
    assert terms("Ünïcode ÉTÉ 北京") == ["ünïcode", "été", "北京"]
    assert terms("?! ...") == [] and terms("") == []
    with pytest.raises(ValueError, match="text: expected str, got list"):
        terms(["a"])
