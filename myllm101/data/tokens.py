"""Token files: a split's text encoded once into a flat memory-mapped array of ids.

    tokenize_splits("data/shakespeare", tok, "runs/tokens/shakespeare-4k")
        -> {train,val,test}.bin + .bin.json sidecars ({dtype, n_tokens, n_vocab, tokenizer, ...})
    TokenFile("runs/tokens/shakespeare-4k/train.bin").tokens   # np.memmap (n_tokens,) uint16

Encoding is ``fast.bpe.Tokenizer.encode_file`` (streamed, same ids as ``encode`` of the whole
text). A file is re-encoded only when its sidecar does not match the source text's size and
modification time, or the tokenizer's name and vocabulary size.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")


class TokenFile:
    """A .bin token file and its JSON sidecar, opened read-only with np.memmap."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        side = Path(str(self.path) + ".json")
        if not self.path.exists() or not side.exists():
            raise FileNotFoundError(f"{self.path}: expected a token file and its sidecar {side}")
        try:
            self.meta = json.loads(side.read_text())
            dtype, n = np.dtype(self.meta["dtype"]), int(self.meta["n_tokens"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{side}: not a valid token sidecar ({e})") from None
        size = self.path.stat().st_size
        if size != n * dtype.itemsize:
            raise ValueError(
                f"{self.path}: expected {n} tokens of {dtype.name} ({n * dtype.itemsize} bytes), "
                f"got {size} bytes (truncated or stale)"
            )
        self.n_vocab = int(self.meta.get("n_vocab", 0))
        self.tokens = (
            np.memmap(self.path, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype)
        )

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r}, n_tokens={len(self)}, n_vocab={self.n_vocab})"


def _source_stamp(text_path: Path) -> dict:
    st = text_path.stat()
    return {"source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns}


def is_current(bin_path: Path, text_path: Path, tokenizer) -> bool:
    side = Path(str(bin_path) + ".json")
    if not (bin_path.exists() and side.exists()):
        return False
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError:
        return False
    want = {**_source_stamp(text_path), "tokenizer": tokenizer.name, "n_vocab": tokenizer.n_vocab}
    return all(meta.get(k) == v for k, v in want.items())


def tokenize_file(text_path, tokenizer, bin_path, show_progress: bool = True) -> TokenFile:
    """Encode one text file (cached: skipped when current); written to a temp name, then renamed."""
    text_path, bin_path = Path(text_path), Path(bin_path)
    if not text_path.exists():
        raise FileNotFoundError(f"{text_path}: no such text file (run `make data` first?)")
    if not is_current(bin_path, text_path, tokenizer):
        bin_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = bin_path.with_name(f".{bin_path.name}.{os.getpid()}.tmp")
        meta = tokenizer.encode_file(
            text_path, tmp, show_progress=show_progress, allowed_special="all"
        )
        meta.update(_source_stamp(text_path))
        Path(str(tmp) + ".json").unlink()
        os.replace(tmp, bin_path)
        Path(str(bin_path) + ".json").write_text(json.dumps(meta, indent=2))
    return TokenFile(bin_path)


def tokenize_splits(text_dir, tokenizer, out_dir, splits=SPLITS, show_progress=True) -> dict:
    """{split: TokenFile} for ``text_dir/{split}.txt`` -> ``out_dir/{split}.bin`` (cached)."""
    return {
        s: tokenize_file(
            Path(text_dir) / f"{s}.txt", tokenizer, Path(out_dir) / f"{s}.bin", show_progress
        )
        for s in splits
    }
