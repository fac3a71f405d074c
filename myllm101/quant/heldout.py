"""Texts for evaluating and calibrating quantized models, all offline and fixed.

- "shakespeare-test": the corpus' test split, ``data/shakespeare/test.txt`` (``make data``;
  plays that never appear in train.txt, see myllm101/data/shakespeare.py).
- "python-stdlib": a second domain, code: the files ``STDLIB_FILES`` of this Python's own standard
  library (``sysconfig.get_paths()["stdlib"]``), each preceded by a ``# ---- name ----`` line,
  concatenated in that order and cut at ``STDLIB_CHARS`` characters. The text depends on the
  Python version (3.11 here), so ``eval`` records its sha256 next to every perplexity.
- calibration (GPTQ): ``calibration_batches`` cuts ``n_windows`` windows of ``seq_len`` tokens
  from the corpus' *train* split at character offsets drawn from ``torch.Generator`` seeded with
  ``seed`` (0), so the same windows every time and none from the evaluation text.

Token ids: ``text_ids`` encodes with special-token strings taken as plain text and drops ids the
model's vocabulary does not have (bytes a GGUF vocabulary lacks, as ``GGUFTokenizer`` does).
"""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

import torch

DATA_DIR = "data/shakespeare"
STDLIB_FILES = (  # plain, stable modules: prose docstrings, typical Python, no generated tables
    "textwrap.py",
    "bisect.py",
    "heapq.py",
    "fractions.py",
    "string.py",
    "shlex.py",
    "colorsys.py",
    "queue.py",
    "sched.py",
    "graphlib.py",
    "calendar.py",
    "statistics.py",
    "difflib.py",
)
STDLIB_CHARS = 200_000
TEXTS = ("shakespeare-test", "python-stdlib")


def _read_split(data_dir, split: str) -> str:
    path = Path(data_dir) / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the Shakespeare {split} split is missing; run `make data` (or python -m "
            f"myllm101.data.shakespeare --out {data_dir})"
        )
    return path.read_text(encoding="utf-8")


def shakespeare_test(data_dir=DATA_DIR) -> str:
    return _read_split(data_dir, "test")


def stdlib_text(files=STDLIB_FILES, max_chars: int = STDLIB_CHARS) -> str:
    """The fixed slice of the standard library's sources (see the module docstring)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts = []
    for name in files:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: expected this standard library source file")
        parts.append(f"# ---- {name} ----\n{path.read_text(encoding='utf-8')}")
    return "\n".join(parts)[:max_chars]


def heldout_texts(data_dir=DATA_DIR) -> dict[str, str]:
    """{"shakespeare-test": ..., "python-stdlib": ...}."""
    return {"shakespeare-test": shakespeare_test(data_dir), "python-stdlib": stdlib_text()}


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def text_ids(tokenizer, text: str, vocab_size: int) -> list[int]:
    """Ids of ``text`` (special-token strings as plain text), ids >= vocab_size dropped."""
    bpe = getattr(tokenizer, "bpe", tokenizer)  # GGUFTokenizer wraps our BPE
    return [i for i in bpe.encode_ordinary(text) if i < vocab_size]


def calibration_batches(
    tokenizer,
    vocab_size: int,
    n_windows: int = 16,
    seq_len: int = 256,
    batch_size: int = 4,
    seed: int = 0,
    data_dir=DATA_DIR,
) -> list[torch.Tensor]:
    """``n_windows`` windows of ``seq_len`` tokens of train.txt, as (batch_size, seq_len) LongTensors.

    Each window starts at a seeded random character offset, moved to the next line start; 8
    characters per token are encoded, which is more than enough (English BPE: ~4).
    """
    for name, v in (("n_windows", n_windows), ("seq_len", seq_len), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    text = _read_split(data_dir, "train")
    span = 8 * seq_len
    if len(text) < 2 * span:
        raise ValueError(f"{data_dir}/train.txt: expected at least {2 * span} characters")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(text) - 2 * span, (n_windows,), generator=g).tolist()
    windows = []
    for s in starts:
        s = text.index("\n", s) + 1
        ids = text_ids(tokenizer, text[s : s + span], vocab_size)[:seq_len]
        if len(ids) < seq_len:
            raise ValueError(f"calibration window at {s}: {len(ids)} tokens < seq_len {seq_len}")
        windows.append(ids)
    t = torch.tensor(windows, dtype=torch.long)  # (n_windows, seq_len)
    return list(t.split(batch_size))
