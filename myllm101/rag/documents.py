"""Documents for RAG: the text of .txt / .md files (a folder walked, single files, or stdin).

    docs = load_documents("notes/")                 # every .txt / .md below notes/, sorted
    docs = load_documents(["a.md", "b.txt"])        # these files (any suffix when named)
    docs = load_documents("-")                      # the text on stdin, as one document

A document's ``text`` is its file's bytes decoded as UTF-8 exactly as stored (no newline
translation, a BOM kept as U+FEFF), so ``text.encode("utf-8")`` gives the file's bytes back and
byte offsets computed from the text (rag/chunk.py) point into the file.

Files that cannot be text are skipped with a warning that names them (``UserWarning``): binary
files (a NUL byte in the first 8 KiB), files that are not valid UTF-8 (the warning gives the
first bad byte's offset), and files over ``max_bytes`` (default 64 MiB: split them first). When
nothing usable is left, ``ValueError`` says what was skipped and why.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

SUFFIXES = (".txt", ".md")
MAX_BYTES = 64 * 2**20
STDIN = "-"


@dataclass
class Document:
    path: str  # the file's path as given or found ("<stdin>" for stdin)
    text: str


def _too_big(size: int, max_bytes: int) -> str:
    return (
        f"{size / 2**20:.1f} MiB is over max_bytes={max_bytes} ({max_bytes / 2**20:.1f} MiB): "
        "split it, or raise max_bytes"
    )


def _decode(data: bytes) -> tuple[str | None, str]:
    """(text, "") or (None, why it is not a usable text file)."""
    if b"\x00" in data[:8192]:
        return None, "binary file (NUL bytes), not text"
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError as e:
        return (
            None,
            f"not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}): re-save it as UTF-8",
        )


def _files(path: Path) -> list[Path]:
    """A folder's .txt / .md files (recursively, sorted), or the file itself."""
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
        if not found:
            raise ValueError(f"DOCS: no .txt or .md files in {path}")
        return found
    if path.is_file():
        return [path]
    raise ValueError(f"DOCS: no such file or folder: {path}")


def load_documents(
    paths: list[str | Path] | str | Path, max_bytes: int = MAX_BYTES
) -> list[Document]:
    """Documents of ``paths`` (files, folders, or "-" for stdin), in the order given, each folder's
    files sorted; unusable files skipped with a warning (module docstring)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not isinstance(paths, (list, tuple)) or not paths:
        raise ValueError(f"DOCS: expected a path or a non-empty list of paths, got {paths!r}")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes: expected a positive int, got {max_bytes!r}")
    docs, skipped = [], []
    for given in paths:
        if not isinstance(given, (str, Path)):
            raise ValueError(f"DOCS: expected a path (str or Path), got {type(given).__name__}")
        if str(given) == STDIN:
            data = sys.stdin.buffer.read(max_bytes + 1)  # never more than the limit + 1
            sources = [("<stdin>", len(data), lambda data=data: data)]
        else:
            sources = [(str(p), p.stat().st_size, p.read_bytes) for p in _files(Path(given))]
        for name, size, read in sources:
            # a file over the limit is never read
            text, why = (None, _too_big(size, max_bytes)) if size > max_bytes else _decode(read())
            if text is None:
                warnings.warn(f"DOCS: skipping {name}: {why}", UserWarning, stacklevel=2)
                skipped.append(f"{name} ({why})")
            else:
                docs.append(Document(name, text))
    if not docs:
        raise ValueError("DOCS: no usable text: skipped " + "; ".join(skipped))
    return docs
