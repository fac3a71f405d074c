"""Chunking: byte offsets point at the chunk's bytes, every word lands in a chunk, chunks respect
the token budget and end at headings / paragraphs / sentences when they can, overlap repeats
whole units, and bad input says what was expected.

Tokenizers: stand-ins with different counting (one token per UTF-8 byte, per word, per character
class run, which does not add up over pieces), and the real SmolLM2 BPE in one test."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from myllm101.rag.chunk import Chunk, chunk_document, chunk_documents
from myllm101.rag.documents import Document


class ByteTokens:
    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))


class WordTokens:
    def encode(self, text: str) -> list[int]:
        return [len(w) for w in text.split()]


class RunTokens:
    """Runs of letters, digits, other non-space: "ab12" is 2 tokens but "ab" + "12" too, while
    "a b" is 2 and "a" + " b" is 2: pieces' counts and the whole's need not agree in general."""

    def encode(self, text: str) -> list[int]:
        return [len(m) for m in re.findall(r"[^\W\d_]+|\d+|[^\w\s]+|_+", text)]


TOKENIZERS = [ByteTokens(), WordTokens(), RunTokens()]

# unicode text with the seams the chunker looks for, among random characters
pieces = st.sampled_from(
    ["\n", "\n\n", ". ", "! ", "# Head\n", "\n## Sub\n", "  ", "\t", "é", "🙂"]
)
texts = st.lists(st.one_of(st.text(max_size=12), pieces), max_size=40).map("".join)


def check_chunks(text: str, chunks: list[Chunk], tokenizer, max_tokens: int, path: str) -> None:
    data = text.encode("utf-8")
    covered = bytearray(len(data))
    for n, c in enumerate(chunks):
        assert c.id == f"{path}#{n}" and c.doc == path
        assert data[c.start : c.end].decode("utf-8") == c.text  # the offsets point at the text
        assert c.text and c.text == c.text.strip()
        assert len(tokenizer.encode(c.text)) <= max_tokens or len(c.text) == 1
        covered[c.start : c.end] = b"\x01" * (c.end - c.start)
        if n:
            assert c.start > chunks[n - 1].start and c.end > chunks[n - 1].end  # moving forward
    # every non-whitespace character is in some chunk
    for i, ch in enumerate(text):
        if not ch.isspace():
            at = len(text[:i].encode("utf-8"))
            assert covered[at], (i, ch, text)


@given(text=texts, max_tokens=st.integers(1, 30), overlap_share=st.floats(0, 0.99),
       tok=st.sampled_from(TOKENIZERS))  # fmt: skip
def test_offsets_coverage_and_budget(text, max_tokens, overlap_share, tok):
    overlap = int(overlap_share * max_tokens)
    chunks = chunk_document(Document("docs/a.md", text), tok, max_tokens, overlap)
    check_chunks(text, chunks, tok, max_tokens, "docs/a.md")
    if overlap == 0:  # no overlap asked: chunks are disjoint
        assert all(b.start >= a.end for a, b in zip(chunks, chunks[1:]))
    if not text.strip():
        assert chunks == []


def test_ends_at_sentences_and_headings():
    sentences = [f"Sentence number {i} has a few words." for i in range(40)]
    text = "# One\n\n" + " ".join(sentences[:20]) + "\n\n# Two\n\n" + " ".join(sentences[20:])
    tok = WordTokens()
    chunks = chunk_document(Document("d.md", text), tok, max_tokens=30, overlap=0)
    check_chunks(text, chunks, tok, 30, "d.md")
    assert all(c.text.endswith(".") for c in chunks)  # no chunk ends inside a sentence
    assert any(c.text.startswith("# Two") for c in chunks)  # the heading starts a chunk
    assert not any(c.text.endswith(("# One", "# Two")) for c in chunks)  # never a bare heading


def test_overlap_repeats_whole_sentences_within_budget():
    text = " ".join(f"Short sentence {i} here." for i in range(60))  # 4 words each
    tok = WordTokens()
    chunks = chunk_document(Document("d.txt", text), tok, max_tokens=20, overlap=8)
    check_chunks(text, chunks, tok, 20, "d.txt")
    for a, b in zip(chunks, chunks[1:]):
        shared = text.encode()[b.start : a.end].decode()
        assert b.start < a.end  # they overlap ...
        assert 0 < len(tok.encode(shared)) <= 8 and shared.endswith(".")  # ... by whole sentences
    no_heading_overlap = chunk_document(Document("d.md", "A b c.\n# H\nd e f."), tok, 5, 3)
    assert [c.text for c in no_heading_overlap] == ["A b c.", "# H\nd e f."]


def test_long_words_and_lines_are_split():
    text = "x" * 1000 + " " + "word " * 300 + "\n" + "é" * 500
    tok = ByteTokens()
    chunks = chunk_document(Document("big.txt", text), tok, max_tokens=64, overlap=16)
    check_chunks(text, chunks, tok, 64, "big.txt")
    assert max(len(tok.encode(c.text)) for c in chunks) == 64  # the budget is used, not exceeded


def test_huge_document_is_chunked():
    """~2 MB of text (runs in about a second: units are found by one regex pass, offsets by one
    pass over the text)."""
    para = "This is a line of a large document, with some words. Another sentence follows!\n"
    text = ("# Part\n\n" + para * 40 + "\n") * 600
    tok = WordTokens()
    chunks = chunk_document(Document("huge.md", text), tok, max_tokens=120, overlap=20)
    assert len(chunks) > 1000
    head = [c for c in chunks if c.end <= 20000]  # ASCII: byte offsets are character offsets
    check_chunks(text[: head[-1].end], head, tok, 120, "huge.md")
    data = text.encode()
    assert all(data[c.start : c.end].decode() == c.text for c in chunks[::97])


def test_chunk_documents_keeps_order_and_ids():
    docs = [Document("b.txt", "One. Two."), Document("a.txt", ""), Document("c.md", "Three.")]
    chunks = chunk_documents(docs, WordTokens(), max_tokens=1, overlap=0)
    assert [c.id for c in chunks] == ["b.txt#0", "b.txt#1", "c.md#0"]


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    pytest.importorskip("gguf")
    from myllm101.hub.gguf_loader import read_gguf, tokenizer_from_gguf
    from myllm101.hub.smollm2 import gguf_path

    try:
        path = gguf_path()
    except ValueError as e:
        pytest.skip(str(e))
    return tokenizer_from_gguf(read_gguf(path))


def test_real_bpe_tokenizer(smollm2_tokenizer):
    text = (
        "# Retrieval\n\nBM25 scores documents by term frequency. Dense retrieval compares "
        "embeddings — cosine similarity, “exactly”. 北京欢迎你！ Ελληνικά κείμενα.\n\n"
    ) * 30
    chunks = chunk_document(Document("r.md", text), smollm2_tokenizer, max_tokens=50, overlap=10)
    check_chunks(text, chunks, smollm2_tokenizer, 50, "r.md")
    assert len(chunks) > 10


def test_bad_input():
    doc = Document("d.txt", "text")
    with pytest.raises(TypeError, match=r"tokenizer: expected an object with .encode\(str\) -> list\[int\], got int"):  # fmt: skip
        chunk_document(doc, 3)
    with pytest.raises(ValueError, match="max_tokens: expected a positive int, got 0"):
        chunk_document(doc, WordTokens(), max_tokens=0)
    with pytest.raises(ValueError, match=r"overlap: expected an int in \[0, max_tokens=10\), got 10"):  # fmt: skip
        chunk_document(doc, WordTokens(), max_tokens=10, overlap=10)
    with pytest.raises(ValueError, match=r"doc: expected a Document \(path, text\), got str"):
        chunk_document("some text", WordTokens())
