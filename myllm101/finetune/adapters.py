"""LoRA on any of our models, and adapters saved / loaded in PEFT's directory format.

    model = apply_lora(model, targets=["q_proj", "v_proj"], r=8, alpha=16, dropout=0.05)
    print(trainable_summary(model))   # trainable params: 73,728 || all params: ... || trainable%: ...
    ... train: only the lora_A / lora_B parameters have requires_grad ...
    save_adapter(model, "runs/my-adapter", base_name="HuggingFaceTB/SmolLM2-135M-Instruct")
    model2 = load_adapter(fresh_base_model, "runs/my-adapter")   # refuses another base model
    merge_lora(model2)                                           # W + (alpha/r) B A: one GEMM each

``apply_lora`` swaps each matching linear layer (``nn.Linear``, our ``Linear``, or an int8
``Int8Linear`` base, QLoRA-style) for a ``LoRALinear`` / ``Int8LoRALinear`` (fast/lora.py) that
shares the frozen base weight, and freezes every other parameter. The model's state_dict keeps its
base names (``layers.0.self_attn.q_proj.weight``) and gains ``...q_proj.lora_A`` / ``lora_B``.

The adapter directory is what PEFT writes: ``adapter_config.json`` (peft_type LORA, r, lora_alpha,
lora_dropout, target_modules, ...) and ``adapter_model.safetensors`` with PEFT's keys
(finetune/peft_names.py). So ``PeftModel.from_pretrained(LlamaForCausalLM..., dir)`` loads an
adapter trained here, and ``load_adapter`` loads one PEFT made. Under a key of our own,
``"myllm101": {"base_name", "base_hash", "model_type"}``, the config records which base the adapter
was trained on; PEFT ignores it, and ``load_adapter`` refuses a model whose hash differs.

The base hash (``base_model_hash``) is the SHA-256 of the model's state_dict without the LoRA
factors: for each key in sorted order, the line ``"{key} {dtype} {shape}\\n"`` and then the
tensor's raw bytes (C order); a key whose tensor is an earlier key's (a tied head) adds
``"{key} = {earlier key}\\n"`` instead of its bytes again, and an int8 base's ``base_layer.`` is
dropped from its keys, so a model hashes alike before and after ``apply_lora``. It covers dtypes:
the same weights in bf16 are another base. Cost: one pass over the weights (SmolLM2-135M in
float32, 0.5 GB: about a second). It is taken once, when ``apply_lora`` runs, so merging (which
rewrites the base weights) does not change the identity an adapter is saved with.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from myllm101.checks.finetune import (
    check_adapter_config,
    check_adapter_factors,
    check_adapter_tensor,
)
from myllm101.fast.int8 import Int8Linear
from myllm101.fast.lora import Int8LoRALinear, LoRALinear
from myllm101.finetune.peft_names import parse_peft_key, peft_key

CONFIG_NAME, WEIGHTS_NAME = "adapter_config.json", "adapter_model.safetensors"
OUR_KEY = "myllm101"  # our own entry in adapter_config.json (PEFT ignores unknown keys)
# PEFT's defaults for these architectures (its TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING)
DEFAULT_TARGETS = {"llama": ("q_proj", "v_proj"), "gpt": ("c_attn",)}
BASE_LAYER = "base_layer."  # an Int8LoRALinear's base module

Targets = Sequence[str] | Callable[[str, nn.Module], bool] | None


# ----------------------------------------------------------------------------------------------
# apply, count, merge


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    """{module name: LoRALinear} of every adapted layer, in model order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def model_type_of(model: nn.Module) -> str:
    """ "llama", "gpt", "bert": the ``model_type`` of the model's config."""
    cfg = getattr(model, "cfg", None)
    kind = getattr(cfg, "model_type", None)
    if not isinstance(kind, str):
        raise ValueError(
            f"model: expected one of our models (with .cfg.model_type), got {type(model).__name__}"
        )
    return kind


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, Int8Linear))


def _matcher(model: nn.Module, targets: Targets) -> Callable[[str, nn.Module], bool]:
    """targets -> predicate(name, module). A string matches a module named exactly so or ending
    in "." + it (PEFT's rule: "q_proj" matches every layers.{i}.self_attn.q_proj)."""
    if callable(targets):
        return targets
    if targets is None:
        kind = model_type_of(model)
        if kind not in DEFAULT_TARGETS:
            raise ValueError(
                f"targets: {kind} models have no default LoRA targets "
                f"(defaults exist for {sorted(DEFAULT_TARGETS)}); pass targets=[...]"
            )
        targets = DEFAULT_TARGETS[kind]
    if isinstance(targets, str) or not all(isinstance(t, str) for t in targets) or not targets:
        raise ValueError(
            f"targets: expected a non-empty list of module names or a predicate, got {targets!r}"
        )
    names = tuple(targets)
    return lambda name, _: any(name == t or name.endswith("." + t) for t in names)


def _select(model: nn.Module, targets: Targets) -> list[str]:
    """Names of the linear layers ``targets`` picks; clear errors for non-linear or no matches."""
    match = _matcher(model, targets)
    chosen, linear_names = [], []
    for name, module in model.named_modules():
        if not name or isinstance(module, LoRALinear) or name.split(".")[-1] == BASE_LAYER[:-1]:
            continue
        if _is_linear(module):
            linear_names.append(name)
        if match(name, module):
            if not _is_linear(module):
                raise ValueError(
                    f"targets: {name!r} is a {type(module).__name__}, expected a linear layer "
                    f"(nn.Linear or Int8Linear)"
                )
            chosen.append(name)
    if not chosen:
        kinds = sorted({n.split(".")[-1] for n in linear_names})
        raise ValueError(f"targets: expected names of linear layers {kinds}, matched none")
    _refuse_tied(model, chosen)
    return chosen


def _refuse_tied(model: nn.Module, chosen: list[str]) -> None:
    """A tied weight (lm_head = embed_tokens) would be rewritten for both uses by a merge."""
    owners: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), []).append(name)
    for name in chosen:
        w = getattr(model.get_submodule(name), "weight", None)
        if w is not None and len(owners.get(id(w), [])) > 1:
            raise ValueError(
                f"targets: {name}.weight is tied to {[n for n in owners[id(w)]]}: LoRA on a tied "
                f"layer is not supported (a merge would change every use of it)"
            )


def apply_lora(
    model: nn.Module,
    targets: Targets = None,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.05,
    base_name: str | None = None,
    verbose: bool = False,
) -> nn.Module:
    """Replace the matching linear layers by LoRA layers (in place) and freeze everything else.

    targets: module names ("q_proj" matches every layer's q_proj; see ``_matcher``), a predicate
        ``(name, module) -> bool``, or None for PEFT's default of the model type (LLaMA q_proj,
        v_proj; GPT-2 attn.c_attn).
    base_name: what the base is called, saved with the adapter (e.g. a Hub id); the base's hash
        is taken now (module docstring). Returns ``model``.
    """
    if lora_modules(model):
        raise ValueError(
            f"model: expected a model without LoRA layers, got one with "
            f"{len(lora_modules(model))}; load_adapter or merge into a fresh model instead"
        )
    chosen = _select(model, targets)
    identity = {"base_name": base_name, "base_hash": base_model_hash(model)}
    _wrap(model, chosen, r, alpha, dropout)
    model.lora_base_identity = identity
    if verbose:
        print(trainable_summary(model))
    return model


def _wrap(model: nn.Module, names: list[str], r: int, alpha: float, dropout: float) -> None:
    for p in model.parameters():
        p.requires_grad_(False)  # the base is frozen; only the new lora_A / lora_B train
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layer = getattr(parent, attr)
        cls = Int8LoRALinear if isinstance(layer, Int8Linear) else LoRALinear
        # a new module starts in train mode: follow the layer it replaces (an eval model stays so)
        setattr(parent, attr, cls(layer, r, alpha, dropout).train(layer.training))


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) numbers of weights; a tied Parameter counts once, and an int8 base's
    weight (a buffer) counts in the total as the weight it stands for."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    total += sum(m.weight_q.numel() for m in model.modules() if isinstance(m, Int8Linear))
    return trainable, total


def trainable_summary(model: nn.Module) -> str:
    """'trainable params: 1,024 || all params: 52,096 || trainable%: 1.9656' (PEFT's wording)."""
    trainable, total = count_parameters(model)
    pct = 100.0 * trainable / max(total, 1)
    return f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {pct:.4f}"


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (inference: one GEMM per layer). Int8 bases refuse."""
    for layer in _require_lora(model).values():
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Take every adapter back out of its base weight (to keep training, or to save the base)."""
    for layer in _require_lora(model).values():
        layer.unmerge()
    return model


def _require_lora(model: nn.Module) -> dict[str, LoRALinear]:
    layers = lora_modules(model)
    if not layers:
        raise ValueError("model: expected LoRA layers (apply_lora or load_adapter first), got none")
    return layers


# ----------------------------------------------------------------------------------------------
# the base's identity


def base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict without LoRA factors, under the names it had before ``apply_lora``."""
    out = {}
    for key, t in model.state_dict().items():
        if key.endswith(("lora_A", "lora_B")):
            continue
        out[key.replace("." + BASE_LAYER, ".")] = t
    return out


def base_model_hash(model: nn.Module) -> str:
    """'sha256:<hex>' of the base state, as the module docstring spells out."""
    h = hashlib.sha256()
    seen: dict[tuple, str] = {}
    for key, t in sorted(base_state(model).items()):
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if t.numel() and ident in seen:
            h.update(f"{key} = {seen[ident]}\n".encode())
            continue
        seen[ident] = key
        dtype = str(t.dtype).removeprefix("torch.")
        h.update(f"{key} {dtype} {tuple(t.shape)}\n".encode())
        raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)  # any dtype as bytes
        h.update(raw.numpy().data)
    return "sha256:" + h.hexdigest()


def _identity(model: nn.Module) -> dict:
    """The identity recorded by apply_lora, else the hash of the model as it is now."""
    ident = getattr(model, "lora_base_identity", None)
    return ident if ident is not None else {"base_name": None, "base_hash": base_model_hash(model)}


# ----------------------------------------------------------------------------------------------
# save / load


def _uniform(layers: dict[str, LoRALinear], attr: str):
    values = {getattr(m, attr) for m in layers.values()}
    if len(values) != 1:
        raise ValueError(f"model: expected one {attr} for every LoRA layer, got {sorted(values)}")
    return values.pop()


def _target_modules(model: nn.Module, names: list[str]) -> list[str]:
    """PEFT's target_modules: the short names ("q_proj") when they pick exactly these layers, else
    the full transformers module names (so PEFT adapts no layer we did not)."""
    from myllm101.finetune.peft_names import hf_module_name

    short = sorted({n.split(".")[-1] for n in names})
    every = {
        n
        for n, m in model.named_modules()
        if n.split(".")[-1] in short and (isinstance(m, LoRALinear) or _is_linear(m))
    }
    if every == set(names):
        return short
    return sorted(hf_module_name(model_type_of(model), n) for n in names)


def save_adapter(model: nn.Module, directory: str | Path, base_name: str | None = None) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (PEFT's format) to
    ``directory`` (created); the base identity goes under "myllm101". Returns the directory."""
    layers = _require_lora(model)
    kind = model_type_of(model)
    ident = dict(_identity(model))
    if base_name is not None:
        ident["base_name"] = base_name
    tensors = {}
    for name, layer in layers.items():
        for factor in ("lora_A", "lora_B"):
            tensors[peft_key(kind, name, factor)] = (
                getattr(layer, factor).detach().cpu().contiguous()
            )
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": ident["base_name"],
        "r": _uniform(layers, "r"),
        "lora_alpha": _uniform(layers, "alpha"),
        "lora_dropout": _uniform(layers, "dropout_p"),
        "target_modules": _target_modules(model, list(layers)),
        "bias": "none",
        "fan_in_fan_out": kind == "gpt",  # transformers' GPT-2 Conv1D stores (in, out)
        "inference_mode": True,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        OUR_KEY: {**ident, "model_type": kind},
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, directory / WEIGHTS_NAME, metadata={"format": "pt"})
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def read_adapter(directory: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, tensors) of an adapter directory, each checked; ValueErrors name the file."""
    directory = Path(directory)
    cfg_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (cfg_path, weights_path):
        if not path.is_file():
            raise ValueError(f"adapter: expected the file {path}, it does not exist")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_path}: expected JSON, could not parse it ({e})") from e
    check_adapter_config(config, str(cfg_path))
    try:
        tensors = load_file(weights_path)
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError, ...)
        raise ValueError(f"{weights_path}: not a readable safetensors file ({e})") from e
    return config, tensors


def load_adapter(
    model: nn.Module,
    directory: str | Path,
    base_name: str | None = None,
    check_base: bool = True,
) -> nn.Module:
    """Load an adapter directory (ours or PEFT's) onto ``model``, in place; returns it.

    A model without LoRA layers gets them (``apply_lora`` on exactly the modules the file has,
    with its r, lora_alpha, lora_dropout); one with LoRA layers must have the same ones, unmerged.
    check_base: refuse when the adapter's recorded base hash (or ``base_name``, when both are
    given) is not this model's. An adapter from PEFT records no base: nothing to compare.
    """
    config, tensors = read_adapter(directory)
    source = str(Path(directory) / WEIGHTS_NAME)
    kind = model_type_of(model)
    ours = config.get(OUR_KEY) or {}
    if ours.get("model_type", kind) != kind:
        raise ValueError(
            f"{directory}: this adapter is for a {ours['model_type']} model, got a {kind} model"
        )
    layers = lora_modules(model)
    ident = _identity(model)
    if check_base and ours:
        _check_identity(directory, ours, ident, base_name)

    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        name, factor = parse_peft_key(kind, key)
        factors.setdefault(name, {})[factor] = t
    check_adapter_factors({n: set(f) for n, f in factors.items()}, source)
    r, alpha = config["r"], config["lora_alpha"]
    dropout = config.get("lora_dropout", 0.0)
    for name in factors:  # shapes against the model before anything changes
        base = _base_of(model, name, layers)
        shapes = {"lora_A": (r, base.in_features), "lora_B": (base.out_features, r)}
        if name in layers and layers[name].r != r:
            raise ValueError(
                f"{source}: r = {r}, but the model's LoRA layer {name!r} has r = {layers[name].r}"
            )
        for factor, t in factors[name].items():
            check_adapter_tensor(peft_key(kind, name, factor), t, shapes[factor], source)

    if not layers:
        chosen = _select(model, lambda n, _: n in factors)
        same_base = ours.get("base_hash") == ident["base_hash"]
        name = base_name or ident["base_name"] or (ours.get("base_name") if same_base else None)
        model.lora_base_identity = {**ident, "base_name": name}
        _wrap(model, chosen, r, alpha, dropout)
        layers = lora_modules(model)
    elif set(layers) != set(factors) or any(m.merged for m in layers.values()):
        raise ValueError(
            f"{directory}: expected the model's LoRA layers to be unmerged and the adapter's "
            f"{sorted(factors)}, got {sorted(layers)} (merged: "
            f"{sorted(n for n, m in layers.items() if m.merged)})"
        )
    with torch.no_grad():
        for name, layer in layers.items():
            for factor, t in factors[name].items():
                getattr(layer, factor).copy_(t)  # cast to the layer's dtype and device
            layer.alpha, layer.scale = alpha, alpha / r
    return model


def _base_of(model: nn.Module, name: str, layers: dict[str, LoRALinear]) -> nn.Module:
    """The layer an adapter key names: an existing LoRA layer, or a plain linear one."""
    if name in layers:
        return layers[name]
    try:
        module = model.get_submodule(name)
    except AttributeError:
        module = None
    if module is None or not _is_linear(module):
        raise ValueError(
            f"adapter: it has weights for the module {name!r}, which this model does not have "
            f"as a linear layer"
        )
    return module


def _check_identity(directory, ours: dict, ident: dict, base_name: str | None) -> None:
    """Refuse an adapter recorded for another base (hash, or name when both names are known)."""
    want_hash, want_name = ours.get("base_hash"), ours.get("base_name")
    have_name = base_name if base_name is not None else ident.get("base_name")
    if want_name is not None and have_name is not None and want_name != have_name:
        raise ValueError(
            f"{directory}: this adapter was made for the base model {want_name!r}, got "
            f"{have_name!r} (check_base=False loads it anyway)"
        )
    if want_hash is not None and want_hash != ident["base_hash"]:
        raise ValueError(
            f"{directory}: this adapter was made for the base model {want_name!r} with hash "
            f"{want_hash[:23]}..., but this model's weights hash to {ident['base_hash'][:23]}...: "
            f"another base (or the same one in another dtype); refusing to load it "
            f"(check_base=False loads it anyway)"
        )
