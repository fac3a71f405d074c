"""Input checks of quantization: GPTQ (reference/ and fast/ gptq.py), int4 weights and
matmuls (reference/ and fast/ int4.py, kernels/int4_matmul.py) and whole-model schemes
(myllm101/quant/).

Pure Python, as myllm101/checks/__init__.py: no NumPy, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from myllm101.checks import expect_dim, expect_dtype, expect_float, expect_ndim, expect_shape

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


def check_int8_table(q: Any, scale: Any) -> None:
    """An int8 embedding table: q (V, C) int8 with one scale per row, scale (V,)."""
    expect_dtype("q", q, ("int8",))
    expect_ndim("q", q, 2)
    expect_ndim("scale", scale, 1)
    expect_dim("scale", scale, 0, q.shape[0])


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
    unique), "base": str or null, optionally "tied": {embedding name: one of modules}}."""
    if not isinstance(entry, dict):
        raise ValueError(f'{where}: "quantization": expected an object, got {type(entry).__name__}')
    keys = {"scheme", "skip", "group_size", "modules", "base", "tied"}
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
    tied = entry.get("tied", {})
    if not isinstance(tied, dict) or not all(
        isinstance(e, str) and e and h in modules for e, h in tied.items()
    ):
        raise ValueError(
            f'{where}: "quantization.tied": expected an object mapping embedding names to names '
            f"in modules, got {tied!r:.80}"
        )
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
