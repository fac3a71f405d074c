"""The embedding model of a RAG index: what ``index.json`` records about it (name, sha256 of its
weights and vocabulary, width), the tokenizer chunks are counted in, and ``embed(texts)`` -> unit
vectors (MiniLM through our BERT, hub/embed.py).

    embedder = Embedder("minilm", dtype="auto")     # bf16 where this CPU runs it natively
    vectors = embedder.embed(["a chunk", "another"])  # (2, 384) float32, unit length
"""

from __future__ import annotations

import functools
import json

import numpy as np

from myllm101.files import sha256_file


@functools.cache
def _model_identity(model: str) -> dict:
    from myllm101.hub.embed import model_dir

    directory = model_dir(model)
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    return {  # read from the files, without loading the model (a BM25 query never needs it)
        "name": model,
        "weights_sha256": sha256_file(directory / "model.safetensors"),
        "dim": int(config["hidden_size"]),
        "tokenizer": "wordpiece",
        "tokenizer_sha256": sha256_file(directory / "vocab.txt"),
    }


class _TokenCounter:
    """The embedding model's WordPiece as the chunker wants it: ``encode(text) -> ids`` without
    [CLS]/[SEP]."""

    def __init__(self, wordpiece):
        self.wordpiece = wordpiece

    def encode(self, text: str) -> list[int]:
        return self.wordpiece.encode(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids) -> str:
        return self.wordpiece.decode(ids)


class Embedder:
    """A sentence-embedding model for the index: its identity (what ``index.json`` records), its
    tokenizer (what chunks are counted in) and ``embed(texts) -> (n, dim)`` unit vectors.

    ``dtype`` "auto" is resolved once (``device.choose_inference_dtype``: bf16 where this CPU runs
    it natively, else fp32) and stored with the index, so queries are embedded like the chunks."""

    def __init__(self, model: str = "minilm", dtype: str = "auto", batch_size: int = 32):
        from myllm101.device import choose_inference_dtype

        self.model = model
        self.dtype = choose_inference_dtype(dtype).value
        self.batch_size = batch_size

    @property
    def identity(self) -> dict:
        return _model_identity(self.model)

    @property
    def tokenizer(self) -> _TokenCounter:
        from myllm101.hub.embed import load_embedder

        return _TokenCounter(load_embedder(self.model)[1])

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors; ``progress``: a bar over slices of 256."""
        from myllm101.hub.embed import embed

        dim = self.identity["dim"]
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        step = 256
        starts = range(0, len(texts), step)
        if progress and len(texts) > step:
            from tqdm import tqdm

            starts = tqdm(starts, desc="embed", unit="x256", leave=False)
        parts = [
            embed(texts[s : s + step], self.model, batch_size=self.batch_size, dtype=self.dtype)
            for s in starts
        ]
        return np.concatenate(parts).astype(np.float32, copy=False)
