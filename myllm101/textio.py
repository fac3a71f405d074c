"""Exact text in: read a file (or stdin) as bytes and decode UTF-8 without changing a character.

Every place that reads text to tokenize or train goes through here, so the ids depend only on the
bytes: ``\\r\\n`` and lone ``\\r`` stay as they are (no universal-newline translation), a leading
BOM (U+FEFF) stays a character, NULs stay NULs. Bytes that are not UTF-8 are a ``ValueError``
naming the source and the absolute byte offset of the first bad byte, or, with
``errors="replace"``, U+FFFD each (exactly ``bytes.decode("utf-8", errors="replace")``).
"""

from __future__ import annotations

import os
import sys

ERRORS = ("strict", "replace")  # the --errors choices of the commands that read text


def check_errors(errors: str) -> str:
    """``errors`` if it is one of ERRORS, else a ValueError naming the choices."""
    if errors not in ERRORS:
        raise ValueError(f"errors: expected one of {list(ERRORS)}, got {errors!r}")
    return errors


class InvalidUTF8Error(ValueError):
    """Bytes that are not UTF-8; ``offset`` is the absolute byte offset of the first bad byte."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


def utf8_error(source: str, err: UnicodeDecodeError, base_offset: int = 0) -> InvalidUTF8Error:
    """The error for ``err``, raised while decoding bytes that start ``base_offset`` bytes into
    ``source`` (a file name, "stdin", ...): it names the absolute offset and the first bad byte.
    """
    offset = base_offset + err.start
    bad = err.object[err.start]
    return InvalidUTF8Error(
        f"{source}: expected UTF-8 text, got invalid UTF-8 at byte offset {offset} "
        f"(0x{bad:02x}): {err.reason}",
        offset,
    )


def decode_utf8(data: bytes, errors: str = "strict", source: str = "input") -> str:
    """``data`` decoded as UTF-8, every character kept (a BOM too); see ``read_text_exact``."""
    try:
        return data.decode("utf-8", errors=check_errors(errors))
    except UnicodeDecodeError as e:
        raise utf8_error(source, e) from None


def read_text_exact(path: str | os.PathLike, errors: str = "strict", what: str = "input") -> str:
    """The text of the file ``path``, or of stdin when ``path`` is "-", exactly as its bytes say.

    Reads bytes (``sys.stdin.buffer`` for stdin) and decodes them as UTF-8: no newline
    translation, no BOM stripping. ``errors="strict"`` (default) raises an InvalidUTF8Error (a
    ValueError) such as "input data.txt: expected UTF-8 text, got invalid UTF-8 at byte offset
    1234 (0xff): invalid start byte" (``what`` names the role, then the file or "stdin");
    ``errors="replace"`` turns each bad byte sequence into U+FFFD. A stdin without ``.buffer`` (a StringIO in tests) is already
    text and is returned as read. A missing file is a ValueError naming it.
    """
    check_errors(errors)
    if str(path) == "-":
        stream = sys.stdin
        buffer = getattr(stream, "buffer", None)
        if buffer is None:
            return stream.read()
        return decode_utf8(buffer.read(), errors, f"{what} stdin")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ValueError(
            f"{what}: expected an existing file (or - for stdin), got {str(path)!r}"
        ) from None
    except IsADirectoryError:
        raise ValueError(
            f"{what}: expected a file (or - for stdin), got the directory {str(path)!r}"
        ) from None
    return decode_utf8(data, errors, f"{what} {path}")
