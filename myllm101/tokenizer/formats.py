"""Saving, loading and exporting byte-level BPE tokenizers: our format, tiktoken's and Hugging Face's.

Our tokenizer directory (``save_tokenizer`` / ``load_tokenizer``)
------------------------------------------------------------------
``DIR/myllm101_tokenizer.json`` (not ``tokenizer.json``, which is Hugging Face's), UTF-8 JSON::

    {
      "format": "myllm101-bpe",          # anything else is refused
      "version": 2,                      # bumped on an incompatible change (1: no "sha256")
      "name": "shakespeare-8k",
      "pattern": "...",                  # the pre-tokenization regex (``regex`` syntax)
      "special_tokens": {"<|endoftext|>": 8191},
      "n_ranks": 8191,                   # len(ranks), to catch a truncated list
      "ranks": [["AA==", 0], ["AQ==", 1], ..., ["IHRoZQ==", 300], ...],
      "ranks_sha256": "...",             # sha256 of the canonical ranks text, to catch corruption
      "sha256": "..."                    # sha256 of everything that defines the ids (below)
    }

``ranks`` lists every mergeable token as [base64 of its bytes, rank], sorted by rank: the same
information as a ``.tiktoken`` file (a token's rank is its id and its merge priority). Base64,
because tokens are bytes, not text (a token may be half a UTF-8 character). ``ranks_sha256`` is the
sha256 of the lines ``f"{b64} {rank}\\n"`` in that order (i.e. of the ``.tiktoken`` text).
``sha256`` (``definition_sha256``) also covers the split pattern and the special tokens, which
change every id as surely as the ranks do: it is the sha256 of one canonical JSON line
``{"pattern": ..., "special_tokens": [[string, id], ...]}`` (ASCII, sorted by id, no spaces), then
``"\\n"`` and the ``.tiktoken`` text. Loading checks both hashes and that the pattern compiles;
version 1 files (no "sha256") still load. The file is written to a temporary file and renamed
(``os.replace``), so a crash never leaves half a file.

Other formats
-------------
- ``.tiktoken`` (``save_tiktoken_file``): one ``base64 rank`` line per mergeable token; no pattern
  and no special tokens (tiktoken takes those as code: ``tiktoken.Encoding(name, pat_str,
  mergeable_ranks, special_tokens)``).
- Hugging Face ``tokenizer.json``: tokenizer/hf_format.py.

Nothing here imports tiktoken: the formats are plain files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import tempfile
from pathlib import Path

import regex

FORMAT = "myllm101-bpe"
VERSION = 2
VERSIONS = (1, 2)  # readable; version 1 has no "sha256"
FILENAME = "myllm101_tokenizer.json"
IMPLS = ("fast", "reference")


# --------------------------------------------------------------------------------------------------
# small helpers


def tokenizer_class(impl: str):
    """The Tokenizer class of ``impl`` ('fast' or 'reference')."""
    if impl == "fast":
        from myllm101.fast.bpe import Tokenizer
    elif impl == "reference":
        from myllm101.reference.bpe import Tokenizer
    else:
        raise ValueError(f"impl: expected one of {IMPLS}, got {impl!r}")
    return Tokenizer


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temp file in the same directory, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a tokenizer is an ordinary shareable file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sorted_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, int]]:
    return sorted(ranks.items(), key=lambda item: item[1])


def tiktoken_text(ranks: dict[bytes, int]) -> str:
    """The .tiktoken file text: {b"a": 97} -> "YQ== 97\\n"."""
    return "".join(f"{base64.b64encode(t).decode('ascii')} {r}\n" for t, r in sorted_ranks(ranks))


# --------------------------------------------------------------------------------------------------
# our format


def definition_sha256(ranks: dict[bytes, int], pattern: str, special_tokens: dict[str, int]) -> str:
    """sha256 over what defines the ids: the pattern, the special tokens and the ranks."""
    specials = sorted(([k, v] for k, v in special_tokens.items()), key=lambda kv: (kv[1], kv[0]))
    head = json.dumps({"pattern": pattern, "special_tokens": specials}, separators=(",", ":"))
    return hashlib.sha256(f"{head}\n{tiktoken_text(ranks)}".encode("ascii")).hexdigest()


def check_pattern(pattern: str, where) -> None:
    """A ValueError naming ``where`` when ``pattern`` does not compile (``regex`` syntax)."""
    try:
        regex.compile(pattern)
    except regex.error as e:
        raise ValueError(f"{where}: the split pattern does not compile: {e}") from None


def tokenizer_dict(tok) -> dict:
    """The JSON object of ``DIR/myllm101_tokenizer.json`` for ``tok``."""
    ranks = dict(tok.mergeable_ranks)
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": tok.name,
        "pattern": tok.pattern,
        "special_tokens": dict(tok.special_tokens),
        "n_ranks": len(ranks),
        "ranks": [[base64.b64encode(t).decode("ascii"), r] for t, r in sorted_ranks(ranks)],
        "ranks_sha256": hashlib.sha256(tiktoken_text(ranks).encode("ascii")).hexdigest(),
        "sha256": definition_sha256(ranks, tok.pattern, dict(tok.special_tokens)),
    }


def save_tokenizer(tok, directory: str | Path) -> Path:
    """Write ``directory/myllm101_tokenizer.json`` atomically; returns the file's path."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory}: expected a directory for {FILENAME}, got an existing file")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:  # a parent is a file
        raise ValueError(f"{directory}: cannot create the directory ({e})") from None
    path = directory / FILENAME
    # one rank pair per line: diffable, and still a single JSON document
    d = tokenizer_dict(tok)
    ranks = d.pop("ranks")
    head = json.dumps(d, indent=1, ensure_ascii=False)[:-2]  # without the closing "\n}"
    body = ",\n".join(json.dumps(pair) for pair in ranks)
    write_atomic(path, f'{head},\n "ranks": [\n{body}\n ]\n}}\n')
    return path


def _bad(path, what: str) -> ValueError:
    return ValueError(f"{path}: not a valid {FORMAT} tokenizer file: {what}")


def parse_tokenizer_dict(d, path="<dict>") -> tuple[dict[bytes, int], str, dict[str, int], str]:
    """Validate a loaded JSON object; returns (mergeable_ranks, pattern, special_tokens, name)."""
    if not isinstance(d, dict):
        raise _bad(path, f"expected a JSON object, got {type(d).__name__}")
    if d.get("format") != FORMAT:
        raise _bad(path, f'expected "format": "{FORMAT}", got {d.get("format")!r}')
    version = d.get("version")
    if version not in VERSIONS or isinstance(version, bool):
        raise _bad(path, f'expected "version": {VERSION} (or 1), got {version!r}')
    for key, typ in [("name", str), ("pattern", str), ("special_tokens", dict), ("ranks", list),
                     ("n_ranks", int), ("ranks_sha256", str)]:  # fmt: skip
        if not isinstance(d.get(key), typ):
            raise _bad(path, f'expected "{key}" of type {typ.__name__}, got {d.get(key)!r:.60}')
    pairs = d["ranks"]
    if len(pairs) != d["n_ranks"]:
        raise _bad(path, f'expected {d["n_ranks"]} ranks ("n_ranks"), got {len(pairs)}')
    ranks: dict[bytes, int] = {}
    for i, pair in enumerate(pairs):
        ok = isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
        if not ok or not isinstance(pair[1], int) or isinstance(pair[1], bool):
            raise _bad(path, f"ranks[{i}]: expected [base64 string, int], got {pair!r:.60}")
        try:
            token = base64.b64decode(pair[0], validate=True)
        except (binascii.Error, ValueError) as e:
            raise _bad(path, f"ranks[{i}]: expected base64, got {pair[0]!r:.60} ({e})") from None
        if token in ranks:
            raise _bad(path, f"ranks[{i}]: token {token!r} appears twice")
        ranks[token] = pair[1]
    got = hashlib.sha256(tiktoken_text(ranks).encode("ascii")).hexdigest()
    if got != d["ranks_sha256"]:
        raise _bad(
            path, f'ranks do not match "ranks_sha256" (expected {d["ranks_sha256"]}, got {got})'
        )
    specials = d["special_tokens"]
    if not all(isinstance(k, str) and isinstance(v, int) for k, v in specials.items()):
        raise _bad(path, f'"special_tokens": expected {{str: int}}, got {specials!r:.60}')
    check_pattern(d["pattern"], path)
    if version >= 2 or "sha256" in d:  # version 1 files were written without it
        want = d.get("sha256")
        if not isinstance(want, str):
            raise _bad(path, f'expected "sha256" of type str, got {want!r:.60}')
        got = definition_sha256(ranks, d["pattern"], specials)
        if got != want:
            raise _bad(
                path,
                f'pattern/special tokens do not match "sha256" (expected {want}, got {got}): '
                f"edited or corrupted after it was saved",
            )
    return ranks, d["pattern"], specials, d["name"]


def tokenizer_file(path: str | Path) -> Path:
    """``DIR`` -> ``DIR/myllm101_tokenizer.json``; a path to the file itself is kept."""
    path = Path(path)
    return path / FILENAME if path.is_dir() else path


def load_tokenizer(directory: str | Path, impl: str = "fast"):
    """The Tokenizer saved in ``directory`` (or in the file given), as the ``impl`` class.

    A missing, truncated, corrupted or foreign file raises a ValueError naming the file and the
    problem (a missing file: FileNotFoundError).
    """
    cls = tokenizer_class(impl)
    path = tokenizer_file(directory)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such file (expected a directory made by save_tokenizer)"
        )
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise _bad(path, f"expected UTF-8 JSON, got undecodable bytes ({e})") from None
    except json.JSONDecodeError as e:
        raise _bad(path, f"expected JSON, got a parse error (truncated?): {e}") from None
    ranks, pattern, specials, name = parse_tokenizer_dict(d, path)
    try:
        return cls(ranks, pattern, specials, name=name)
    except ValueError as e:
        raise _bad(path, str(e)) from None


# --------------------------------------------------------------------------------------------------
# tiktoken


def to_tiktoken_ranks(tok) -> dict[bytes, int]:
    """The ``mergeable_ranks`` tiktoken.Encoding takes (a copy of ours: same representation)."""
    return dict(tok.mergeable_ranks)


def save_tiktoken_file(tok, path: str | Path) -> Path:
    """Write the ``.tiktoken`` file (``base64 rank`` lines; pattern and specials are not in it)."""
    write_atomic(Path(path), tiktoken_text(tok.mergeable_ranks))
    return Path(path)
