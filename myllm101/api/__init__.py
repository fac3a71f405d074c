"""A small Hugging Face-style API over our models, tokenizers, trainer and directories.

    from myllm101.api import AutoModelForCausalLM, AutoTokenizer, pipeline

    model = AutoModelForCausalLM.from_pretrained("smollm2")        # or a model / run directory
    tok = AutoTokenizer.from_pretrained("smollm2")
    pipeline("text-generation", model="smollm2")("Hello", max_new_tokens=8)
    model.save_pretrained("out/smol-hf", tokenizer=tok, format="hf")  # transformers loads it

``registry.py``: model_type -> class per task (``register_model``); ``loading.py``: what a name or
directory holds; ``auto.py``: the Auto classes and ``save_pretrained``; ``pipeline.py``; ``trainer.py``:
``Trainer`` / ``TrainingArguments``; ``cli.py``: ``myllm101 export`` and ``generate --model``.
"""

from myllm101.api.auto import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    save_pretrained,
)
from myllm101.api.pipeline import pipeline
from myllm101.api.registry import register_model
from myllm101.api.trainer import Trainer, TrainingArguments

__all__ = [
    "AutoConfig",
    "AutoModel",
    "AutoModelForCausalLM",
    "AutoModelForMaskedLM",
    "AutoModelForSequenceClassification",
    "AutoTokenizer",
    "Trainer",
    "TrainingArguments",
    "pipeline",
    "register_model",
    "save_pretrained",
]
