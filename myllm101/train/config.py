"""TrainConfig: every knob of a training run, from a JSON file plus ``--key=value`` overrides.

    cfg = TrainConfig.from_file("configs/gpt-shakespeare.json", ["--lr=3e-4", "--model.n_layer=4"])

Values in overrides are parsed as JSON when they can be (``3e-4``, ``true``, ``[1, 2]``) and kept
as strings otherwise. ``model`` is a dict: a model config with ``model_type`` (see
myllm101/config.py), or ``{"preset": "gpt-tiny", ...overrides}``; ``vocab_size`` may be left out
and is then taken from the tokenizer. Bad values raise a ValueError naming the key, what was
expected and what was given.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHOICES = {
    "schedule": ("cosine", "linear", "constant"),
    "dtype": ("auto", "float32", "float64", "bf16", "fp16"),
    "device": ("auto", "cpu", "cuda"),
    "sampler": ("random", "sequential"),
    "distributed": ("ddp", "fsdp"),
}


@dataclass
class TrainConfig:
    # where
    out_dir: str = "runs/gpt-shakespeare"
    # out_dir holds a run already: move it aside to OUT_DIR.replaced-<time> (never deleted) and
    # start over; without it (or resume) such a run is refused (train/rundir.py)
    overwrite: bool = False
    data_dir: str = "data/shakespeare"  # {train,val}.txt
    tokenizer: str = "runs/tok-shakespeare-4k"  # a tokenizer directory or gpt2/cl100k_base/...
    tokens_dir: str = ""  # token-file cache; "" = <tokenizer dir>/tokens
    model: dict = field(default_factory=lambda: {"preset": "gpt-tiny"})
    # batches
    seq_len: int = 128
    batch_size: int = 16  # per process, per micro-step
    grad_accum_steps: int = 1
    sampler: str = "random"
    mlm_probability: float = 0.15  # BERT only
    bucket_by_length: bool = False  # BERT only
    # optimisation
    max_steps: int = 1000
    max_time_s: float = 0.0  # stop (and save) after this many seconds; 0 = no limit
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    schedule: str = "cosine"
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # global-norm clipping; 0 = off
    # numerics and speed
    dtype: str = "auto"  # auto: bf16 autocast where bf16 is native (device.py), else float32 on
    # CPU, fp16 + GradScaler on a GPU without bf16
    device: str = "auto"
    compile: bool = False
    gradient_checkpointing: bool = False
    num_threads: int = 0  # torch intra-op threads; 0 = torch's default
    distributed: str = "ddp"  # under torchrun: DDP, or FSDP
    # evaluation, checkpoints, logging
    eval_interval: int = 200
    eval_batches: int = 20
    early_stopping_patience: int = 0  # evals without a new best val loss before stopping; 0 = off
    save_interval: int = 500
    keep_last: int = 2
    max_bad_steps: int = 10  # non-finite losses tolerated (each step skipped) before stopping
    # a train or val loss above this means the run diverged (see trainer.py); None = the default
    # 2 * ln(vocab_size) + 5: twice the loss of a uniform guess, plus 5 nats
    divergence_loss: float | None = None
    log_interval: int = 10
    progress: bool = True
    seed: int = 1337
    sample_prompt: str = "\n"
    sample_tokens: int = 200

    # ---- construction ----
    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            kind = f.type.removesuffix(" | None")  # optional fields may be None (null in JSON)
            if v is None and kind != f.type:
                continue
            want = {"int": int, "float": (int, float), "bool": bool, "str": str, "dict": dict}[kind]
            if isinstance(v, bool) and kind in ("int", "float"):
                raise ValueError(f"{f.name}: expected {f.type}, got bool {v!r}")
            if not isinstance(v, want):
                raise ValueError(f"{f.name}: expected {f.type}, got {type(v).__name__} {v!r}")
        for name, options in CHOICES.items():
            if getattr(self, name) not in options:
                raise ValueError(f"{name}: expected one of {options}, got {getattr(self, name)!r}")
        for name in ("seq_len", "batch_size", "grad_accum_steps", "max_steps", "eval_batches",
                     "save_interval", "keep_last", "log_interval", "eval_interval"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: expected a positive int, got {getattr(self, name)}")
        for name in ("max_time_s", "lr", "min_lr", "weight_decay", "grad_clip", "warmup_steps",
                     "early_stopping_patience", "max_bad_steps", "num_threads", "sample_tokens"):  # fmt: skip
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{name}: expected a finite value >= 0, got {v}")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr: expected <= lr={self.lr}, got {self.min_lr}")
        for name in ("beta1", "beta2", "mlm_probability"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name}: expected a value in [0, 1), got {v}")
        if not self.eps > 0:
            raise ValueError(f"eps: expected a positive value, got {self.eps}")
        d = self.divergence_loss
        if d is not None and not (d > 0 and math.isfinite(d)):
            raise ValueError(f"divergence_loss: expected a finite value > 0 or null, got {d}")
        if "preset" not in self.model and "model_type" not in self.model:
            raise ValueError(
                f"model: expected a 'model_type' or a 'preset' key, got keys {sorted(self.model)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in known:
                near = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ValueError(f"unknown train config key {key!r}{hint}; expected one of {known}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path | None, overrides=()) -> TrainConfig:
        d = {}
        if path is not None:
            try:
                d = json.loads(Path(path).read_text())
            except FileNotFoundError:
                raise ValueError(
                    f"--config: expected an existing JSON file, got {str(path)!r}"
                ) from None
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{path}: expected a JSON object, got a parse error: {e}"
                ) from None
            if not isinstance(d, dict):
                raise ValueError(f"{path}: expected a JSON object, got {type(d).__name__}")
        return cls.from_dict(apply_overrides(d, overrides))


def parse_value(text: str):
    """'3e-4' -> 0.0003, 'true' -> True, '[1, 2]' -> [1, 2], 'runs/x' -> 'runs/x'."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(d: dict, overrides) -> dict:
    """['--lr=3e-4', '--model.n_layer=4'] applied to a copy of ``d`` (dots reach into dicts)."""
    d = json.loads(json.dumps(d))  # deep copy
    for item in overrides:
        if not item.startswith("--") or "=" not in item:
            raise ValueError(f"override: expected --key=value, got {item!r}")
        key, value = item[2:].split("=", 1)
        *parents, last = key.replace("-", "_").split(".")
        node = d
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a dict")
        node[last] = parse_value(value)
    return d
