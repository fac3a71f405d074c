"""When does ``myllm101.fast`` call a Triton kernel instead of eager PyTorch?

One switch, the environment variable ``MYLLM101_KERNELS`` (or a ``kernels=`` argument, which wins):

- ``"off"``:  never; triton is not even imported.
- ``"auto"`` (default): only when triton imports and every tensor is on a CUDA device, so CPU runs
  (and machines without triton) keep the eager path.
- ``"on"``:   always; an error if triton is missing. On CPU tensors this needs Triton's interpreter
  (``TRITON_INTERPRET=1``), which is how the kernel parity tests run without a GPU.

While ``torch.compile`` traces a function, ``use_kernel`` is False in every mode: the compiler fuses
these ops into its own Triton code, and our launchers (and the interpreter) are not traceable.

The kernels compute in float32 and take float16, bfloat16 or float32 tensors (``KERNEL_DTYPES``);
``kernel_supports`` says whether a tensor is one of those. float64 always stays on the eager path
(GPUs are slow at it, and it is what the parity tests compare against).

Nothing here imports triton at module load, so ``import myllm101.kernels`` works everywhere.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import torch

from myllm101.checks import dtype_name

MODES = ("auto", "on", "off")
ENV_VAR = "MYLLM101_KERNELS"
# the float dtypes every Triton kernel here takes (by name, as ``checks.expect_dtype`` wants them)
KERNEL_DTYPES = ("float16", "bfloat16", "float32")


def kernel_supports(x: Any) -> bool:
    """True when ``x``'s dtype is one the kernels take (``KERNEL_DTYPES``); float64 is not."""
    return dtype_name(x) in KERNEL_DTYPES


def kernels_mode(kernels: str | None = None) -> str:
    """The active mode: ``kernels`` if given, else ``$MYLLM101_KERNELS``, else ``"auto"``."""
    mode = kernels if kernels is not None else os.environ.get(ENV_VAR, "auto")
    mode = mode.strip().lower()
    if mode not in MODES:
        source = "kernels" if kernels is not None else ENV_VAR
        raise ValueError(f"{source}: expected one of {', '.join(MODES)}, got {mode!r}")
    return mode


_triton_ok: bool | None = None  # cached answer of triton_available()


def triton_available() -> bool:
    """True when ``import triton`` succeeds (cached after the first call)."""
    global _triton_ok
    if _triton_ok is None:
        # find_spec first: cheap when triton is absent
        if importlib.util.find_spec("triton") is None:
            _triton_ok = False
        else:
            try:
                import triton  # noqa: F401

                _triton_ok = True
            except Exception:  # a broken install (missing driver libs, ...) counts as absent
                _triton_ok = False
    return _triton_ok


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def use_kernel(*tensors: Any, kernels: str | None = None) -> bool:
    """Should the caller run the Triton kernel on ``tensors``? (None entries are skipped.)

    "off" -> False. "on" -> True (ValueError if triton is missing). "auto" -> True iff triton
    imports and every tensor is on CUDA (and at least one tensor is given). Always False while
    torch.compile traces (it generates its own fused kernels).
    """
    mode = kernels_mode(kernels)
    if mode == "off" or torch.compiler.is_compiling():
        return False
    if mode == "on":
        if not triton_available():
            raise ValueError(
                f"kernels='on' expected the 'triton' package to be importable, got an import "
                f"failure; install triton or use kernels='auto'/'off' ({ENV_VAR})"
            )
        return True
    present = [t for t in tensors if t is not None]
    # no tensors to judge by -> stay on the eager path
    if not present or not all(getattr(t, "is_cuda", False) for t in present):
        return False
    return triton_available()
