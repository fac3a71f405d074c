"""Chunking: documents -> pieces of at most ``max_tokens`` tokens, cut where the text has a seam.

    chunks = chunk_document(doc, tokenizer, max_tokens=200, overlap=40)
    chunks[0].id, chunks[0].start, chunks[0].end      # "notes/a.md#0", byte offsets into the file

Tokens are counted by ``tokenizer.encode(text) -> list[int]``: any object with that method (our
SmolLM2 tokenizer, ``hub.gguf_loader.tokenizer_from_gguf``; the embedding model's WordPiece;
a test's stand-in). The chunker never looks at the ids, only at how many there are.

1. Units. The text is cut at its seams, each with a strength: a heading line (``# ...``, 4), a
   blank line (paragraph, 3), the end of a sentence (``.!?`` and their CJK forms, then spaces,
   2), a line break (1). The text between two seams is a unit; a heading stays in one unit with
   the line after it, so no chunk ends on a bare heading. A unit over ``max_tokens`` is split
   between words (strength 0), a word over it between characters (the longest prefixes that fit).
2. Packing. A chunk takes units while their token counts sum to at most ``max_tokens``; it ends at
   the strongest seam among the ends that fill at least half the budget (the latest of equals),
   so chunks end at headings, then paragraphs, then sentences, when the text has them. Each
   chunk's own ``encode`` is checked, and a unit dropped while it is over (BPE counts of pieces
   need not add up exactly).
3. Overlap. The next chunk starts with the last whole units of this one that fit in ``overlap``
   tokens (none when a heading starts the next section, or when the last unit alone is longer).

Every chunk is trimmed of surrounding whitespace, and ``start``/``end`` are BYTE offsets into
the document's UTF-8 bytes (its file: rag/documents.py decodes without translation), so
``file_bytes[start:end].decode() == text``. A chunk exceeds ``max_tokens`` only when a single
character encodes to more tokens than that.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

from myllm101.rag.documents import Document

WORD, LINE, SENTENCE, PARAGRAPH, HEADING = 0, 1, 2, 3, 4
CHAR = -1  # inside a word too long for a chunk

# a whitespace run holding a line break, or spaces after sentence-ending punctuation (closing
# quotes and brackets may sit between): the candidate seams, found in one pass
_SEAM = re.compile(r"\s*\n\s*|(?<=[.!?…。！？])[\"'”’»)\]]*\s+")
_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’»)\]]*$")
_HEADING = re.compile(r"#{1,6}(\s|$)")
_WORDS = re.compile(r"\S+")


@dataclass
class Chunk:
    id: str  # f"{doc}#{n}", n counting from 0 within the document
    doc: str  # the document's path
    start: int  # byte offsets into the document's UTF-8 bytes: text == bytes[start:end].decode()
    end: int
    text: str


def check_chunking(tokenizer, max_tokens, overlap) -> None:
    encode = getattr(tokenizer, "encode", None)
    if not callable(encode):
        raise TypeError(
            "tokenizer: expected an object with .encode(str) -> list[int], "
            f"got {type(tokenizer).__name__}"
        )
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens: expected a positive int, got {max_tokens!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < max_tokens:
        raise ValueError(
            f"overlap: expected an int in [0, max_tokens={max_tokens}), got {overlap!r}"
        )


def _seams(text: str) -> list[tuple[int, int]]:
    """(position where a unit starts, strength of the seam before it), in text order."""
    first = len(text) - len(text.lstrip())  # a stand-in seam: is the first line a heading?
    out = [(first, HEADING if _HEADING.match(text, first) else WORD)]
    for m in _SEAM.finditer(text):
        pos, ws = m.end(), m.group()
        if pos == len(text) or m.start() == 0:
            continue  # leading / trailing whitespace: no seam
        newlines = ws.count("\n")
        if newlines >= 2:
            strength = PARAGRAPH
        elif newlines == 0 or _SENTENCE_END.search(text, max(0, m.start() - 8), m.start()):
            strength = SENTENCE
        else:
            strength = LINE
        if newlines and _HEADING.match(text, pos):
            strength = HEADING
        out.append((pos, strength))
    # no seam right after a heading line: the heading stays with what follows it
    return [
        (p, s)
        for k, (p, s) in enumerate(out)
        if k and not (out[k - 1][1] == HEADING and "\n" not in text[out[k - 1][0] : p].rstrip())
    ]


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """[start, end) without leading and trailing whitespace."""
    piece = text[start:end]
    lead = len(piece) - len(piece.lstrip())
    return start + lead, start + len(piece.rstrip())


def _prefix_that_fits(text: str, start: int, end: int, count, max_tokens: int) -> int:
    """The largest e in (start, end] with count(text[start:e]) <= max_tokens (at least start + 1:
    a single character always goes). Binary search: a prefix's token count rises with length;
    no token is assumed to span more than 64 characters (a longer one only makes pieces shorter)."""
    lo, hi = start + 1, min(end, start + 64 * max_tokens)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(text[start:mid]) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _split_long(text, start, end, count, max_tokens) -> list[tuple[int, int, int, int]]:
    """A unit over max_tokens -> pieces (start, end, tokens, strength before) that each fit."""
    pieces = []
    for m in _WORDS.finditer(text, start, end):
        n = count(m.group())
        if n <= max_tokens:
            pieces.append((m.start(), m.end(), n, WORD))
            continue
        s, strength = m.start(), WORD
        while s < m.end():  # a word too long: its longest fitting prefixes
            e = _prefix_that_fits(text, s, m.end(), count, max_tokens)
            pieces.append((s, e, count(text[s:e]), strength))
            s, strength = e, CHAR
    # greedy: join neighbouring words while their (checked) count fits
    out = [pieces[0]]
    for s, e, n, strength in pieces[1:]:
        s0, _, n0, st0 = out[-1]
        if strength != CHAR and n0 + n <= max_tokens and count(text[s0:e]) <= max_tokens:
            out[-1] = (s0, e, count(text[s0:e]), st0)
        else:
            out.append((s, e, n, strength))
    return out


def _units(text: str, count, max_tokens: int) -> list[tuple[int, int, int, int]]:
    """The document's units: (start, end, tokens, strength of the seam before), trimmed."""
    first, last = _trimmed(text, 0, len(text))
    if first >= last:
        return []
    bounds = [(first, WORD)] + [(p, s) for p, s in _seams(text) if first < p < last]
    units = []
    for k, (p, strength) in enumerate(bounds):
        s, e = _trimmed(text, p, bounds[k + 1][0] if k + 1 < len(bounds) else last)
        n = count(text[s:e])
        if n <= max_tokens:
            units.append((s, e, n, strength))
        else:
            pieces = _split_long(text, s, e, count, max_tokens)
            units.append(pieces[0][:3] + (strength,))
            units.extend(pieces[1:])
    return units


def _best_end(strength: list[int], cum: list[int], i: int, min_end: int, max_tokens: int) -> int:
    """Where the chunk starting at unit i ends (exclusive unit index, >= min_end): the module
    docstring's step 2."""
    m = len(strength)
    e_max = max(bisect_right(cum, cum[i] + max_tokens) - 1, min_end)  # the most units that fit
    if e_max >= m:
        return m
    half = bisect_right(cum, cum[i] + max_tokens // 2, lo=i + 1)  # first end past half the budget
    lo = max(half if half <= e_max else i + 1, min_end)
    return max(range(lo, e_max + 1), key=lambda e: (strength[e], e))


def _byte_offsets(text: str, positions: list[int]) -> dict[int, int]:
    """Character positions -> byte offsets in text.encode("utf-8"), in one pass over the text."""
    if text.isascii():
        return {p: p for p in positions}
    out, byte, prev = {}, 0, 0
    for p in sorted(set(positions)):
        byte += len(text[prev:p].encode("utf-8"))
        out[p], prev = byte, p
    return out


def chunk_document(doc: Document, tokenizer, max_tokens: int = 200, overlap: int = 40
                   ) -> list[Chunk]:  # fmt: skip
    """The chunks of one document, in text order (module docstring); [] for blank text."""
    check_chunking(tokenizer, max_tokens, overlap)
    if not isinstance(getattr(doc, "text", None), str):
        raise ValueError(f"doc: expected a Document (path, text), got {type(doc).__name__}")
    text = doc.text

    def count(s: str) -> int:
        return len(tokenizer.encode(s))

    units = _units(text, count, max_tokens)
    starts, ends = [u[0] for u in units], [u[1] for u in units]
    strength = [u[3] for u in units]
    cum = [0]
    for u in units:
        cum.append(cum[-1] + u[2])
    spans, i, min_end = [], 0, 1
    while i < len(units):
        e = _best_end(strength, cum, i, min_end, max_tokens)
        while e > i + 1 and count(text[starts[i] : ends[e - 1]]) > max_tokens:
            e -= 1  # the pieces' counts added up to less than the whole's (separators count)
        if e < min_end:  # then the overlap left no room for anything new: start after it
            i = min_end - 1
            continue
        spans.append((starts[i], ends[e - 1]))
        if e >= len(units):
            break
        # step 3: back over whole units that fit in the overlap (not into a new section), and
        # leave room for at least the next unit, so each chunk reaches past the last one
        nxt = e
        while (overlap and strength[e] < HEADING and nxt - 1 > i
               and cum[e] - cum[nxt - 1] <= overlap and cum[e + 1] - cum[nxt - 1] <= max_tokens):  # fmt: skip
            nxt -= 1
        i, min_end = nxt, e + 1
    byte = _byte_offsets(text, [p for span in spans for p in span])
    return [
        Chunk(f"{doc.path}#{n}", doc.path, byte[s], byte[e], text[s:e])
        for n, (s, e) in enumerate(spans)
    ]


def chunk_documents(docs: list[Document], tokenizer, max_tokens: int = 200, overlap: int = 40
                    ) -> list[Chunk]:  # fmt: skip
    """Every document's chunks, documents in the given order."""
    check_chunking(tokenizer, max_tokens, overlap)
    return [c for d in docs for c in chunk_document(d, tokenizer, max_tokens, overlap)]
