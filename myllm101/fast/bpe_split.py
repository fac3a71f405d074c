"""Pre-tokenization, fast: the shipped split patterns run by Python's own ``re``.

The patterns need ``regex`` for their ``\\p{L}``-style classes, and ``regex.findall`` is most of a
warm encode. Python's ``re`` runs the same pattern about twice as fast once every class is spelled
out as the explicit set of characters it matches. One catch: ``re`` keeps a set as a bitmap only for
characters below U+10000 and checks the rest range by range, which is slower than ``regex``. So the
translated pattern lists the BMP (U+0000-U+FFFF) members only, and ``split_bmp`` is used for texts
that hold no character above U+FFFF; others (emoji, ...) keep ``regex``.

The sets come from ``regex`` itself (each class run over all 65,536 BMP characters), so the two
engines agree character for character whatever Unicode version either ships: tests compare them on
every BMP character in many contexts (tests/test_bpe_fast_paths.py).
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import re
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable

import regex

from myllm101.bpe_patterns import SPLIT_PATTERNS


def in_bmp(text: str) -> bool:
    """Whether every character of ``text`` is below U+10000: then UTF-16 spends 2 bytes on each
    (a fast C widening, ~10x quicker than a regex search; ``isascii`` is O(1))."""
    return text.isascii() or len(text.encode("utf-16-le", "surrogatepass")) == 2 * len(text)


@functools.cache
def _bmp_string() -> str:
    return "".join(map(chr, range(0x10000)))  # lone surrogates too: never in a text to split


@functools.cache
def _members(regex_class: str) -> str:
    """The BMP characters the ``regex`` class matches, written as the inside of a ``re`` set.

    r"\\p{Nd}" -> "\\u0030-\\u0039\\u0660-\\u0669..."
    """
    out = []
    for m in regex.finditer(f"(?:{regex_class})+", _bmp_string()):
        a, b = m.start(), m.end() - 1
        out.append(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}")
    return "".join(out)


_CLASS = re.compile(r"\\p\{\w+\}|\\[sS]")


def translate(pattern: str) -> str:
    """``pattern`` (a ``regex`` pattern using only what the shipped ones use) for Python's ``re``.

    ``\\p{..}``, ``\\s`` and ``\\S`` become explicit sets of BMP characters; inside ``(?i:...)`` a
    letter becomes the set of its case variants (``regex`` folds case one character at a time);
    everything else (possessive quantifiers, lookaheads, escapes like ``\\r``) is copied, as both
    engines read it alike.
    """
    out: list[str] = []
    groups: list[bool] = []  # open groups: whether each one is a (?i: group
    in_set, i = False, 0
    while i < len(pattern):
        c = pattern[i]
        m = _CLASS.match(pattern, i) if c == "\\" else None
        if m:
            cls = m.group()
            members = _members(r"\s" if cls == r"\S" else cls)
            if in_set and cls == r"\S":
                raise ValueError(f"translate: \\S inside a set is not supported: {pattern!r}")
            negate = "^" if cls == r"\S" else ""
            out.append(members if in_set else f"[{negate}{members}]")
            i = m.end()
            continue
        if c == "\\":  # any other escape, as it is
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_set:
            in_set = c != "]"
            out.append(_members(f"(?i){c}") if any(groups) and c.isalpha() else c)
        elif c == "[":
            in_set = True
            out.append(c)
            if pattern.startswith("^", i + 1):  # a leading ^ negates; not a character
                out.append("^")
                i += 1
        elif pattern.startswith("(?i:", i):
            groups.append(True)
            out.append("(?:")
            i += 4
            continue
        elif c == "(":
            groups.append(False)
            out.append(c)
        elif c == ")":
            groups.pop()
            out.append(c)
        elif any(groups) and c.isalpha():
            out.append(f"[{_members(f'(?i){c}')}]")
        else:
            out.append(c)
        i += 1
    return "".join(out)


@functools.cache
def split_bmp(pattern: str):
    """``findall`` of ``pattern`` translated for ``re``: the same pieces as ``regex`` on texts
    where ``in_bmp``; None for a pattern that is not one of the shipped ones."""
    if pattern not in SPLIT_PATTERNS.values():
        return None
    return re.compile(translate(pattern)).findall


def count_pieces(pattern: str, texts: list[str]) -> Counter:
    """Counter of the pieces of every text: what training starts from."""
    counts: Counter = Counter()
    fast, findall = split_bmp(pattern), regex.compile(pattern).findall
    for text in texts:
        counts.update(fast(text) if fast is not None and in_bmp(text) else findall(text))
    return counts


def count_pieces_elsewhere(pattern: str, texts: list[str]) -> Callable[[], Counter]:
    """Start ``count_pieces(pattern, texts)`` in a fresh Python process (``python -m`` this module,
    which imports only ``re``/``regex``); returns a function that waits for its Counter.

    A fresh interpreter, like multiprocessing's "spawn", is safe whatever threads this process
    runs; unlike "spawn" it never re-imports the caller's main module (a script without a
    ``__main__`` guard, or code read from stdin, would break that).
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    err = tempfile.TemporaryFile()  # a file, not a pipe: a long traceback can never block it
    worker = subprocess.Popen(
        [sys.executable, "-m", __name__],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=err,
        env=env,
    )
    data = pickle.dumps((pattern, texts), protocol=pickle.HIGHEST_PROTOCOL)
    done: dict[str, bytes] = {}

    def feed_and_read() -> None:
        # one blocking write of the whole input, then one read of the whole output: each call
        # waits without the GIL from start to end. (``communicate`` writes 4 KB at a time and
        # needs the GIL back after each write. While this process counts, each wait could take a
        # switch interval, so the worker got its input only after our own count had finished.)
        with contextlib.suppress(BrokenPipeError):  # died early: its exit code and stderr tell
            worker.stdin.write(data)
        with contextlib.suppress(BrokenPipeError):
            worker.stdin.close()
        done["out"] = worker.stdout.read()
        worker.wait()

    io = threading.Thread(target=feed_and_read)
    io.start()

    def result() -> Counter:
        io.join()
        with err:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-2000:]
        if worker.returncode != 0:
            raise RuntimeError(f"word-counting process failed (exit {worker.returncode}):\n{tail}")
        return pickle.loads(done["out"])

    return result


if __name__ == "__main__":  # the worker: pickled (pattern, texts) in, pickled Counter out
    pickle.dump(count_pieces(*pickle.load(sys.stdin.buffer)), sys.stdout.buffer)
