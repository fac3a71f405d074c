"""Input validation shared by the reference (NumPy) and fast (PyTorch) trees.

Pure Python on purpose: it imports neither NumPy nor torch, so the reference tree, the fast tree and
the Triton kernels (``myllm101/kernels``) all use it without importing each other. Most checks read
only ``.shape``, ``.dtype`` and plain values; the few that must look at values (ids, targets) use
operations NumPy arrays and torch tensors share (comparisons, ``.any()``, boolean indexing). Every
check of a component lives here once: its reference, fast and kernel versions call the same
function. Every error is a ``ValueError`` that names the argument, what was expected and what was
given.

This module holds the generic checks and those of the layers; the larger families have a module
each: ``bpe`` (tokenizer vocabularies and ids), ``quant`` (GPTQ, int4, whole-model schemes),
``finetune`` (adapters, runs), ``prune`` (scores and masks), ``retrieval`` (BM25, dense top-k).
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
