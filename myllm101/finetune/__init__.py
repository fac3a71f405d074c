"""Fine-tuning on top of the fast models: LoRA adapters (PEFT-compatible directories)."""

from myllm101.finetune.adapters import (
    apply_lora,
    base_model_hash,
    count_parameters,
    load_adapter,
    merge_lora,
    save_adapter,
    trainable_summary,
    unmerge_lora,
)

__all__ = [
    "apply_lora",
    "base_model_hash",
    "count_parameters",
    "load_adapter",
    "merge_lora",
    "save_adapter",
    "trainable_summary",
    "unmerge_lora",
]
