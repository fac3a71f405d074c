"""Input validation shared by the reference (NumPy) and fast (PyTorch) trees.

Pure Python on purpose: it only reads ``.shape`` and ``.dtype``, so both trees can use it without
either importing the other's array library. Every error is a ``ValueError`` that names the argument,
what was expected and what was given.
"""

from __future__ import annotations

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
