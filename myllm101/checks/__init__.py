"""Input validation shared by the reference (NumPy) and fast (PyTorch) trees.

Pure Python on purpose: it imports neither NumPy nor torch, so the reference tree, the fast tree and
the Triton kernels (``myllm101/kernels``) all use it without importing each other. Most checks read
only ``.shape``, ``.dtype`` and plain values; the few that must look at values (ids, targets) use
operations NumPy arrays and torch tensors share (comparisons, ``.any()``, boolean indexing). Every
check of a component lives here once: its reference, fast and kernel versions call the same
function. Every error is a ``ValueError`` that names the argument, what was expected and what was
given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def dtype_name(x: Any) -> str:
    """'float32' for both ``np.float32`` arrays and ``torch.float32`` tensors."""
    return str(x.dtype).removeprefix("torch.")


def expect_ndim(name: str, x: Any, ndim: int | Sequence[int]) -> None:
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if len(x.shape) not in allowed:
        want = " or ".join(f"{n}-D" for n in allowed)
        raise ValueError(f"{name}: expected a {want} array, got shape {tuple(x.shape)}")


def expect_shape(name: str, x: Any, shape: Sequence[int | None]) -> None:
    """``shape`` may hold None for "any size" in that axis."""
    got = tuple(x.shape)
    if len(got) != len(shape) or any(e is not None and e != g for e, g in zip(shape, got)):
        want = "(" + ", ".join("*" if e is None else str(e) for e in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {got}")


def expect_dim(name: str, x: Any, axis: int, size: int, what: str = "") -> None:
    got = tuple(x.shape)
    if len(got) == 0 or got[axis] != size:
        extra = f" ({what})" if what else ""
        raise ValueError(f"{name}: expected size {size} in axis {axis}{extra}, got shape {got}")


def expect_same_shape(name_a: str, a: Any, name_b: str, b: Any) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )


def expect_dtype(name: str, x: Any, allowed: Sequence[str]) -> None:
    got = dtype_name(x)
    if got not in allowed:
        raise ValueError(f"{name}: expected dtype {' or '.join(allowed)}, got {got}")


def expect_float(name: str, x: Any) -> None:
    expect_dtype(name, x, FLOAT_DTYPES)


def expect_int(name: str, x: Any) -> None:
    expect_dtype(name, x, INT_DTYPES)


def expect_positive(name: str, value: float | int) -> None:
    if not value > 0:
        raise ValueError(f"{name}: expected a positive value, got {value}")


def expect_divisible(name_a: str, a: int, name_b: str, b: int) -> None:
    if b <= 0 or a % b != 0:
        raise ValueError(f"{name_a}={a} must be divisible by {name_b}={b}")


def expect_in_range(name: str, value: float, low: float, high: float) -> None:
    """low <= value < high."""
    if not (low <= value < high):
        raise ValueError(f"{name}: expected a value in [{low}, {high}), got {value}")


def expect_str(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected str, got {type(value).__name__}")


# --------------------------------------------------------------------------------------------------
# checks of one component, shared by its reference, fast and kernel versions


# linear layer


def check_linear_shapes(x: Any, w: Any, b: Any) -> None:
    """x (..., in) float, w (out, in), b (out,) or None."""
    expect_float("x", x)
    expect_ndim("w", w, 2)
    expect_dim("x", x, -1, w.shape[1], "in_features of w")
    if b is not None:
        expect_shape("b", b, (w.shape[0],))


def check_linear_dtypes(x: Any, w: Any, b: Any) -> None:
    """w and b (if any) in x's dtype: mixed dtypes would upcast silently (NumPy) or fail (torch)."""
    expect_dtype("w", w, (dtype_name(x),))
    if b is not None:
        expect_dtype("b", b, (dtype_name(x),))


# RMSNorm


def check_rmsnorm(x: Any, weight: Any, eps: float) -> None:
    """x (..., C) float, weight (C,), eps > 0."""
    expect_float("x", x)
    if len(x.shape) == 0:
        raise ValueError(f"x: expected at least 1 dimension (..., C), got shape {tuple(x.shape)}")
    expect_shape("weight", weight, (x.shape[-1],))
    expect_positive("eps", eps)


# activations

GELU_APPROXIMATIONS = ("none", "tanh")


def check_gelu_approximate(approximate: str) -> None:
    if approximate not in GELU_APPROXIMATIONS:
        raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")


# attention and RoPE


def check_qkv(q: Any, k: Any, v: Any, key_padding_mask: Any = None, scale: Any = None) -> None:
    """Attention inputs: q (B, H, T, D) float, k/v (B, Hkv, S, D) of q's dtype with H % Hkv == 0,
    key_padding_mask (B, S) bool, or (B, T, S) bool (a whole mask per row: packed examples), or
    None; scale > 0 or None."""
    expect_float("q", q)
    expect_ndim("q", q, 4)
    expect_ndim("k", k, 4)
    B, H, T, D = q.shape
    expect_shape("k", k, (B, None, None, D))
    expect_same_shape("k", k, "v", v)
    expect_dtype("k", k, (dtype_name(q),))
    expect_dtype("v", v, (dtype_name(q),))
    expect_divisible("q heads", H, "k/v heads", k.shape[1])
    if key_padding_mask is not None:
        if getattr(key_padding_mask, "ndim", 2) == 3:
            expect_shape("key_padding_mask", key_padding_mask, (B, T, k.shape[2]))
        else:
            expect_shape("key_padding_mask", key_padding_mask, (B, k.shape[2]))
        expect_dtype("key_padding_mask", key_padding_mask, ("bool",))
    if scale is not None:
        expect_positive("scale", scale)


def expect_even_head_dim(head_dim: int) -> None:
    """RoPE rotates pairs of features: the head dim must be even."""
    if head_dim % 2 != 0:
        raise ValueError(f"head_dim: expected an even size (RoPE rotates pairs), got {head_dim}")


def check_rope_frequencies(head_dim: int, seq_len: int, theta: float, offset: int) -> None:
    """Arguments of ``rope_frequencies``: an even positive head_dim, seq_len > 0, theta > 0,
    offset >= 0 (the first position, for KV-cache decoding)."""
    expect_positive("head_dim", head_dim)
    expect_even_head_dim(head_dim)
    expect_positive("seq_len", seq_len)
    expect_positive("theta", theta)
    if offset < 0:
        raise ValueError(f"offset: expected a value >= 0, got {offset}")


def check_rope(x: Any, cos: Any, sin: Any) -> None:
    """x: (B, H, T, D) float with an even D; cos/sin: both (T, D), or both (B, 1, T, D) (one row of
    positions per batch row)."""
    expect_float("x", x)
    expect_ndim("x", x, 4)
    B, _, T, D = x.shape
    expect_even_head_dim(D)
    expect_shape("cos", cos, (B, 1, T, D) if len(cos.shape) == 4 else (T, D))
    expect_same_shape("cos", cos, "sin", sin)


# cross-entropy loss

REDUCTIONS = ("mean", "sum")  # of a loss over its rows


def check_loss_options(label_smoothing: float, reduction: str) -> None:
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1], got {label_smoothing}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")


def check_cross_entropy(logits: Any, targets: Any, label_smoothing: float, reduction: str) -> None:
    """logits (..., V) float with V >= 1, targets (...) int, and the loss options."""
    expect_float("logits", logits)
    if len(logits.shape) == 0 or logits.shape[-1] == 0:
        raise ValueError(f"logits: expected shape (..., V) with V >= 1, got {tuple(logits.shape)}")
    expect_int("targets", targets)
    expect_shape("targets", targets, logits.shape[:-1])
    check_loss_options(label_smoothing, reduction)


# LoRA


def check_lora_adapter(w: Any, A: Any, B: Any) -> None:
    """w: (out, in), A: (r, in) with r >= 1, B: (out, r), all of w's float dtype."""
    expect_float("w", w)
    expect_ndim("w", w, 2)
    expect_ndim("A", A, 2)
    expect_positive("r (rows of A)", A.shape[0])
    out_f, in_f = w.shape
    r = A.shape[0]
    expect_shape("A", A, (r, in_f))
    expect_shape("B", B, (out_f, r))
    expect_dtype("A", A, (dtype_name(w),))
    expect_dtype("B", B, (dtype_name(w),))


def check_lora_linear(x: Any, w: Any, b: Any, A: Any, B: Any) -> None:
    """The adapter, plus x (..., in) in w's dtype and b (out,) or None."""
    check_lora_adapter(w, A, B)
    expect_float("x", x)
    expect_dtype("x", x, (dtype_name(w),))
    expect_dim("x", x, -1, w.shape[1], "in features of w")
    if b is not None:
        expect_shape("b", b, (w.shape[0],))


def lora_scale(A: Any, alpha: float) -> float:
    """alpha / r, where r = A.shape[0] is the adapter's rank (ValueError for r = 0)."""
    expect_positive("r (rows of A)", A.shape[0])
    return alpha / A.shape[0]


# int8 quantization

QMAX = 127  # int8 quantization is symmetric: q in [-127, 127]


def check_int8_operands(a: Any, b: Any, name_a: str = "a", name_b: str = "b") -> None:
    """a (M, K) int8 and b (N, K) int8, for a @ b.T."""
    expect_dtype(name_a, a, ("int8",))
    expect_dtype(name_b, b, ("int8",))
    expect_ndim(name_a, a, 2)
    expect_ndim(name_b, b, 2)
    expect_dim(name_b, b, 1, a.shape[1], f"K, the columns of {name_a}")


def check_int8_scale(q: Any, scale: Any) -> None:
    """A float scale for int8 values q (rows, ...): () per tensor, (rows,) or (rows, 1) per row."""
    expect_float("scale", scale)
    if len(scale.shape) == 0:
        return
    rows = q.shape[0] if len(q.shape) >= 1 else 0
    expect_shape("scale", scale, (rows,) if len(scale.shape) == 1 else (rows, 1))


def check_int8_linear(x: Any, w_q: Any, w_scale: Any, b: Any) -> None:
    """x (..., in) float, w_q (out, in) int8, w_scale () or (out,), b (out,) or None."""
    expect_float("x", x)
    expect_dtype("w_q", w_q, ("int8",))
    expect_ndim("w_q", w_q, 2)
    expect_dim("x", x, -1, w_q.shape[1], "in features of w_q")
    if len(w_scale.shape) != 0:
        expect_shape("w_scale", w_scale, (w_q.shape[0],))
    if b is not None:
        expect_shape("b", b, (w_q.shape[0],))


# optimizers


def check_sgd_options(lr: float, momentum: float, weight_decay: float) -> None:
    expect_in_range("lr", lr, 0.0, math.inf)
    expect_in_range("momentum", momentum, 0.0, math.inf)
    expect_in_range("weight_decay", weight_decay, 0.0, math.inf)


def check_adamw_options(lr: float, betas: Sequence[float], eps: float, weight_decay: float) -> None:
    expect_in_range("lr", lr, 0.0, math.inf)
    expect_in_range("betas[0]", betas[0], 0.0, 1.0)
    expect_in_range("betas[1]", betas[1], 0.0, 1.0)
    expect_in_range("eps", eps, 0.0, math.inf)
    expect_in_range("weight_decay", weight_decay, 0.0, math.inf)


# generation


def check_max_new_tokens(max_new_tokens: int) -> None:
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 1
    ):
        raise ValueError(f"max_new_tokens: expected an int >= 1, got {max_new_tokens!r}")


def check_temperature(temperature: float) -> None:
    if not temperature >= 0:
        raise ValueError(f"temperature: expected a value >= 0 (0 = greedy), got {temperature}")


def check_top_k(top_k: int) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k: expected an int >= 1 or None, got {top_k!r}")


def check_top_p(top_p: float) -> None:
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p: expected a value in (0, 1] or None, got {top_p}")


# --------------------------------------------------------------------------------------------------
# checks of values (duck-typed: they work on NumPy arrays and torch tensors alike; a torch caller
# pays one host sync and skips them while torch.compile traces)


def _unravel(flat: int, shape: Sequence[int]) -> tuple[int, ...]:
    where = []
    for size in reversed(tuple(shape)):
        flat, i = divmod(flat, size)
        where.append(i)
    return tuple(reversed(where))


def check_ids(ids: Any, vocab_size: int) -> None:
    """ValueError unless every id is an integer in [0, vocab_size); names the first bad id."""
    expect_int("ids", ids)
    bad = (ids < 0) | (ids >= vocab_size)
    if bool(bad.any()):
        flat = bad.reshape(-1).tolist().index(True)  # only on the error path: a Python list is ok
        where = _unravel(flat, ids.shape)
        raise ValueError(
            f"ids: expected every id in [0, {vocab_size}) (V={vocab_size} table rows), "
            f"got id {int(ids.reshape(-1)[flat])} at index {where}"
        )


def check_targets(targets: Any, num_classes: int, ignore_index: int) -> None:
    """Every target is a class in [0, V) or ``ignore_index``; else name the first bad one."""
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= num_classes))
    if bool(bad.any()):
        raise ValueError(
            f"targets: expected class indices in [0, {num_classes}) or ignore_index={ignore_index}, "
            f"got {int(targets[bad][0])}"
        )


# --------------------------------------------------------------------------------------------------
# byte-level BPE: vocabulary, special tokens and token ids (reference/bpe.py and fast/bpe.py)


def check_special_tokens(special_tokens: Any) -> list[str]:
    """``special_tokens`` (None or a list of strings) as a list of distinct non-empty strings."""
    if special_tokens is None:
        return []
    if isinstance(special_tokens, str) or not all(isinstance(s, str) for s in special_tokens):
        raise ValueError(
            f"special_tokens: expected a list of strings, got {type(special_tokens).__name__} "
            f"{special_tokens!r}"
        )
    specials = list(special_tokens)
    if len(set(specials)) != len(specials) or "" in specials:
        raise ValueError(f"special_tokens: expected distinct non-empty strings, got {specials}")
    return specials


def check_vocab_size(vocab_size: int, n_special: int) -> None:
    """A BPE vocabulary holds the 256 byte tokens and the special tokens at least."""
    if not isinstance(vocab_size, int) or vocab_size < 256 + n_special:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: need at least 256 byte tokens + {n_special} "
            f"special tokens = {256 + n_special}"
        )


def check_bpe_vocab(mergeable_ranks, special_tokens) -> tuple[dict[bytes, int], dict[str, int]]:
    """Validate a vocabulary: every single byte, distinct ranks >= 0, special ids >= 0 distinct
    from each other and from the ranks. Returns copies (a tokenizer must not change when its input
    does)."""
    ranks = dict(mergeable_ranks)
    specials = dict(special_tokens or {})
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(
            f"mergeable_ranks: expected all 256 single bytes, got {256 - len(missing)} "
            f"(missing e.g. {bytes([missing[0]])!r})"
        )
    if len(set(ranks.values())) != len(ranks):
        raise ValueError(
            f"mergeable_ranks: expected distinct ranks, got {len(ranks)} tokens but "
            f"{len(set(ranks.values()))} distinct ranks"
        )
    clash = set(specials.values()) & set(ranks.values())
    if clash or len(set(specials.values())) != len(specials):
        raise ValueError(
            f"special_tokens: expected ids distinct from each other and from the ranks, got "
            f"{specials} (shared ids: {sorted(clash)})"
        )
    negative = sorted(i for i in (*ranks.values(), *specials.values()) if i < 0)
    if negative:
        raise ValueError(
            f"mergeable_ranks/special_tokens: expected ids >= 0, got negative id {negative[0]}"
        )
    return ranks, specials


def check_special_args(allowed_special, disallowed_special, special_tokens) -> tuple[set, set]:
    """tiktoken's rules: "all" means every special token; disallowed "all" means all not allowed.
    Returns (allowed, disallowed) as sets of names."""
    names = set(special_tokens)
    allowed = names if allowed_special == "all" else set(allowed_special)
    unknown = allowed - names
    if unknown:
        raise ValueError(
            f"allowed_special: expected names from {sorted(names)}, got unknown {sorted(unknown)}"
        )
    disallowed = names - allowed if disallowed_special == "all" else set(disallowed_special)
    return allowed, disallowed


def disallowed_special_error(token: str) -> ValueError:
    """The error for a disallowed special token found in the text (the caller raises it)."""
    return ValueError(
        f"encountered the disallowed special token {token!r} in the text; pass "
        f"allowed_special={{{token!r}}} to encode it as the special token, or "
        f"disallowed_special=() to encode it as plain text"
    )


def expect_token_id(token_id: Any, n_vocab: int, is_known: Any) -> int:
    """``token_id`` as an int, if it is one (not a bool) in [0, n_vocab) with ``is_known(id)``."""
    if isinstance(token_id, bool) or not hasattr(token_id, "__index__"):
        raise ValueError(f"token id: expected an int, got {type(token_id).__name__}")
    token_id = int(token_id)
    if not (0 <= token_id < n_vocab and is_known(token_id)):
        raise ValueError(
            f"token id {token_id} is not in the vocabulary (n_vocab={n_vocab}, "
            f"valid ids are 0..{n_vocab - 1} minus unused ones)"
        )
    return token_id


# --------------------------------------------------------------------------------------------------
# gptq: one-shot second-order int4 quantization (reference/gptq.py and fast/gptq.py)


def expect_int4_group(in_features: int, group_size: int) -> None:
    """An int4 group is an even number of input columns that divides ``in_features``."""
    if (
        isinstance(group_size, bool)
        or not isinstance(group_size, int)
        or group_size <= 0
        or group_size % 2
        or in_features % group_size
    ):
        raise ValueError(
            f"group_size={group_size!r} must be an even int that divides in_features={in_features}"
        )


def check_gptq(w: Any, H: Any, group_size: int, damp: float, block_size: int) -> None:
    """w (out, in) float, H (in, in) float, group_size even and dividing in, damp >= 0,
    block_size an int >= 1."""
    expect_float("w", w)
    expect_ndim("w", w, 2)
    expect_float("H", H)
    in_features = w.shape[1]
    if tuple(H.shape) != (in_features, in_features):
        raise ValueError(
            f"H: expected shape ({in_features}, {in_features}) (square, in_features of w), "
            f"got {tuple(H.shape)}"
        )
    expect_int4_group(in_features, group_size)
    if not damp >= 0:
        raise ValueError(f"damp: expected a value >= 0, got {damp}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size: expected an int >= 1, got {block_size!r}")


def check_hessian_update(H: Any, n: int, x: Any) -> None:
    """H (in, in) float or None, n >= 0 rows seen so far, x (..., in) float."""
    expect_float("x", x)
    if len(x.shape) == 0:
        raise ValueError(f"x: expected shape (..., in), got {tuple(x.shape)}")
    if H is not None:
        expect_float("H", H)
        expect_shape("H", H, (x.shape[-1], x.shape[-1]))
    if isinstance(n, bool) or not hasattr(n, "__index__") or n < 0:
        raise ValueError(f"n: expected an int >= 0 (calibration rows so far), got {n!r}")


def gptq_not_positive_definite(damp: float) -> ValueError:
    """The error when H + damp * mean(diag H) * I has no Cholesky factor (the caller raises it)."""
    return ValueError(
        f"H + damp * mean(diag H) * I is not positive definite (damp={damp}); collect more "
        f"calibration rows or raise damp"
    )


# --------------------------------------------------------------------------------------------------
# quantization: whole-model schemes, skip patterns, the config.json entry (myllm101/quant/)


def check_skip_patterns(skip: Any) -> tuple[str, ...]:
    """``skip``: a list/tuple of module names or glob patterns (not one bare string) -> tuple."""
    if isinstance(skip, str) or not isinstance(skip, (list, tuple)):
        raise ValueError(
            f"skip: expected a list of module names or glob patterns, got {type(skip).__name__} "
            f"{skip!r:.60}"
        )
    for i, p in enumerate(skip):
        if not isinstance(p, str) or not p:
            raise ValueError(f"skip[{i}]: expected a non-empty string, got {p!r:.60}")
    return tuple(skip)


def check_quantization_entry(
    entry: Any, schemes: Sequence[str], where: str = "quantization"
) -> None:
    """The "quantization" object of a model directory's config.json: {"scheme": one of
    ``schemes``, "skip": [str], "group_size": int or null, "modules": [str, ...] (non-empty,
    unique), "base": str or null}."""
    if not isinstance(entry, dict):
        raise ValueError(f'{where}: "quantization": expected an object, got {type(entry).__name__}')
    keys = {"scheme", "skip", "group_size", "modules", "base"}
    if set(entry) - keys or not {"scheme", "modules"} <= set(entry):
        raise ValueError(
            f'{where}: "quantization": expected keys {sorted(keys)} (scheme and modules '
            f"required), got {sorted(entry)}"
        )
    if entry["scheme"] not in schemes:
        raise ValueError(
            f'{where}: "quantization.scheme": expected one of {", ".join(schemes)}, '
            f"got {entry['scheme']!r:.60}"
        )
    modules = entry["modules"]
    if (
        not isinstance(modules, list)
        or not modules
        or not all(isinstance(m, str) and m for m in modules)
        or len(set(modules)) != len(modules)
    ):
        raise ValueError(
            f'{where}: "quantization.modules": expected a non-empty list of unique module names, '
            f"got {modules!r:.80}"
        )
    check_skip_patterns(entry.get("skip", []))
    g = entry.get("group_size")
    if g is not None and (isinstance(g, bool) or not isinstance(g, int) or g <= 0):
        raise ValueError(
            f'{where}: "quantization.group_size": expected a positive int or null, got {g!r}'
        )
    base = entry.get("base")
    if base is not None and not isinstance(base, str):
        raise ValueError(
            f'{where}: "quantization.base": expected a string or null, got {base!r:.60}'
        )


# --------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------
# int4: group-wise symmetric weight-only quantization (reference/int4.py, fast/int4.py,
# kernels/int4_matmul.py); the group-size rule is ``expect_int4_group`` in the gptq section above

INT4_MIN, INT4_MAX = -8, 7  # q in [-8, 7]; round-to-nearest with scale = absmax / 7 never gives -8


def check_int4_weight(w: Any, group_size: int) -> None:
    """w (out, in) float with ``group_size`` even and dividing in."""
    expect_float("w", w)
    expect_ndim("w", w, 2)
    expect_int4_group(w.shape[1], group_size)


def check_int4_codes(q: Any) -> None:
    """q (out, in) int8 with an even in (two codes per byte) and every value in [-8, 7]."""
    expect_dtype("q", q, ("int8",))
    expect_ndim("q", q, 2)
    if q.shape[1] % 2:
        raise ValueError(
            f"q: expected an even number of columns (two int4 codes per byte), got shape "
            f"{tuple(q.shape)}"
        )
    bad = (q < INT4_MIN) | (q > INT4_MAX)
    if bool(bad.any()):
        raise ValueError(
            f"q: expected int4 codes in [{INT4_MIN}, {INT4_MAX}], got {int(q[bad][0])}"
        )


def check_int4_packed(packed: Any, scale: Any, group_size: int) -> None:
    """packed (out, in // 2) uint8, scale (out, in // group_size) float, group_size even and
    dividing in (= 2 * packed.shape[1])."""
    expect_dtype("packed", packed, ("uint8",))
    expect_ndim("packed", packed, 2)
    out_features, in_features = packed.shape[0], 2 * packed.shape[1]
    expect_int4_group(in_features, group_size)
    expect_float("scale", scale)
    expect_shape("scale", scale, (out_features, in_features // group_size))


def check_int4_linear(x: Any, packed: Any, scale: Any, group_size: int, b: Any) -> None:
    """x (..., in) float, the packed weight and its scales (``check_int4_packed``), b (out,) or
    None."""
    check_int4_packed(packed, scale, group_size)
    expect_float("x", x)
    expect_dim("x", x, -1, 2 * packed.shape[1], "in features: 2 x the columns of packed")
    if b is not None:
        expect_shape("b", b, (packed.shape[0],))


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


# --------------------------------------------------------------------------------------------------
# pruning: importance scores and keep-masks (reference/prune.py, fast/prune.py, myllm101/prune/)


def check_sparsity(sparsity: Any) -> None:
    """The fraction of weights to prune: a real number in [0, 1) (1 would remove everything)."""
    if (
        isinstance(sparsity, (bool, str))
        or not hasattr(sparsity, "__float__")
        or not 0.0 <= float(sparsity) < 1.0
    ):
        raise ValueError(f"sparsity: expected a float in [0, 1), got {sparsity!r}")


def prune_count(sparsity: float, n: int) -> int:
    """How many of ``n`` weights a ``sparsity`` prunes: round(sparsity * n), Python's round (half to
    even: 0.5 * 5 -> 2), the one rule both trees use. 0.5 * 6 -> 3, 0.3 * 10 -> 3."""
    check_sparsity(sparsity)
    return int(round(float(sparsity) * n))


def expect_no_nan(name: str, x: Any) -> None:
    """Masks sort scores: a NaN has no place in that order (and NumPy and torch place it apart)."""
    nan = x != x
    if bool(nan.any()):
        raise ValueError(f"{name}: expected no NaN values, got {int(nan.sum())} NaN(s)")


def check_scores(scores: Any, name: str = "scores") -> None:
    """Importance scores of one weight matrix: (out, in) float, no NaN."""
    expect_float(name, scores)
    expect_ndim(name, scores, 2)
    expect_no_nan(name, scores)


def check_score_dict(scores: Any) -> None:
    """Global pruning: a non-empty dict {name: (out, in) float scores}."""
    if not isinstance(scores, dict) or len(scores) == 0:
        got = "an empty dict" if isinstance(scores, dict) else type(scores).__name__
        raise ValueError(f"scores: expected a non-empty dict {{name: (out, in) scores}}, got {got}")
    for key, s in scores.items():
        check_scores(s, f"scores[{key!r}]")


def check_nm(n: Any, m: Any, in_features: int) -> None:
    """N:M sparsity keeps n of every m consecutive inputs: ints 1 <= n < m, m divides in_features."""
    for name, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    if not n < m:
        raise ValueError(f"n: expected n < m (keep n of every m weights), got n={n}, m={m}")
    if in_features % m != 0:
        raise ValueError(
            f"scores: in_features={in_features} must be divisible by m={m} (groups of {m} "
            f"consecutive inputs)"
        )


def check_norms_for(
    weight_name: str, weight: Any, norms_name: str, norms: Any, axis: int = 1
) -> None:
    """weight (out, in) float and norms (size of weight's axis ``axis``,) float."""
    expect_float(weight_name, weight)
    expect_ndim(weight_name, weight, 2)
    expect_float(norms_name, norms)
    if tuple(norms.shape) != (weight.shape[axis],):
        raise ValueError(
            f"{norms_name}: expected shape ({weight.shape[axis]},) (axis {axis} of {weight_name} "
            f"{tuple(weight.shape)}), got {tuple(norms.shape)}"
        )


def check_head_scores(o_weight: Any, o_in_norms: Any, n_head: Any, n_kv_head: Any) -> None:
    """o_weight (C, n_head * head_dim), o_in_norms (n_head * head_dim,), n_head a multiple of
    n_kv_head."""
    for name, v in (("n_head", n_head), ("n_kv_head", n_kv_head)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    expect_divisible("n_head", n_head, "n_kv_head", n_kv_head)
    check_norms_for("o_weight", o_weight, "o_in_norms", o_in_norms)
    if o_weight.shape[1] % n_head != 0:
        raise ValueError(
            f"o_weight: in_features={o_weight.shape[1]} (n_head * head_dim) must be divisible by "
            f"n_head={n_head}, got shape {tuple(o_weight.shape)}"
        )
