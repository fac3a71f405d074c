"""The "tiny Hugging Face" API: Auto classes over our one model-directory format.

    from myllm101.api import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained("runs/gpt-shakespeare")   # or "smollm2"
    tok = AutoTokenizer.from_pretrained("runs/gpt-shakespeare")            # or "gpt2"
    model.save_pretrained("out/gpt", tokenizer=tok)                # our format (manifest.json)
    model.save_pretrained("out/gpt-hf", tokenizer=tok, format="hf")  # transformers loads it

``from_pretrained(spec)`` takes a shipped name ("smollm2", "minilm"), our model or run directory,
a Hugging Face directory, or an adapter directory (api/loading.py lists the rules) and returns our
own ``nn.Module`` (GPT, Llama, Bert or a BERT task class), in eval mode, with a
``save_pretrained`` method bound to it. ``save_pretrained(model, directory, ...)`` is the same as a
function, for models built any other way (a ``Trainer``'s, ``from_config``'s).

Our format (``format="myllm101"``, train/checkpoint.py): config.json (with model_type),
model.safetensors, the tokenizer (myllm101_tokenizer.json, or vocab.txt for WordPiece) and
manifest.json over them, written atomically; a quantized model keeps its "quantization" entry
(quant/quantize.py ``save_quantized``); a model with LoRA layers is saved as its adapter (PEFT
format, finetune/adapters.py), whose base ``from_pretrained`` loads again from the recorded name.
``format="hf"``: hub/export.py.
"""

from __future__ import annotations

import tempfile
import types
from pathlib import Path

import torch
from torch import nn

from myllm101.api import loading
from myllm101.api.registry import SHIPPED_MODELS, model_entry

FORMATS = ("myllm101", "hf")


# ---- saving -----------------------------------------------------------------------------------


def _wordpiece_vocab(tokenizer, tmp: Path) -> Path:
    """A WordPiece tokenizer's vocab as vocab.txt (one token per line, in id order) in ``tmp``."""
    vocab = tokenizer.vocab
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise ValueError("tokenizer: expected WordPiece ids 0..n-1 without gaps")
    by_id = {i: t for t, i in vocab.items()}
    path = tmp / "vocab.txt"
    path.write_text("".join(by_id[i] + "\n" for i in ids), encoding="utf-8")
    return path


def _split_tokenizer(tokenizer, tmp: Path) -> tuple[object | None, list[Path]]:
    """(our BPE tokenizer for save_model_dir or None, extra files to copy: a vocab.txt)."""
    if tokenizer is None:
        return None, []
    if hasattr(tokenizer, "mask_id") and hasattr(tokenizer, "vocab"):  # WordPiece
        return None, [_wordpiece_vocab(tokenizer, tmp)]
    bpe = getattr(tokenizer, "bpe", tokenizer)  # a GGUF tokenizer: our BPE inside it
    if not hasattr(bpe, "mergeable_ranks"):
        raise ValueError(
            f"tokenizer: expected our BPE Tokenizer, a GGUF tokenizer or a WordPiece tokenizer, "
            f"got {type(tokenizer).__name__}"
        )
    return bpe, []


def save_pretrained(model: nn.Module, directory: str | Path, tokenizer=None,
                    format: str = "myllm101", task: str | None = None,
                    base_name: str | None = None) -> Path:  # fmt: skip
    """Write ``model`` (and ``tokenizer``) to ``directory``, replacing what is there.

    format "myllm101": our model directory (module docstring); a LoRA model: its adapter
        (``base_name``: what ``from_pretrained`` loads the base from, default the name recorded
        when the LoRA layers were applied). "hf": transformers' layout (hub/export.py; ``task``
        "mlm" | "cls" picks BERT's class, default from the model: "cls" for a
        BertForSequenceClassification). Returns the directory."""
    from myllm101.api.heads import BertForSequenceClassification

    if format not in FORMATS:
        raise ValueError(f"format: expected one of {FORMATS}, got {format!r}")
    if not isinstance(model, nn.Module) or not hasattr(model, "cfg"):
        raise TypeError(
            f"model: expected one of our models (an nn.Module with .cfg), got {type(model).__name__}"
        )
    directory = Path(directory)
    if format == "hf":
        from myllm101.hub.export import save_hf

        task = task or ("cls" if isinstance(model, BertForSequenceClassification) else "mlm")
        with tempfile.TemporaryDirectory() as tmp:
            _, extra = _split_tokenizer(tokenizer, Path(tmp))
            return save_hf(model, directory, tokenizer, task, extra[0] if extra else None)
    from myllm101.finetune.adapters import lora_modules

    if lora_modules(model):
        return _save_adapter(model, directory, base_name)
    from myllm101.train.checkpoint import save_model_dir

    with tempfile.TemporaryDirectory() as tmp:
        bpe, extra = _split_tokenizer(tokenizer, Path(tmp))
        if getattr(model, "quantization", None):
            from myllm101.quant.quantize import save_quantized

            base = model.quantization.get("base")
            return save_quantized(model, directory, model.cfg, bpe, base, extra)
        return save_model_dir(directory, model, model.cfg, bpe, extra_files=extra)


def _save_adapter(model: nn.Module, directory: Path, base_name: str | None) -> Path:
    from myllm101.finetune.adapters import save_adapter
    from myllm101.train.checkpoint import write_dir_atomically

    name = base_name or (getattr(model, "lora_base_identity", None) or {}).get("base_name")
    if name is None:
        raise ValueError(
            "base_name: expected the base model's name or directory (what from_pretrained loads "
            "the adapter's base from), got None and none recorded by apply_lora"
        )
    return write_dir_atomically(directory, lambda tmp: save_adapter(model, tmp, base_name=name))


def _bind(model: nn.Module) -> nn.Module:
    """Give ``model`` a ``save_pretrained(directory, tokenizer=None, format=..., ...)`` method."""
    model.save_pretrained = types.MethodType(save_pretrained, model)
    return model


# ---- the Auto classes -------------------------------------------------------------------------


class _AutoModelBase:
    task = "base"

    @classmethod
    def from_pretrained(cls, spec: str | Path, device: str | torch.device = "cpu",
                        dtype: str | None = None, merge_adapter: bool = True,
                        num_labels: int | None = None) -> nn.Module:  # fmt: skip
        """Our model for ``spec`` (a shipped name or a directory, api/loading.py), for this class's
        task, in eval mode on ``device``; ``dtype`` "fp32" | "bf16" | "auto" (None: as stored).
        ``num_labels`` (sequence classification): a new classifier of that width when the loaded
        one differs (finetune/run.py ``resize_classifier``: seeded N(0, 0.02), untrained)."""
        m = loading.load(spec, cls.task, merge=merge_adapter)
        model = m.model
        if num_labels is not None:
            from myllm101.finetune.run import resize_classifier

            if cls.task != "sequence-classification":
                raise ValueError(
                    f"num_labels: only for sequence classification, got task {cls.task!r}"
                )
            model = resize_classifier(model, num_labels)
        model.labels = m.labels  # class names, when the directory recorded them
        return _bind(loading.to_device(model, device, dtype))

    @classmethod
    def from_config(cls, config, seed: int | None = None) -> nn.Module:
        """A freshly initialized model of ``config`` (seeded with ``seed`` when given)."""
        entry = model_entry(_model_type(config), cls.task)
        if seed is not None:
            torch.manual_seed(seed)
        return _bind(entry.model_cls(config))

    @staticmethod
    def save_pretrained(model: nn.Module, directory: str | Path, tokenizer=None,
                        format: str = "myllm101", task: str | None = None) -> Path:  # fmt: skip
        """``save_pretrained(model, directory, ...)`` (the module-level function)."""
        return save_pretrained(model, directory, tokenizer, format, task)


def _model_type(config) -> str:
    kind = getattr(config, "model_type", None)
    if not isinstance(kind, str):
        raise TypeError(
            f"config: expected a model config (with model_type), got {type(config).__name__}"
        )
    return kind


class AutoModel(_AutoModelBase):
    """The backbone: GPT / Llama as they are, BERT as ``Bert`` (``encode`` -> hidden states)."""

    task = "base"


class AutoModelForCausalLM(_AutoModelBase):
    """Next-token models (GPT, LLaMA, SmolLM2): ``model(ids).logits`` (B, T, V)."""

    task = "causal-lm"


class AutoModelForMaskedLM(_AutoModelBase):
    """BERT with its MLM head the default: ``model(ids).logits`` (B, T, V)."""

    task = "masked-lm"


class AutoModelForSequenceClassification(_AutoModelBase):
    """BERT with its classifier the default: ``model(ids).logits`` (B, num_labels)."""

    task = "sequence-classification"


class AutoConfig:
    """Model configs: our dataclasses (myllm101/config.py, or a registered one)."""

    @staticmethod
    def from_pretrained(spec: str | Path):
        """A preset name ("gpt-tiny", "gpt2", "llama-tiny", ... config.PRESETS), a shipped model
        ("smollm2", "minilm") or a model directory (ours, a run, Hugging Face's, an adapter's)."""
        from myllm101.config import PRESETS, get_preset

        if isinstance(spec, str) and spec in PRESETS:
            return get_preset(spec)
        if isinstance(spec, str) and spec == "smollm2":
            from myllm101.hub.gguf_loader import llama_config_from_gguf, read_gguf
            from myllm101.hub.smollm2 import gguf_path

            return llama_config_from_gguf(read_gguf(gguf_path()))
        if isinstance(spec, str) and spec == "minilm":
            from myllm101.hub.embed import model_dir

            spec = model_dir("minilm")
        try:
            kind = loading.kind_of(spec)
        except ValueError:
            raise ValueError(
                f"config: expected a preset ({sorted(PRESETS)}), one of {sorted(SHIPPED_MODELS)} "
                f"or a model directory, got {str(spec)!r}"
            ) from None
        if kind == "myllm101":
            from myllm101.train.checkpoint import resolve_model_dir

            return loading.read_our_config(resolve_model_dir(spec))
        return loading.load(spec).model.cfg  # hf (convert.py reads the weights too) / adapter

    @staticmethod
    def for_model(model_type: str, **fields):
        """A config of the registered ``model_type`` with ``fields`` (the rest default)."""
        return model_entry(model_type).config_cls(**fields)

    @staticmethod
    def save_pretrained(config, directory: str | Path) -> Path:
        """``directory/config.json`` (``config.to_dict()``, with model_type)."""
        import json

        _model_type(config)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "config.json"
        path.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        return path


class AutoTokenizer:
    """Tokenizers: our byte-level BPE (trained, GPT-2 / cl100k_base / o200k_base, a GGUF's) or
    WordPiece (MiniLM's, a BERT directory's vocab.txt)."""

    @staticmethod
    def from_pretrained(spec: str | Path):
        """ "gpt2" | "cl100k_base" | "o200k_base" | "smollm2" | "minilm" | a directory holding
        myllm101_tokenizer.json, tokenizer.json (byte-level BPE) or vocab.txt (WordPiece); a run
        directory's model or an adapter's base."""
        from myllm101.tokenizer.formats import FILENAME, load_tokenizer
        from myllm101.tokenizer.hf_format import load_hf_tokenizer_json
        from myllm101.tokenizer.pretrained import PRETRAINED, load_pretrained

        if isinstance(spec, str) and spec in PRETRAINED:
            return load_pretrained(spec)
        if isinstance(spec, str) and spec == "smollm2":
            from myllm101.hub.gguf_loader import read_gguf, tokenizer_from_gguf
            from myllm101.hub.smollm2 import gguf_path

            return tokenizer_from_gguf(read_gguf(gguf_path()))
        if isinstance(spec, str) and spec == "minilm":
            from myllm101.hub.embed import model_dir

            spec = model_dir("minilm")
        path = Path(spec)
        if not path.is_dir():
            raise ValueError(
                f"tokenizer: expected one of {sorted([*PRETRAINED, *SHIPPED_MODELS])} or a "
                f"directory, got {str(spec)!r}"
            )
        if loading.adapter_dir(path) is not None:
            return loading.load(path).tokenizer
        for cand in _tokenizer_dirs(path):
            if (cand / FILENAME).is_file():
                return load_tokenizer(cand)
            if (cand / "vocab.txt").is_file():
                from myllm101.fast.wordpiece import WordPieceTokenizer

                return WordPieceTokenizer.from_file(cand / "vocab.txt")
            if (cand / "tokenizer.json").is_file():
                return load_hf_tokenizer_json(cand / "tokenizer.json")
        raise ValueError(
            f"{path}: expected a tokenizer file ({FILENAME}, tokenizer.json or vocab.txt), found none"
        )

    @staticmethod
    def save_pretrained(tokenizer, directory: str | Path, format: str = "myllm101") -> list[Path]:
        """ "myllm101": myllm101_tokenizer.json (BPE) or vocab.txt (WordPiece); "hf": what
        transformers' AutoTokenizer reads (hub/export.py ``save_hf_tokenizer``). -> the files."""
        if format not in FORMATS:
            raise ValueError(f"format: expected one of {FORMATS}, got {format!r}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            bpe, extra = _split_tokenizer(tokenizer, Path(tmp))
            if format == "hf":
                from myllm101.hub.export import save_hf_tokenizer

                return save_hf_tokenizer(tokenizer, directory, None, extra[0] if extra else None)
            if bpe is not None:
                from myllm101.tokenizer.formats import save_tokenizer

                return [save_tokenizer(bpe, directory)]
            import shutil

            shutil.copyfile(extra[0], directory / "vocab.txt")
            return [directory / "vocab.txt"]


def _tokenizer_dirs(path: Path) -> list[Path]:
    """``path`` itself, then (a run directory) the model directory it resolves to."""
    from myllm101.train.checkpoint import resolve_model_dir

    out = [path]
    try:
        out.append(resolve_model_dir(path))
    except FileNotFoundError:
        pass
    return out
