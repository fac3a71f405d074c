"""Input checks of fine-tuning: PEFT-format LoRA adapter directories (finetune/adapters.py)
and fine-tuning runs (finetune/run.py, finetune/cli.py).

Pure Python, as myllm101/checks/__init__.py: no NumPy, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from myllm101.checks import expect_float, expect_in_range

# lora adapters: PEFT-format adapter directories (finetune/adapters.py)

# options a PEFT LoRA config may set that our LoRALinear does not implement -> the value we need
ADAPTER_UNSUPPORTED = {
    "use_dora": False,
    "use_rslora": False,  # scale alpha / sqrt(r) instead of alpha / r
    "bias": "none",
    "rank_pattern": {},
    "alpha_pattern": {},
    "modules_to_save": None,
    "lora_bias": False,  # a trainable bias on lora_B
    "use_qalora": False,
}


def check_adapter_config(cfg: Any, source: str) -> None:
    """A PEFT ``adapter_config.json`` (already parsed) that our LoRA can load: peft_type LORA,
    r an int >= 1, lora_alpha a number, lora_dropout in [0, 1), no option we do not implement."""
    if not isinstance(cfg, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(cfg).__name__}")
    if cfg.get("peft_type") != "LORA":
        raise ValueError(f"{source}: peft_type: expected 'LORA', got {cfg.get('peft_type')!r}")
    for key in ("r", "lora_alpha"):
        if key not in cfg:
            raise ValueError(f"{source}: expected the key {key!r}, it is missing")
    r, alpha = cfg["r"], cfg["lora_alpha"]
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"{source}: r: expected an int >= 1, got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise ValueError(f"{source}: lora_alpha: expected a finite number, got {alpha!r}")
    dropout = cfg.get("lora_dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
        raise ValueError(f"{source}: lora_dropout: expected a number in [0, 1), got {dropout!r}")
    expect_in_range(f"{source}: lora_dropout", dropout, 0.0, 1.0)
    for key, need in ADAPTER_UNSUPPORTED.items():
        got = cfg.get(key, need)
        if got != need and not (need is None and not got):
            raise ValueError(
                f"{source}: {key}: expected {need!r} (the only value our LoRA implements), "
                f"got {got!r}"
            )


def check_adapter_factors(factors: dict[str, set], source: str) -> None:
    """{module name: {"lora_A", "lora_B"}}: every adapted module has both factors, and one exists."""
    if not factors:
        raise ValueError(f"{source}: expected LoRA tensors (lora_A / lora_B), found none")
    for name, have in sorted(factors.items()):
        missing = sorted({"lora_A", "lora_B"} - set(have))
        if missing:
            raise ValueError(
                f"{source}: module {name!r}: expected lora_A and lora_B, {missing} missing"
            )


def check_adapter_tensor(key: str, t: Any, shape: Sequence[int], source: str) -> None:
    """One lora_A (r, in) / lora_B (out, r) tensor against the layer it adapts; a float dtype."""
    if tuple(t.shape) != tuple(shape):
        raise ValueError(
            f"{source}: {key}: expected shape {tuple(shape)} (r and this model's layer), "
            f"got {tuple(t.shape)}"
        )
    expect_float(f"{source}: {key}", t)


# ----------------------------------------------------------------------------------------------
# fine-tuning runs (finetune/run.py, finetune/cli.py)

FINETUNE_TASKS = ("sft", "classify")
FINETUNE_METHODS = ("full", "lora", "qlora")
# the validation metric early stopping watches, per task (the first is the default)
FINETUNE_METRICS = {"sft": ("loss",), "classify": ("macro_f1", "accuracy", "loss")}
# which model types can do which task: sft needs a causal LM, classify BERT's "cls" head
FINETUNE_MODEL_TYPES = {"sft": ("llama", "gpt"), "classify": ("bert",)}


def check_finetune_options(
    task: str,
    method: str,
    metric: str | None,
    lr: float,
    batch_size: int,
    epochs: int,
    eval_every: int,
    patience: int,
) -> str:
    """Valid task / method / metric and positive numbers, else a ValueError naming the option;
    returns the metric (the task's default when ``metric`` is None)."""
    if task not in FINETUNE_TASKS:
        raise ValueError(f"task: expected one of {list(FINETUNE_TASKS)}, got {task!r}")
    if method not in FINETUNE_METHODS:
        raise ValueError(f"method: expected one of {list(FINETUNE_METHODS)}, got {method!r}")
    allowed = FINETUNE_METRICS[task]
    if metric is None:
        metric = allowed[0]
    if metric not in allowed:
        raise ValueError(f"metric: expected one of {list(allowed)} for task {task}, got {metric!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr: expected a finite number > 0, got {lr!r}")
    for name, v in (("batch_size", batch_size), ("epochs", epochs), ("eval_every", eval_every),
                    ("patience", patience)):  # fmt: skip
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    return metric


def check_finetune_base(model_type: str, task: str, base: str) -> None:
    """A model that can do ``task`` (a causal LM for sft, BERT for classify), else a ValueError
    naming the base, its type and the types that would do."""
    want = FINETUNE_MODEL_TYPES[task]
    if model_type not in want:
        raise ValueError(
            f"base {base!r}: task {task} expects a {' or '.join(want)} model, got a "
            f"{model_type} model"
            + (" (sft needs a causal LM: try --base smollm2)" if task == "sft" else "")
            + (" (classify needs BERT's cls head: try --base minilm)" if task == "classify" else "")
        )
