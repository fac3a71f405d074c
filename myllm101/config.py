"""Model configurations: one dataclass per architecture, shared by ``reference/`` and ``fast/``.

Each config is plain data: it validates itself on construction (a ``ValueError`` that names the
field, what was expected and what was given), and round-trips through JSON::

    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=32)
    assert GPTConfig.from_json(cfg.to_json()) == cfg

``PRESETS`` holds named configurations, from "-tiny" ones (parity tests, seconds on a CPU) to the
published shapes ("gpt2" is GPT-2 small, 124M parameters; "bert-base"; "minilm-l6").

``MODELS`` is the registry: which class implements each ``model_type`` in each tree.
``build_model(cfg)`` makes a fresh fast model (``impl="reference"``: the NumPy twin); the classes
are imported only then, so importing this module pulls in neither torch nor NumPy models.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass
from typing import Any

from myllm101.checks import expect_divisible, expect_in_range, expect_positive


class _ConfigBase:
    """to_dict / from_dict / to_json / from_json shared by the three configs."""

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": self.model_type, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        d = dict(d)
        kind = d.pop("model_type", cls.model_type)
        if kind != cls.model_type:
            raise ValueError(f"model_type: expected {cls.model_type!r}, got {kind!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"{cls.__name__}: unknown field(s) {unknown}, expected a subset of {sorted(known)}"
            )
        return cls(**d)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))


def _check_common(cfg) -> None:
    for name in ("vocab_size", "n_layer", "n_head", "n_embd"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"{name}: expected an int, got {type(v).__name__} {v!r}")
        expect_positive(name, v)
    expect_divisible("n_embd", cfg.n_embd, "n_head", cfg.n_head)
    expect_in_range("dropout", cfg.dropout, 0.0, 1.0)


@dataclass
class GPTConfig(_ConfigBase):
    """GPT-2: learned positions, pre-LayerNorm blocks, GELU(tanh) MLP of width 4*n_embd."""

    model_type = "gpt"  # class attribute, not a field

    vocab_size: int = 50257
    block_size: int = 1024  # longest sequence (number of learned positions)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # GPT-2 has biases in every Linear and LayerNorm
    layer_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True  # lm_head.weight is wte.weight

    def __post_init__(self):
        _check_common(self)
        expect_positive("block_size", self.block_size)
        expect_positive("layer_norm_eps", self.layer_norm_eps)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


@dataclass
class LlamaConfig(_ConfigBase):
    """LLaMA 2/3: RMSNorm, RoPE, SwiGLU MLP, grouped-query attention (n_kv_head <= n_head).

    Per-layer shapes (a structurally pruned model, myllm101/prune/structured.py): ``layer_n_head``,
    ``layer_n_kv_head`` and ``layer_intermediate_size`` give one size per layer, each at most the
    unpruned ``n_head`` / ``n_kv_head`` / ``intermediate_size``; None (the default) = every layer
    has that size. Read a layer's sizes through ``n_head_of(i)``, ``n_kv_head_of(i)`` and
    ``intermediate_size_of(i)``. ``head_dim`` (None = n_embd // n_head, resolved on construction,
    so ``dataclasses.replace`` keeps it: pass head_dim=None when changing n_embd or n_head) is the
    same in every layer: removing heads never changes it. ``to_dict`` leaves these fields out
    while they hold their defaults, so a uniform model's config.json is what it always was.
    """

    model_type = "llama"

    vocab_size: int = 32000
    block_size: int = 2048  # longest sequence (RoPE tables are built this long)
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int = 4
    n_embd: int = 768
    intermediate_size: int = 2048  # SwiGLU hidden width (~8/3 * n_embd)
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    dropout: float = 0.0
    tie_word_embeddings: bool = False
    head_dim: int | None = None  # None = n_embd // n_head
    layer_n_head: list[int] | None = None  # None = n_head in every layer
    layer_n_kv_head: list[int] | None = None  # None = n_kv_head in every layer
    layer_intermediate_size: list[int] | None = None  # None = intermediate_size in every layer

    def __post_init__(self):
        _check_common(self)
        expect_positive("n_kv_head", self.n_kv_head)
        expect_divisible("n_head", self.n_head, "n_kv_head", self.n_kv_head)
        expect_positive("intermediate_size", self.intermediate_size)
        expect_positive("block_size", self.block_size)
        expect_positive("rope_theta", self.rope_theta)
        expect_positive("rms_norm_eps", self.rms_norm_eps)
        if self.head_dim is None:
            self.head_dim = self.n_embd // self.n_head
        elif not isinstance(self.head_dim, int) or isinstance(self.head_dim, bool):
            got = f"{type(self.head_dim).__name__} {self.head_dim!r}"
            raise ValueError(f"head_dim: expected an int or None, got {got}")
        expect_positive("head_dim", self.head_dim)
        if self.head_dim % 2:
            raise ValueError(f"head_dim: expected an even value for RoPE, got {self.head_dim}")
        for name, full in (
            ("layer_n_head", self.n_head),
            ("layer_n_kv_head", self.n_kv_head),
            ("layer_intermediate_size", self.intermediate_size),
        ):
            setattr(self, name, _layer_sizes(name, getattr(self, name), self.n_layer, full))
        for i in range(self.n_layer):
            h, kv = self.n_head_of(i), self.n_kv_head_of(i)
            if h % kv:
                raise ValueError(
                    f"layer_n_head[{i}]={h} must be divisible by layer_n_kv_head[{i}]={kv} "
                    f"(each kv head serves a whole group of query heads)"
                )

    def n_head_of(self, layer: int) -> int:
        """Query heads of layer ``layer``."""
        return self._of("layer_n_head", self.n_head, layer)

    def n_kv_head_of(self, layer: int) -> int:
        """Key/value heads of layer ``layer``."""
        return self._of("layer_n_kv_head", self.n_kv_head, layer)

    def intermediate_size_of(self, layer: int) -> int:
        """SwiGLU hidden width of layer ``layer``."""
        return self._of("layer_intermediate_size", self.intermediate_size, layer)

    def _of(self, name: str, uniform: int, layer: int) -> int:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.n_layer:
            raise ValueError(f"layer: expected an int in [0, {self.n_layer}), got {layer!r}")
        sizes = getattr(self, name)
        return uniform if sizes is None else sizes[layer]

    @property
    def is_uniform(self) -> bool:
        """True when every layer has the same shapes (no per-layer list set)."""
        return all(getattr(self, name) is None for name in LAYER_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        for name in LAYER_FIELDS:
            if d[name] is None:
                del d[name]
        if self.is_uniform and self.head_dim == self.n_embd // self.n_head:
            del d["head_dim"]  # derived: config.json as before per-layer shapes existed
        return d


LAYER_FIELDS = ("layer_n_head", "layer_n_kv_head", "layer_intermediate_size")


def _layer_sizes(name: str, sizes: Any, n_layer: int, full: int) -> list[int] | None:
    """None, or a list of n_layer ints in [1, full] (a tuple becomes a list: JSON round trip)."""
    if sizes is None:
        return None
    if not isinstance(sizes, (list, tuple)) or len(sizes) != n_layer:
        got = f"length {len(sizes)}" if isinstance(sizes, (list, tuple)) else repr(sizes)
        raise ValueError(f"{name}: expected None or a list of n_layer={n_layer} ints, got {got}")
    for i, v in enumerate(sizes):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= full:
            raise ValueError(
                f"{name}[{i}]: expected an int in [1, {full}] (at most the unpruned size), "
                f"got {v!r}"
            )
    return list(sizes)


@dataclass
class BertConfig(_ConfigBase):
    """BERT: post-LayerNorm encoder with token + position + token-type embeddings."""

    model_type = "bert"

    vocab_size: int = 30522
    block_size: int = 512  # max_position_embeddings
    type_vocab_size: int = 2
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768  # hidden_size
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-12
    dropout: float = 0.0
    num_labels: int = 2  # sequence-classification head width
    pad_token_id: int = 0

    def __post_init__(self):
        _check_common(self)
        expect_positive("block_size", self.block_size)
        expect_positive("type_vocab_size", self.type_vocab_size)
        expect_positive("intermediate_size", self.intermediate_size)
        expect_positive("layer_norm_eps", self.layer_norm_eps)
        expect_positive("num_labels", self.num_labels)
        expect_in_range("pad_token_id", self.pad_token_id, 0, self.vocab_size)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


PRESETS: dict[str, GPTConfig | LlamaConfig | BertConfig] = {
    "gpt-tiny": GPTConfig(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=16),
    "gpt2": GPTConfig(),  # GPT-2 small: 124M parameters
    "llama-tiny": LlamaConfig(
        vocab_size=97,
        block_size=16,
        n_layer=2,
        n_head=4,
        n_kv_head=2,
        n_embd=16,
        intermediate_size=40,
    ),  # fmt: skip
    "llama-small": LlamaConfig(
        vocab_size=32000,
        block_size=1024,
        n_layer=8,
        n_head=8,
        n_kv_head=2,
        n_embd=512,
        intermediate_size=1376,
    ),  # fmt: skip
    "bert-tiny": BertConfig(
        vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=16, intermediate_size=64
    ),
    "bert-base": BertConfig(),
    "minilm-l6": BertConfig(n_layer=6, n_head=12, n_embd=384, intermediate_size=1536),
}


def get_preset(name: str):
    """A fresh copy of a preset (mutating it does not change ``PRESETS``)."""
    if name not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
    return dataclasses.replace(PRESETS[name])


def config_from_dict(d: dict[str, Any]):
    """Any config from its dict, dispatched on ``model_type``."""
    kinds = {c.model_type: c for c in (GPTConfig, LlamaConfig, BertConfig)}
    kind = d.get("model_type")
    if kind not in kinds:
        raise ValueError(f"model_type: expected one of {sorted(kinds)}, got {kind!r}")
    return kinds[kind].from_dict(d)


# model_type -> {impl: "module:Class"}; both classes take the config first (the reference ones
# also ``params=None, seed=0``) and read and write the same state_dict names
MODELS: dict[str, dict[str, str]] = {
    "gpt": {"fast": "myllm101.fast.gpt:GPT", "reference": "myllm101.reference.gpt:ReferenceGPT"},
    "llama": {
        "fast": "myllm101.fast.llama:Llama",
        "reference": "myllm101.reference.llama:ReferenceLlama",
    },
    "bert": {
        "fast": "myllm101.fast.bert:Bert",
        "reference": "myllm101.reference.bert:ReferenceBert",
    },
}


def model_class(model_type: str, impl: str = "fast") -> type:
    """The class of ``model_type`` ("gpt" | "llama" | "bert") in ``impl`` ("fast" | "reference")."""
    if model_type not in MODELS:
        raise ValueError(f"model_type: expected one of {sorted(MODELS)}, got {model_type!r}")
    if impl not in MODELS[model_type]:
        raise ValueError(f"impl: expected 'fast' or 'reference', got {impl!r}")
    module, name = MODELS[model_type][impl].split(":")
    return getattr(importlib.import_module(module), name)


def build_model(cfg, impl: str = "fast"):
    """A freshly initialized model for ``cfg``: an ``nn.Module`` (fast) or a NumPy reference."""
    return model_class(cfg.model_type, impl)(cfg)
