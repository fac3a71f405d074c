"""A fine-tuned SmolLM2 for generation: its adapter (a finetune run's ``best/`` or a PEFT
directory) loaded onto a fresh base, merged, and the merged LoRA layers turned back into plain
``nn.Linear``s, so that the fast decoding path applies (``myllm101 generate --adapter``).
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from myllm101.finetune.best import INFO_FILE
from myllm101.finetune.run import qlora_skip


def resolve_adapter_dir(path: str | Path) -> Path:
    """An adapter directory: ``path`` itself, or a run directory's best/."""
    from myllm101.finetune.adapters import CONFIG_NAME

    path = Path(path)
    for cand in (path, path / "best"):
        if (cand / CONFIG_NAME).is_file():
            return cand
    raise FileNotFoundError(
        f"{path}: expected an adapter directory ({CONFIG_NAME}) or a finetune run directory "
        f"(best/{CONFIG_NAME}), found neither"
    )


def load_adapted_smollm2(adapter: str | Path, dtype: str = "fp32") -> tuple[nn.Module, object, str]:
    """(model, tokenizer, dtype used) for SmolLM2 with an adapter: a fresh float32 base (int8 for
    a qlora adapter, quantized as the run did), the adapter loaded onto it (the base hash is
    checked), then merged and cast to ``dtype`` ("fp32" | "bf16"); an int8 base keeps the
    adapter unmerged in float32."""
    from myllm101.finetune.adapters import CONFIG_NAME, WEIGHTS_NAME, load_adapter, merge_lora
    from myllm101.hub.smollm2 import DTYPES
    from myllm101.quant.eval import load_any
    from myllm101.train.checkpoint import MANIFEST, verify_checkpoint

    directory = resolve_adapter_dir(adapter)
    if (directory / MANIFEST).is_file():
        verify_checkpoint(directory, required=(CONFIG_NAME, WEIGHTS_NAME))
    info = {}
    if (directory / INFO_FILE).is_file():
        info = json.loads((directory / INFO_FILE).read_text())
    if info.get("task") == "classify":
        raise ValueError(f"{directory}: a classification adapter, expected one for generation")
    loaded = load_any("smollm2")
    model = loaded.model
    q = info.get("quantization")
    if q:
        from myllm101.quant.quantize import quantize

        quantize(model, q["scheme"], skip=q.get("skip") or qlora_skip(model))
    load_adapter(model, directory)
    if q:
        return model.eval(), loaded.tokenizer, f"{q['scheme']} base + float32 adapter (qlora)"
    merge_lora(model)
    plain_linears(model)
    return model.to(DTYPES[dtype]).eval(), loaded.tokenizer, dtype


def plain_linears(model: nn.Module) -> nn.Module:
    """Replace every merged LoRA layer by an ``nn.Linear`` holding its (merged) weight and bias,
    in place: the model is then the plain architecture again, and its fast decoding path (which
    casts activations to the weights' dtype only for plain Linears) applies."""
    from myllm101.finetune.adapters import lora_modules

    for name, layer in lora_modules(model).items():
        if not layer.merged:
            raise ValueError(f"{name}: expected a merged LoRA layer (merge_lora first)")
        linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                           device="meta")  # fmt: skip
        linear.weight = nn.Parameter(layer.weight.detach(), requires_grad=False)
        if layer.bias is not None:
            linear.bias = nn.Parameter(layer.bias.detach(), requires_grad=False)
        model.set_submodule(name, linear)
    return model
