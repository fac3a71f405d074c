"""``Trainer`` / ``TrainingArguments`` in Hugging Face's shape, over train/trainer.py.

    args = TrainingArguments("runs/tiny", max_steps=200, learning_rate=3e-3,
                             per_device_train_batch_size=8, seq_len=64)
    trainer = Trainer(model="gpt-tiny", args=args, train_dataset=texts, tokenizer="gpt2")
    summary = trainer.train()                  # train/trainer.py Trainer.fit(): the same run dir,
    trainer.save_model("out/tiny", format="hf")  # checkpoints, resume, metrics, summary.json

What is trained: ``model`` is a preset name ("gpt-tiny", ...), a config (ours, or its dict), or one
of our models (or a name / directory ``from_pretrained`` takes): then its weights are the starting
point (copied into the trainer's freshly built model of the same config before the first step).
Data: ``train_dataset`` / ``eval_dataset`` are token ids (a 1-D array or list), a text, or a list of
texts (encoded with ``tokenizer`` and concatenated); None: the TrainConfig's ``data_dir`` text files
with ``tokenizer`` (a name or directory), as ``myllm101 train`` does.

Every TrainingArguments field maps onto one TrainConfig field (``FIELD_MAP``); ``extra`` passes any
other TrainConfig field through (``{"sampler": "sequential"}``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

# TrainingArguments name -> TrainConfig name
FIELD_MAP = {
    "output_dir": "out_dir", "max_steps": "max_steps", "learning_rate": "lr",
    "min_learning_rate": "min_lr", "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum_steps", "seq_len": "seq_len",
    "warmup_steps": "warmup_steps", "weight_decay": "weight_decay",
    "lr_scheduler_type": "schedule", "max_grad_norm": "grad_clip", "eval_steps": "eval_interval",
    "eval_batches": "eval_batches", "save_steps": "save_interval",
    "save_total_limit": "keep_last", "logging_steps": "log_interval", "seed": "seed",
    "dtype": "dtype", "device": "device", "overwrite_output_dir": "overwrite",
    "gradient_checkpointing": "gradient_checkpointing", "torch_compile": "compile",
    "max_time_s": "max_time_s", "early_stopping_patience": "early_stopping_patience",
}  # fmt: skip


@dataclass
class TrainingArguments:
    output_dir: str
    max_steps: int = 1000
    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-4
    per_device_train_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    seq_len: int = 128
    warmup_steps: int = 100
    weight_decay: float = 0.1
    lr_scheduler_type: str = "cosine"  # cosine | linear | constant
    max_grad_norm: float = 1.0
    eval_steps: int = 200
    eval_batches: int = 20
    save_steps: int = 500
    save_total_limit: int = 2
    logging_steps: int = 10
    seed: int = 1337
    dtype: str = "auto"  # auto | float32 | float64 | bf16 | fp16
    device: str = "auto"
    overwrite_output_dir: bool = False
    gradient_checkpointing: bool = False
    torch_compile: bool = False
    max_time_s: float = 0.0
    early_stopping_patience: int = 0
    resume_from_checkpoint: bool = False
    disable_tqdm: bool = False
    extra: dict = field(default_factory=dict)  # any other TrainConfig field

    def to_train_config(self, model: dict, tokenizer: str | None = None):
        """The TrainConfig these arguments describe, training ``model`` (a config dict)."""
        from myllm101.train.config import TrainConfig

        d = {FIELD_MAP[f.name]: getattr(self, f.name) for f in dataclasses.fields(self)
             if f.name in FIELD_MAP}  # fmt: skip
        d.update(model=model, progress=not self.disable_tqdm)
        if tokenizer is not None:
            d["tokenizer"] = tokenizer
        clash = sorted(set(self.extra) & set(d))
        if clash:
            raise ValueError(f"extra: {clash} are TrainingArguments fields already; set them there")
        return TrainConfig.from_dict({**d, **self.extra})


def _model_config(model) -> tuple[dict, nn.Module | None]:
    """(config dict for TrainConfig.model, the module whose weights start the run, or None)."""
    from myllm101.config import PRESETS

    if isinstance(model, nn.Module):
        if not hasattr(model, "cfg"):
            raise TypeError(
                f"model: expected one of our models (with .cfg), got {type(model).__name__}"
            )
        return model.cfg.to_dict(), model
    if isinstance(model, str) and model in PRESETS:
        return {"preset": model}, None
    if isinstance(model, dict):
        return dict(model), None
    if hasattr(model, "to_dict") and hasattr(model, "model_type"):
        return model.to_dict(), None
    if isinstance(model, (str, Path)):
        from myllm101.api import loading

        m = loading.load(model).model  # a clear error for a wrong name
        return m.cfg.to_dict(), m
    raise TypeError(
        f"model: expected a preset name, a config, a config dict, one of our models or a model "
        f"name/directory, got {type(model).__name__}"
    )


def _tokens(data, tokenizer, what: str) -> np.ndarray | None:
    """Token ids from ids, a text or a list of texts (encoded with ``tokenizer``)."""
    if data is None:
        return None
    if isinstance(data, str) or (
        isinstance(data, (list, tuple)) and data and isinstance(data[0], str)
    ):
        if tokenizer is None or isinstance(tokenizer, (str, Path)):
            raise ValueError(
                f"{what}: texts need a tokenizer object (AutoTokenizer.from_pretrained), got {tokenizer!r}"
            )
        texts = [data] if isinstance(data, str) else list(data)
        ids = [i for t in texts for i in tokenizer.encode(t)]
        return np.asarray(ids, dtype=np.int64)
    arr = np.asarray(data)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer) or arr.size < 2:
        raise ValueError(
            f"{what}: expected 1-D integer token ids (at least 2), a text or a list of texts, got "
            f"an array of shape {arr.shape} and dtype {arr.dtype}"
        )
    return arr.astype(np.int64)


class Trainer:
    """``Trainer(model, args, train_dataset, eval_dataset, tokenizer).train()`` -> summary dict;
    then ``trainer.model`` is the trained model, ``save_model(dir)`` writes it."""

    def __init__(self, model, args: TrainingArguments, train_dataset=None, eval_dataset=None,
                 tokenizer=None):  # fmt: skip
        from myllm101.train.trainer import Trainer as RunTrainer

        if not isinstance(args, TrainingArguments):
            raise TypeError(f"args: expected TrainingArguments, got {type(args).__name__}")
        model_dict, start = _model_config(model)
        if isinstance(tokenizer, (str, Path)) and train_dataset is not None:
            from myllm101.api.auto import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        tok_spec = str(tokenizer) if isinstance(tokenizer, (str, Path)) else None
        self.args, self.tokenizer = args, tokenizer
        self.config = args.to_train_config(model_dict, tok_spec)
        train = _tokens(train_dataset, tokenizer, "train_dataset")
        val = _tokens(eval_dataset, tokenizer, "eval_dataset")
        if train is None and val is not None:
            raise ValueError("eval_dataset: expected it only together with a train_dataset")
        tok_obj = None if isinstance(tokenizer, (str, Path)) else tokenizer
        self.run = RunTrainer(self.config, train, val, tok_obj, resume=args.resume_from_checkpoint)
        if start is not None:  # the given weights are where training starts
            self.run.model.load_state_dict(start.state_dict())

    @property
    def model(self) -> nn.Module:
        return self.run.model

    def train(self) -> dict:
        """Train (train/trainer.py ``fit``); -> the run's summary (also RUN_DIR/summary.json)."""
        return self.run.fit()

    def evaluate(self, n_batches: int | None = None) -> dict:
        """{"eval_loss"} over ``n_batches`` fixed validation batches (default eval_batches)."""
        return {"eval_loss": self.run.evaluate(n_batches)}

    def save_model(self, directory: str | Path, format: str = "myllm101") -> Path:
        """The trained model (and tokenizer) via api/auto.py ``save_pretrained``."""
        from myllm101.api.auto import save_pretrained

        tok = self.run.tokenizer if self.run.tokenizer is not None else None
        return save_pretrained(self.model.eval(), directory, tok, format)
