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
- Hugging Face ``tokenizer.json`` (``to_hf_tokenizer_json`` / ``load_hf_tokenizer_json``): model
  type BPE whose vocab is written in GPT-2's byte-to-unicode alphabet, the merges derived from the
  ranks, pre-tokenizer Split(our regex) + ByteLevel(use_regex=False), ByteLevel decoder and the
  special tokens as added tokens. ``tokenizers.Tokenizer.from_file`` then gives the same ids.

Nothing here imports tiktoken or tokenizers: the formats are plain files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import tempfile
from functools import lru_cache
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


# --------------------------------------------------------------------------------------------------
# Hugging Face tokenizer.json


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocab files.

    Bytes that are printable Latin-1 characters map to themselves ('!' -> '!'); the other 68 (space,
    control characters, ...) map, in byte order, to chr(256), chr(257), ...: 32 (space) -> 'Ġ'.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def bytes_to_hf(token: bytes) -> str:
    """b' the' -> 'Ġthe'."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


@lru_cache(maxsize=1)
def _unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def hf_to_bytes(text: str) -> bytes:
    """'Ġthe' -> b' the'; a character outside the byte alphabet raises ValueError."""
    inverse = _unicode_to_bytes()
    try:
        return bytes(inverse[c] for c in text)
    except KeyError as e:
        raise ValueError(
            f"token {text!r}: expected only byte-level BPE characters, got {e}"
        ) from None


def merge_of(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The pair that BPE merges to make ``token``: run BPE on its bytes with lower ranks only.

    With ranks {..., b"ab": 256, b"bc": 257, b"abc": 258}: b"abc" -> (b"ab", b"c")
    (with ranks below 258, a,b,c -> ab,c and stops: that last pair is the merge that gives abc).
    """
    limit = ranks[token]
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best, best_i = None, None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < limit and (best is None or r < best):
                best, best_i = r, i
        if best is None:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    if len(parts) != 2:
        raise ValueError(
            f"token {token!r} (rank {limit}): expected to be the merge of two lower-ranked tokens, "
            f"got {len(parts)} parts {parts[:4]}...; not a BPE vocabulary"
        )
    return parts[0], parts[1]


def hf_pattern(pattern: str) -> str:
    """Our (Python ``regex``) split pattern in the Oniguruma syntax that HF tokenizers uses.

    Two differences matter: Oniguruma's ``$`` means end of *line* (Python's: end of text), so it
    becomes ``\\z``; and ``X{1,3}+`` is "repeat X{1,3}", not possessive, so possessive marks after a
    quantifier are dropped (``\\p{L}++`` -> ``\\p{L}+``, same matches for these patterns: the
    possessive forms only save backtracking, as tiktoken notes).
    """
    out, i, in_class, after_quantifier = [], 0, False, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":  # an escape: copied whole, \p{L} included
            end = pattern.index("}", i) + 1 if pattern[i + 1 : i + 3] in ("p{", "P{") else i + 2
            out.append(pattern[i:end])
            i, after_quantifier = end, False
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "$":
            c = r"\z"
        elif c == "+" and after_quantifier:
            i, after_quantifier = i + 1, False  # a possessive mark: drop it
            continue
        elif c == "{" and _quantifier_end(pattern, i):
            end = _quantifier_end(pattern, i)
            out.append(pattern[i:end])
            i, after_quantifier = end, True
            continue
        # "?" right after "(" opens a group modifier, it is not a quantifier
        after_quantifier = not in_class and c in "+*?" and not (c == "?" and out and out[-1] == "(")
        out.append(c)
        i += 1
    return "".join(out)


def _quantifier_end(pattern: str, i: int) -> int:
    """End index of a ``{n}``/``{n,m}`` quantifier starting at ``i``, or 0 if there is none."""
    j = pattern.find("}", i)
    body = pattern[i + 1 : j] if j > 0 else ""
    return j + 1 if body and all(ch.isdigit() or ch == "," for ch in body) else 0


def to_hf_tokenizer_json(tok) -> dict:
    """A Hugging Face ``tokenizer.json`` object (byte-level BPE) giving the same ids as ``tok``."""
    ranks = dict(tok.mergeable_ranks)
    vocab = {bytes_to_hf(t): r for t, r in sorted_ranks(ranks)}
    # the special tokens too: HF renumbers an added token whose id the vocab lacks (SmolLM2's
    # <|im_start|> = 1 became 49157); load_hf_tokenizer_json skips them in the vocab
    vocab.update(tok.special_tokens)
    # merges in rank order: HF's merge priority (position in the list) = our rank order
    merges = [
        " ".join(bytes_to_hf(p) for p in merge_of(t, ranks))
        for t, _ in sorted_ranks(ranks)
        if len(t) > 1
    ]
    added = [
        {
            "id": i,
            "content": s,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }  # fmt: skip
        for s, i in sorted(tok.special_tokens.items(), key=lambda kv: kv[1])
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": hf_pattern(tok.pattern)},
                    "behavior": "Isolated",
                    "invert": False,
                },  # fmt: skip
                {
                    "type": "ByteLevel",
                    "add_prefix_space": False,
                    "trim_offsets": True,
                    "use_regex": False,
                },  # fmt: skip
            ],
        },
        "post_processor": None,
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": True,
            "use_regex": False,
        },  # fmt: skip
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            # tiktoken (and our encoder) take a whole piece that is a token as is: HF's ignore_merges
            "ignore_merges": True,
            "vocab": vocab,
            "merges": merges,
        },
    }


def save_hf_tokenizer_json(tok, path: str | Path) -> Path:
    """Write ``to_hf_tokenizer_json(tok)`` to ``path`` (e.g. ``DIR/tokenizer.json``), atomically."""
    write_atomic(Path(path), json.dumps(to_hf_tokenizer_json(tok), ensure_ascii=False))
    return Path(path)


# GPT-2's original split regex: what HF's ByteLevel pre-tokenizer applies when use_regex is true
HF_BYTELEVEL_REGEX = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)


def _hf_split_pattern(pre, path) -> str:
    """The split regex of a byte-level BPE pre-tokenizer (Split + ByteLevel, or ByteLevel alone)."""
    steps = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else [pre]
    types = [s.get("type") if isinstance(s, dict) else None for s in steps]
    if "ByteLevel" not in types:
        raise ValueError(
            f"{path}: expected a byte-level BPE (a ByteLevel pre-tokenizer), got {types}"
        )
    splits = [s for s in steps if s.get("type") == "Split"]
    level = steps[types.index("ByteLevel")]
    if level.get("add_prefix_space"):
        raise ValueError(f"{path}: expected ByteLevel add_prefix_space false, got true")
    if not splits and level.get("use_regex", True):
        return HF_BYTELEVEL_REGEX
    if len(splits) != 1 or "Regex" not in splits[0].get("pattern", {}):
        raise ValueError(f"{path}: expected one Split pre-tokenizer with a Regex, got {steps}")
    if splits[0].get("behavior") != "Isolated" or splits[0].get("invert"):
        raise ValueError(f"{path}: expected Split behavior Isolated, got {splits[0]}")
    # Oniguruma's end-of-text \z is Python regex's \Z
    pattern = splits[0]["pattern"]["Regex"].replace(r"\z", r"\Z")
    check_pattern(pattern, path)
    return pattern


def load_hf_tokenizer_json(path: str | Path, impl: str = "fast"):
    """A Tokenizer from a Hugging Face ``tokenizer.json`` holding a byte-level BPE.

    Ranks are the vocab ids, so the merge order must follow the ids (true for GPT-2-style files,
    where merge i makes token 256 + i); other model types or layouts raise a ValueError.
    """
    cls = tokenizer_class(impl)
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(
            f"{path}: expected a tokenizer.json (JSON), got a parse error: {e}"
        ) from None
    model = d.get("model") if isinstance(d, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        got = model.get("type") if isinstance(model, dict) else type(model).__name__
        raise ValueError(f"{path}: expected model type BPE (byte-level), got {got}")
    pattern = _hf_split_pattern(d.get("pre_tokenizer"), path)
    specials = {a["content"]: a["id"] for a in d.get("added_tokens", [])}
    ranks = {hf_to_bytes(t): i for t, i in model["vocab"].items() if t not in specials}
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(
            f"{path}: expected all 256 byte tokens in the vocab, {len(missing)} missing"
        )
    previous = -1
    for i, m in enumerate(model.get("merges", [])):
        a, b = m.split(" ") if isinstance(m, str) else m
        merged = hf_to_bytes(a) + hf_to_bytes(b)
        rank = ranks.get(merged)
        if rank is None or rank <= previous:
            raise ValueError(
                f"{path}: merge {i} ({a!r}, {b!r}) gives id {rank}, expected an id above the "
                f"previous merge's {previous}; merge order must follow the ids"
            )
        previous = rank
    name = path.parent.name or "hf"
    return cls(ranks, pattern, specials, name=name)
