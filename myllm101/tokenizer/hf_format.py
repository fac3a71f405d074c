"""Hugging Face ``tokenizer.json`` for byte-level BPE tokenizers, written and read without the
``tokenizers`` library (the file is plain JSON).

``to_hf_tokenizer_json`` / ``save_hf_tokenizer_json``: model type BPE whose vocab is written in
GPT-2's byte-to-unicode alphabet (``bytes_to_unicode``), the merges derived from the ranks
(``merge_of``), pre-tokenizer Split(our regex, in Oniguruma syntax: ``hf_pattern``) +
ByteLevel(use_regex=False), ByteLevel decoder and the special tokens as added tokens.
``tokenizers.Tokenizer.from_file`` then gives the same ids (parity_tests/test_tokenizer_formats.py).
``load_hf_tokenizer_json`` reads a byte-level BPE ``tokenizer.json`` back (GPT-2-style files
included) into our Tokenizer. Our own format and tiktoken's: tokenizer/formats.py.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from myllm101.tokenizer.formats import check_pattern, sorted_ranks, tokenizer_class, write_atomic


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
