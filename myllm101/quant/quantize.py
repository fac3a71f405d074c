"""Quantize a whole model: every ``nn.Linear`` (but the skipped ones) becomes a quantized module.

    quantize(model, "int4-g64")                                   # in place, returns model
    quantize(model, "gptq-int4-g64", calibration=batches)         # batches: [(B, T) ids, ...]
    save_quantized(model, "q4", cfg, tokenizer, base="smollm2")   # a model directory

Schemes (``SCHEMES``):

| scheme          | module (fast/)                  | weight stored as                   | activations    |
|-----------------|---------------------------------|------------------------------------|----------------|
| int8            | Int8Linear(mode="weight_only")  | int8, one scale per output row     | float          |
| w8a8            | Int8Linear(mode="w8a8")         | int8, one scale per output row     | int8 per token |
| int4-g{32,64,128}      | Int4Linear, round-to-nearest | int4 (2 per byte), one scale per group of g inputs | float |
| gptq-int4-g{32,64,128} | Int4Linear from gptq_quantize | the same format, rounding errors compensated (GPTQ) | float |

GPTQ needs calibration inputs (``heldout.calibration_batches``: fixed, seeded token windows of the
corpus' train split). Its Hessians are collected block by block: the Linears of one parent module
(one transformer layer's attention, then its MLP, ...) see the inputs that the model, already
quantized up to there, gives them, as in the GPTQ paper's sequential scheme; one forward pass over
the calibration batches per group.

Skip: ``skip`` holds module names or glob patterns (``fnmatch``: "layers.0.*", "*.down_proj");
a Linear is skipped when its qualified name matches one. The default (``default_skip``) is none for
the 8-bit schemes and ("lm_head",) for int4. An 8-bit LM head tied to its token embedding
(SmolLM2, GPT-2, BERT's MLM decoder) is quantized per output row, which is per token row of the
table, so the embedding becomes an ``Int8Embedding`` sharing the head's codes and scales: one int8
copy, as the float model keeps one Parameter. On SmolLM2 this costs +0.24% / +0.55% perplexity
(Shakespeare / stdlib) against +0.16% / +0.35% with the head in float, and a float32 head is
41% of an int8 model's decode time (a 113 MB GEMV per token). int4 keeps the head in float by
default: it is the layer whose error reaches the logits undamped. A tied Linear is not quantized
to int4 at all (the table would then be stored twice), nor one tied to anything but one Embedding.
A pattern of your own that matches no Linear is an error (a typo would silently quantize
everything).

Checkpoint: ``config.json`` gets ``"quantization": {"scheme", "skip", "group_size", "modules",
"base"}`` (plus ``"tied": {embedding: head}`` where an embedding shares a head's codes);
``model.safetensors`` holds each quantized module's integer buffers and scales under its own name
(``weight_q``/``weight_scale`` for int8, ``weight_packed``/``weight_scale`` for int4, plus
``bias``). ``train.checkpoint.load_model`` builds the float skeleton from the config, puts empty
quantized modules of the right shapes at the listed names (``prepare_quantized``), then loads the
weights strictly; tensors of another shape or dtype are refused with a message naming them.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from myllm101.checks.quant import check_quantization_entry, check_skip_patterns

INT4_GROUPS = (32, 64, 128)
SCHEMES = (
    "int8",
    "w8a8",
    *(f"int4-g{g}" for g in INT4_GROUPS),
    *(f"gptq-int4-g{g}" for g in INT4_GROUPS),
)
DEFAULT_SKIP = ("lm_head",)  # int4's default (default_skip)
_INT4 = re.compile(r"(gptq-)?int4-g(\d+)")


@dataclass(frozen=True)
class Scheme:
    """A parsed scheme name: bits 8 or 4, the int8 mode, the int4 group size, GPTQ or not."""

    name: str
    bits: int
    mode: str = "weight_only"  # int8: "weight_only" | "w8a8"
    group_size: int | None = None  # int4 only
    gptq: bool = False

    @property
    def needs_calibration(self) -> bool:
        return self.gptq


def parse_scheme(name: str) -> Scheme:
    """ "int8" | "w8a8" | "int4-gN" | "gptq-int4-gN" (N in 32, 64, 128) -> Scheme; else ValueError."""
    if name == "int8":
        return Scheme(name, 8)
    if name == "w8a8":
        return Scheme(name, 8, mode="w8a8")
    m = _INT4.fullmatch(name) if isinstance(name, str) else None
    if m is None or int(m.group(2)) not in INT4_GROUPS:
        raise ValueError(f"scheme: expected one of {', '.join(SCHEMES)}, got {name!r}")
    return Scheme(name, 4, group_size=int(m.group(2)), gptq=m.group(1) is not None)


# ---- which modules ------------------------------------------------------------------------------


def default_skip(scheme: str) -> tuple[str, ...]:
    """``quantize``'s default ``skip`` for ``scheme``: () for int8 and w8a8, ("lm_head",) for int4
    (see the module docstring)."""
    return () if parse_scheme(scheme).bits == 8 else DEFAULT_SKIP


def _param_owners(model: nn.Module) -> dict[int, list[tuple[str, nn.Module]]]:
    """id(Parameter) -> [(module name, module), ...] of every module registering it as its own."""
    owners: dict[int, list[tuple[str, nn.Module]]] = {}
    for mod_name, mod in model.named_modules(remove_duplicate=False):
        for p in mod.parameters(recurse=False):
            owners.setdefault(id(p), []).append((mod_name, mod))
    return owners


def _tied_linears(model: nn.Module) -> dict[str, str | None]:
    """{name of a Linear whose weight Parameter another module also registers: the name of that
    module when it is exactly one Embedding, else None}."""
    owners = _param_owners(model)
    tied = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        others = [(n, m) for n, m in owners.get(id(mod.weight), ()) if m is not mod]
        if others:
            one_table = len(others) == 1 and isinstance(others[0][1], nn.Embedding)
            tied[name] = others[0][0] if one_table else None
    return tied


def linear_names(
    model: nn.Module, skip: Sequence[str] = DEFAULT_SKIP, with_tied: bool = False
) -> list[str]:
    """Qualified names of the Linears ``quantize`` replaces (model order): every ``nn.Linear``
    (our fast Linear is one) whose name matches no ``skip`` pattern and whose weight is not tied;
    ``with_tied``: a Linear tied to exactly one Embedding counts too (8-bit schemes)."""
    skip = check_skip_patterns(skip)
    tied = _tied_linears(model)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    for pattern in skip:
        if pattern not in DEFAULT_SKIP and not any(_matches(n, pattern) for n in linears):
            raise ValueError(
                f"skip: pattern {pattern!r} matches no Linear module; expected a name or glob "
                f"such as {linears[0] if linears else 'lm_head'!r} (the model has {len(linears)})"
            )
    kept = [n for n in linears if not any(_matches(n, p) for p in skip)]
    return [n for n in kept if n not in tied or (with_tied and tied[n] is not None)]


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or fnmatch.fnmatchcase(name, pattern)


# ---- building the quantized modules -------------------------------------------------------------


def _int4_linear_class():
    try:
        from myllm101.fast.int4 import Int4Linear
    except ImportError as e:  # fast/int4.py is its own issue; say so rather than a bare traceback
        raise ValueError(f"int4 schemes need myllm101.fast.int4.Int4Linear ({e})") from None
    return Int4Linear


@torch.no_grad()
def quantized_module(scheme: Scheme, linear: nn.Linear, H: torch.Tensor | None = None) -> nn.Module:
    """The quantized twin of one trained Linear (H: its GPTQ Hessian (in, in))."""
    from myllm101.fast.int8 import Int8Linear

    if scheme.bits == 8:
        return Int8Linear.from_linear(linear, mode=scheme.mode)
    Int4Linear = _int4_linear_class()
    if not scheme.gptq:
        return Int4Linear.from_linear(linear, group_size=scheme.group_size)
    from myllm101.fast.gptq import gptq_quantize

    w = linear.weight.detach()
    q, scale = gptq_quantize(w.float(), H.float(), scheme.group_size)
    bias = None if linear.bias is None else linear.bias.detach().clone()
    return Int4Linear.from_quantized(q, scale.to(w.dtype), scheme.group_size, bias)


def empty_quantized_module(
    scheme: Scheme, out_features: int, in_features: int, bias: bool, dtype=torch.float32
) -> nn.Module:
    """A quantized module of the right buffer shapes and dtypes, values to be loaded."""
    from myllm101.fast.int8 import Int8Linear

    b = torch.zeros(out_features, dtype=dtype) if bias else None
    if scheme.bits == 8:
        q = torch.zeros(out_features, in_features, dtype=torch.int8)
        return Int8Linear(q, torch.ones(out_features, dtype=dtype), b, mode=scheme.mode)
    q = torch.zeros(out_features, in_features, dtype=torch.int8)
    scale = torch.ones(out_features, in_features // scheme.group_size, dtype=dtype)
    return _int4_linear_class().from_quantized(q, scale, scheme.group_size, b)


def _group_by_parent(names: list[str]) -> list[list[str]]:
    """["a.q", "a.k", "b.up"] -> [["a.q", "a.k"], ["b.up"]] (model order kept)."""
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(n.rpartition(".")[0], []).append(n)
    return list(groups.values())


def quantize(
    model: nn.Module,
    scheme: str,
    skip: Sequence[str] | None = None,
    calibration: list[torch.Tensor] | None = None,
    progress: bool = False,
) -> nn.Module:
    """Replace every Linear of ``model`` not matched by ``skip`` with its quantized twin, in place;
    returns ``model``, with ``model.quantization`` (the config.json entry) set.

    skip: Linear names or glob patterns kept in float; None: ``default_skip(scheme)``.
    calibration: GPTQ schemes only, a list of (B, T) LongTensors fed through the model.
    """
    from tqdm import tqdm

    s = parse_scheme(scheme)
    if getattr(model, "quantization", None):
        raise ValueError(
            f"model: already quantized ({model.quantization['scheme']}); expected a float model"
        )
    skip = default_skip(s.name) if skip is None else skip
    names = linear_names(model, skip, with_tied=s.bits == 8)
    ties = {n: e for n, e in _tied_linears(model).items() if n in names}  # head -> embedding
    if not names:
        raise ValueError(
            "model: expected at least one Linear to quantize, found none (all skipped?)"
        )
    for n in names:  # shapes checked up front: nothing is half-replaced by a bad group size
        lin = model.get_submodule(n)
        if s.bits == 4 and (lin.in_features % s.group_size or s.group_size % 2):
            raise ValueError(
                f"{n}: in_features={lin.in_features} is not a multiple of group_size="
                f"{s.group_size} (scheme {s.name}); skip it or pick another group size"
            )
    if s.gptq:
        _check_calibration(calibration, s.name)
    model.eval()
    groups = _group_by_parent(names) if s.gptq else [[n] for n in names]
    bar = tqdm(total=len(names), desc=f"quantize {s.name}", unit="linear", disable=not progress)
    for group in groups:
        hessians = _hessians(model, calibration, group) if s.gptq else {}
        for n in group:
            lin = model.get_submodule(n)
            q = quantized_module(s, lin, hessians.get(n)).to(lin.weight.device)
            model.set_submodule(n, q)
            bar.update(1)
    bar.close()
    _tie_embeddings(model, {e: n for n, e in ties.items()})
    model.quantization = {
        "scheme": s.name,
        "skip": list(skip),
        "group_size": s.group_size,
        "modules": names,
    }
    if ties:
        model.quantization["tied"] = {e: n for n, e in ties.items()}
    return model


def _tie_embeddings(model: nn.Module, tied: dict[str, str]) -> None:
    """Each embedding named in ``tied`` ({embedding: quantized head}) becomes an Int8Embedding
    reading its head's codes and scales."""
    from myllm101.fast.int8 import Int8Embedding

    for emb, head in tied.items():
        model.set_submodule(emb, Int8Embedding.tied_to(model.get_submodule(head)))


def _check_calibration(calibration, scheme: str) -> None:
    if not calibration:
        raise ValueError(
            f"scheme {scheme}: expected calibration batches (a list of (B, T) token id tensors, "
            f"e.g. myllm101.quant.heldout.calibration_batches), got {calibration!r}"
        )
    for i, b in enumerate(calibration):
        if not isinstance(b, torch.Tensor) or b.ndim != 2 or b.dtype != torch.long:
            got = f"{b.dtype} {tuple(b.shape)}" if isinstance(b, torch.Tensor) else type(b).__name__
            raise ValueError(f"calibration[{i}]: expected a (B, T) int64 tensor, got {got}")


@torch.no_grad()
def _hessians(model: nn.Module, calibration, names: list[str]) -> dict[str, torch.Tensor]:
    from myllm101.fast.gptq import collect_hessians

    return collect_hessians(model, calibration, names)


# ---- the quantized state: size, save, load ------------------------------------------------------


def quantized_bytes(model: nn.Module) -> dict[str, int]:
    """{"quantized": bytes of the quantized modules' buffers, "float": bytes the same weights
    (+ biases) take in float32, "modules": how many}; zeros for a float model."""
    entry = getattr(model, "quantization", None) or {"modules": []}
    q = f = 0
    for n in entry["modules"]:
        m = model.get_submodule(n)
        q += sum(b.numel() * b.element_size() for b in m.buffers(recurse=False) if b.numel())
        f += 4 * m.out_features * m.in_features + (4 * m.out_features if m.bias is not None else 0)
    return {"quantized": q, "float": f, "modules": len(entry["modules"])}


def save_quantized(
    model: nn.Module,
    directory,
    model_cfg,
    tokenizer=None,
    base: str | None = None,
    extra_files: Sequence[Path] = (),
) -> Path:
    """A model directory (config.json with "quantization", model.safetensors, tokenizer, manifest),
    written atomically by ``train.checkpoint.save_model_dir``. ``base``: the float model it came
    from ("smollm2", "minilm" or a directory), for ``eval``'s comparisons. ``extra_files``:
    copied in and covered by the manifest (MiniLM's vocab.txt)."""
    from myllm101.train.checkpoint import save_model_dir

    entry = getattr(model, "quantization", None)
    if not entry:
        raise ValueError(
            "model: expected a quantized model (run quantize() first), got a float one"
        )
    from myllm101.fast.fuse import is_fused

    if is_fused(model):  # its qkv_proj / gate_up_proj names: load_model builds the HF-named model
        raise ValueError(
            "model: its projections are fused (fast.fuse.fuse_for_inference), so its state_dict "
            "names qkv_proj / gate_up_proj, which load_model cannot read back; quantize and save "
            "the unfused model, and fuse after loading if at all"
        )
    entry = {**entry, "base": base}
    check_quantization_entry(entry, SCHEMES)
    return save_model_dir(
        directory, model, model_cfg, tokenizer, {"quantization": entry}, list(extra_files)
    )


def prepare_quantized(model: nn.Module, entry, where="config.json") -> nn.Module:
    """Put empty quantized modules at ``entry["modules"]`` of a float skeleton (loading a
    quantized directory); ``model.quantization`` = entry. The weights are loaded after this."""
    check_quantization_entry(entry, SCHEMES, where)
    s = parse_scheme(entry["scheme"])
    for n in entry["modules"]:
        lin = _submodule_of(
            model, n, nn.Linear, f"{where}: quantization module {n!r} is not a Linear"
        )
        q = empty_quantized_module(
            s, lin.out_features, lin.in_features, lin.bias is not None, lin.weight.dtype
        )
        model.set_submodule(n, q)
    for emb in entry.get("tied", {}):
        what = f"{where}: quantization.tied names {emb!r}, which is not an Embedding"
        _submodule_of(model, emb, nn.Embedding, what)
    _tie_embeddings(model, entry.get("tied", {}))
    model.quantization = dict(entry)
    return model


def _submodule_of(model: nn.Module, name: str, kind: type, what: str) -> nn.Module:
    """model's submodule ``name`` if it is a ``kind``, else ValueError(what + why)."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        module = None
    if not isinstance(module, kind):
        raise ValueError(
            f"{what} of the model built from it (config and quantization entry disagree)"
        )
    return module


def check_quantized_tensors(model: nn.Module, path) -> None:
    """Every tensor of a quantized module in the safetensors file at ``path`` has the dtype the
    module expects (``load_state_dict`` would cast an int8 tensor stored as float silently)."""
    from safetensors import safe_open

    expected = model.state_dict()
    prefixes = tuple(f"{n}." for n in model.quantization["modules"])
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            if key.startswith(prefixes) and key in expected:
                got = f.get_slice(key).get_dtype()
                want = str(expected[key].dtype).removeprefix("torch.")
                if _SAFETENSORS_DTYPES.get(got, got) != want:
                    raise ValueError(
                        f"{path}: {key} is stored as {got} but the {model.quantization['scheme']} "
                        f"module expects {want}: the weights do not match the quantization entry"
                    )


_SAFETENSORS_DTYPES = {"I8": "int8", "U8": "uint8", "F32": "float32", "BF16": "bfloat16",
                       "F16": "float16", "F64": "float64", "I32": "int32", "I64": "int64"}  # fmt: skip


def finish_loading(model: nn.Module) -> nn.Module:
    """After the weights are in: a quantized module that prepares a faster layout from its buffers
    (``refresh()``, e.g. int4 packs for a CPU kernel) builds it from the loaded values."""
    for n in getattr(model, "quantization", {}).get("modules", ()):
        m = model.get_submodule(n)
        if hasattr(m, "refresh"):
            m.refresh()
    return model
