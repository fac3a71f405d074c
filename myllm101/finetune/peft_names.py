"""Our module names <-> the tensor keys PEFT writes in ``adapter_model.safetensors``.

PEFT wraps the transformers model twice (``PeftModel.base_model`` is a ``LoraModel`` whose
``.model`` is the transformers model), drops the adapter's name ("default") and keeps one Linear
per factor, so a LLaMA adapter on layer 0's query projection is stored as::

    base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight   (r, in)
    base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight   (out, r)
    ^ PeftModel + LoraModel  ^ LlamaForCausalLM's "model." (our names lack it; lm_head has none)

GPT-2: transformers' ``GPT2LMHeadModel`` keeps the blocks under ``transformer.`` with our module
names (``transformer.h.0.attn.c_attn``); its Conv1D stores weights (in, out), which PEFT marks with
``fan_in_fan_out`` in the config, while lora_A / lora_B keep the (r, in) / (out, r) shapes above.
Any other model type is written with our own names under the PEFT prefix: our loader reads it back,
PEFT cannot map it onto a transformers model.
"""

from __future__ import annotations

PEFT_PREFIX = "base_model.model."
# our name -> transformers' name: this prefix, except for modules that sit at the top (lm_head)
HF_PREFIX = {"llama": "model.", "gpt": "transformer."}
TOP_LEVEL = ("lm_head",)
FACTORS = ("lora_A", "lora_B")


def hf_module_name(model_type: str, name: str) -> str:
    """'layers.0.self_attn.q_proj' -> 'model.layers.0.self_attn.q_proj' (llama)."""
    prefix = HF_PREFIX.get(model_type, "")
    if name.split(".")[0] in TOP_LEVEL:
        return name
    return prefix + name


def our_module_name(model_type: str, hf_name: str) -> str:
    """The inverse of ``hf_module_name``; ValueError for a name outside our model's layout."""
    if hf_name.split(".")[0] in TOP_LEVEL:
        return hf_name
    prefix = HF_PREFIX.get(model_type, "")
    if not hf_name.startswith(prefix):
        raise ValueError(
            f"adapter key: expected a module under {prefix!r} for a {model_type} model, "
            f"got {hf_name!r}"
        )
    return hf_name[len(prefix) :]


def peft_key(model_type: str, name: str, factor: str) -> str:
    """('llama', 'layers.0.self_attn.q_proj', 'lora_A')
    -> 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'."""
    if factor not in FACTORS:
        raise ValueError(f"factor: expected one of {FACTORS}, got {factor!r}")
    return f"{PEFT_PREFIX}{hf_module_name(model_type, name)}.{factor}.weight"


def parse_peft_key(model_type: str, key: str) -> tuple[str, str]:
    """'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight' (llama)
    -> ('layers.0.self_attn.q_proj', 'lora_B'); ValueError for any other key."""
    parts = key.split(".")
    if (
        not key.startswith(PEFT_PREFIX)
        or len(parts) < 5
        or parts[-1] != "weight"
        or parts[-2] not in FACTORS
    ):
        raise ValueError(
            f"adapter key: expected '{PEFT_PREFIX}<module>.lora_A.weight' or '...lora_B.weight' "
            f"(a PEFT LoRA tensor), got {key!r}"
        )
    hf_name = ".".join(parts[2:-2])  # between the PEFT prefix and "<factor>.weight"
    return our_module_name(model_type, hf_name), parts[-2]
