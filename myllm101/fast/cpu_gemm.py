"""The three GEMMs of a float32 training Linear on the CPU, each run by whichever of torch's two
CPU GEMM libraries this machine runs faster at its shape.

A Linear's training step is three GEMMs: y = x W^T + b (forward), dx = dy W and dW = dy^T x
(backward). ``F.linear`` sends float32 ones to the BLAS torch was built with (MKL in the pip
wheels); torch also carries oneDNN, whose linear (``torch.ops.mkldnn._linear_pointwise``, what
``torch.compile`` calls for frozen inference weights) takes the same row-major tensors. Which is
faster depends on the CPU and the shape. Measured at the training peers' shape (M = 2048 rows,
2 threads, AMD EPYC with AVX-512, ms per call, MKL / oneDNN):

    out x in        forward        dx             dW
    1152 x 384      9.7 / 8.5      9.4 / 8.6      10.7 / 13.9
    384 x 1536      15.4 / 11.6    15.6 / 12.1    14.5 / 12.4
    8192 x 384      90 / 82        81 / 65        73 / 142      (an LM head)

so neither wins everywhere, and a CPU of another make may rank them otherwise. ``"auto"`` times
both the first time it meets a (GEMM, rows rounded up to a power of 2, out, in) key, a few calls
each, and keeps the faster for the rest of the process, as ``torch.backends.cudnn.benchmark``
does on a GPU. Small GEMMs (under ``MIN_FLOPS``) stay on MKL without timing. Whole steps at that
shape, interleaved with the same model under ``aten``, gain less than those GEMMs: a GPT step
took 0.97x / 0.98x the time (means of two runs of 30 rounds; short runs read 0.89-1.03x), a
LLaMA step 0.99x (0.92-0.98x short). With ATen, MKL and oneDNN held to AVX2 (an AVX2-only CPU
emulated on this one) oneDNN's lead mostly goes, most keys choose MKL, and steps time level.

``MYLLM101_CPU_GEMM`` (or ``set_mode``) picks the policy: ``auto`` (default), ``aten`` (always
``F.linear``, bit for bit what torch does) or ``onednn`` (always oneDNN, for tests). Only float32
CPU Linears that autograd records go through here (``fast.linear.linear``): inference keeps
``F.linear`` (``fast/prepack.py`` is its oneDNN path) and autocast its bf16 GEMMs (oneDNN
already), and ``torch.compile`` its own GEMMs (routed through here as an opaque custom op, a
compiled GPT step at the peers' shape ran no faster: 1.04x the time, interleaved, within the
noise). The libraries sum in different orders, so results agree to float32 rounding (~1e-6
relative), not bit for bit; a run's choices can differ from the next run's (checkpoints keep
them for a resume), and ``aten`` gives runs that repeat bitwise across processes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

ENV_VAR = "MYLLM101_CPU_GEMM"
MODES = ("auto", "aten", "onednn")
GEMMS = ("forward", "dx", "dw")  # a Linear's three products
MIN_FLOPS = 2 * 256 * 256 * 256  # smaller GEMMs: MKL, untimed (call overheads dominate there)
TIMED_CALLS = 5  # per library and key, alternating, after a warm-up call each: the fastest counts
EVICT_BYTES = 64 * 2**20  # written before each timed call: more than this CPU's caches hold

_mode: str | None = None  # set_mode's choice; None: the environment's
_choices: dict[tuple[str, int, int, int], str] = {}  # (which GEMM, rows bucket, out, in) -> library
clock: Callable[[], float] = time.perf_counter  # tests replace it


def set_mode(mode: str | None) -> None:
    """Pick the policy for this process (None: ``$MYLLM101_CPU_GEMM`` again); forgets choices."""
    global _mode
    if mode is not None:
        _check_mode(mode, "set_mode")
    _mode = mode
    _choices.clear()


def gemm_mode() -> str:
    """The active policy: ``set_mode``'s, else ``$MYLLM101_CPU_GEMM``, else ``"auto"``."""
    if _mode is not None:
        return _mode
    return _check_mode(os.environ.get(ENV_VAR, "auto").strip().lower(), ENV_VAR)


def _check_mode(mode: str, source: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{source}: expected one of {', '.join(MODES)}, got {mode!r}")
    return mode


def choices() -> dict[str, str]:
    """What ``auto`` chose so far, e.g. {"forward 2048x1152x384": "onednn"} (rows bucket x out
    x in), for reports."""
    return {f"{g} {m}x{n}x{k}": lib for (g, m, n, k), lib in sorted(_choices.items())}


def restore_choices(saved: dict[str, str]) -> None:
    """Take ``saved`` (what ``choices()`` returned, e.g. in a checkpoint) as this process's
    choices, so a resumed run multiplies as the run it continues did (and repeats its losses bit
    for bit). A malformed entry is a ValueError naming it."""
    for name, lib in saved.items():
        which, _, dims = str(name).partition(" ")
        sizes = dims.split("x")
        if which not in GEMMS or lib not in _LIBRARIES or len(sizes) != 3:
            raise ValueError(
                f"cpu_gemm choices: expected 'GEMM MxNxK': library with GEMM one of "
                f"{', '.join(GEMMS)} and library one of {', '.join(_LIBRARIES)}, got {name!r}: {lib!r}"
            )
        try:
            m, n, k = (int(d) for d in sizes)
        except ValueError:
            raise ValueError(f"cpu_gemm choices: expected integer sizes, got {name!r}") from None
        _choices[(which, m, n, k)] = lib


def _onednn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """x (M, in) @ w (out, in)^T + b with oneDNN's linear (w may be a transposed view)."""
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


# each GEMM as (x, w, b) -> x @ w^T + b, by library; dx and dW are the same product on other
# operands: dx = dy @ (W^T)^T, dW = dy^T @ (x^T)^T
_LIBRARIES: dict[str, Callable] = {
    "aten": lambda x, w, b: F.linear(x, w, b),
    "onednn": _onednn,
}


def _bucket(rows: int) -> int:
    return 1 << max(rows - 1, 0).bit_length()


def _fastest(args: tuple) -> str:
    """The library whose fastest call of ``TIMED_CALLS`` on ``args`` is fastest. The libraries'
    calls alternate, so a drift of the machine's speed reaches both alike, and each starts with
    the caches full of other data, so it reads its operands from memory, as a training step's
    GEMMs mostly do. It changes the choice: under ``ONEDNN_MAX_CPU_ISA=AVX2`` (and MKL's, ATen's
    likewise), 9 of a GPT step's 14 keys chose oneDNN timed cache-hot, 4 timed from memory."""
    evict = torch.empty(EVICT_BYTES // 4)
    best = dict.fromkeys(_LIBRARIES, float("inf"))
    for fn in _LIBRARIES.values():
        fn(*args)  # warm-up: first-call allocations and oneDNN's primitive cache
    for _ in range(TIMED_CALLS):
        for lib, fn in _LIBRARIES.items():
            evict.fill_(0.0)
            t0 = clock()
            fn(*args)
            best[lib] = min(best[lib], clock() - t0)
    return min(best, key=best.__getitem__)


def _library(which: str, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> str:
    mode = gemm_mode()
    if mode != "auto":
        return mode
    m, (n, k) = x.shape[0], w.shape
    if 2 * m * n * k < MIN_FLOPS:
        return "aten"
    key = (which, _bucket(m), n, k)
    if key not in _choices:
        with torch.no_grad():
            _choices[key] = _fastest((x, w, b))
    return _choices[key]


def gemm(which: str, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None):
    """x (M, in) @ w (out, in)^T + b -> (M, out) by the library chosen for ``which`` GEMM
    ("forward", "dx" or "dw") at this shape. No autograd: the Linear's backward calls it."""
    return _LIBRARIES[_library(which, x, w, b)](x, w, b)


class _TrainLinear(torch.autograd.Function):
    """y = x W^T + b with each of the three GEMMs by its chosen library."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        x2 = x.reshape(-1, x.shape[-1])  # (M, in)
        return gemm("forward", x2, w, b).reshape(*x.shape[:-1], w.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: torch.Tensor):
        x, w = ctx.saved_tensors
        dy2 = dy.reshape(-1, dy.shape[-1])  # (M, out)
        need_dx, need_dw, need_db = ctx.needs_input_grad
        dx = gemm("dx", dy2, w.t()).reshape(x.shape) if need_dx else None  # dy @ W
        x2 = x.reshape(-1, x.shape[-1])  # (M, in)
        dw = gemm("dw", dy2.t(), x2.t()) if need_dw else None  # (out, M) @ (M, in)
        db = dy2.sum(0) if ctx.has_bias and need_db else None
        return dx, dw, db


def routes(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Does ``fast.linear.linear`` send this product here? float32 CPU tensors autograd records
    (grad enabled, x or w requiring it), no autocast, not while torch.compile traces, a torch
    with oneDNN, and a policy other than ``aten``."""
    return (
        x.dtype == torch.float32
        and w.dtype == torch.float32
        and x.device.type == "cpu"
        and w.device.type == "cpu"
        and torch.is_grad_enabled()
        and (x.requires_grad or w.requires_grad)
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and torch.backends.mkldnn.is_available()
        and gemm_mode() != "aten"
    )


def train_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., in) @ w (out, in)^T + b -> (..., out), differentiable, each GEMM by its library."""
    return _TrainLinear.apply(x, w, b)
