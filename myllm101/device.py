"""What this machine computes fast, and the precision and kernel choices made from it.

CPUs differ more than their names suggest. On one with AVX512-BF16 (or AMX) torch's bf16 GEMMs run
2-7x faster than float32, and with VNNI (or AMX-INT8) ``torch._int_mm`` is ~7x faster than float32.
On an AVX2-only CPU the same bf16 ``torch.mm`` is *emulated* (~170x slower than float32) and
``_int_mm`` is slower than float32. So nothing here assumes: the answers come from torch's own
queries (``torch.backends.cpu.get_cpu_capability()``, ``torch.cpu``'s CPU-feature flags, oneDNN's
bf16 check), and every choice says why it was made.

    hardware()                      -> Hardware(cpu_name, cpu_capability, native_bf16, ...)
    choose_train_dtype("auto", dev) -> Choice("bf16" | "float32" | "fp16", reason)
    choose_inference_dtype("auto")  -> Choice("bf16" | "fp32", reason)
    int8_matmul_backend(dev)        -> "int_mm" | "fp32_exact"
    matmul_peak_flops(dev, dtype)   -> FLOP/s of a square torch.mm: the MFU denominator

Forcing a branch (tests, or a user who knows better): ``MYLLM101_NATIVE_BF16=0|1`` and
``MYLLM101_NATIVE_INT8=0|1`` override what the CPU queries say.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

BF16_ENV, INT8_ENV = "MYLLM101_NATIVE_BF16", "MYLLM101_NATIVE_INT8"
# torch.backends.cpu.get_cpu_capability() values whose kernels use AVX-512 (the bf16/VNNI paths)
_AVX512_CAPABILITIES = ("AVX512", "AVX512_BF16", "AVX512_VNNI", "AMX")
# environment variables that make torch / oneDNN use fewer CPU features than the CPU has (they
# emulate an older CPU: a report made under them says so)
_LIMIT_ENVS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


@dataclass(frozen=True)
class Hardware:
    """What this process can do fast (CPU always; CUDA when present)."""

    cpu_name: str
    cpu_capability: str  # torch's kernel dispatch level: "AVX512", "AVX2", "DEFAULT", ...
    native_bf16: bool  # CPU bf16 GEMMs in hardware (AVX512-BF16 / AMX-BF16), used by torch
    native_int8: bool  # CPU int8 dot products (AVX512-VNNI / AVX-VNNI / AMX-INT8)
    bf16_why: str
    int8_why: str
    threads: int
    torch_version: str
    cuda_device: str | None  # name of CUDA device 0, or None
    cuda_bf16: bool
    limits: str = (
        ""  # ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA when set: kernels capped below the CPU
    )

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line for logs and report headers."""
        yes = lambda b: "yes" if b else "no"  # noqa: E731
        cuda = f", CUDA: {self.cuda_device}" if self.cuda_device else ""
        cuda += f", capped by {self.limits}" if self.limits else ""
        return (
            f"{self.cpu_name} (torch CPU capability {self.cpu_capability}; native bf16: "
            f"{yes(self.native_bf16)}, native int8: {yes(self.native_int8)}), "
            f"{self.threads} threads, torch {self.torch_version}{cuda}"
        )


def _override(env: str) -> bool | None:
    value = os.environ.get(env)
    if value is None or value.strip() == "":
        return None
    value = value.strip().lower()
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"{env}: expected 0 or 1, got {value!r}")


def _cpu_flags() -> dict:
    try:
        return dict(torch.cpu.get_capabilities())
    except Exception:  # an older torch or a non-x86 CPU: no flags, so nothing counts as native
        return {}


def _cpu_name(flags: dict) -> str:
    name = str(flags.get("cpu_name") or "")
    try:  # /proc/cpuinfo has the full model name ("AMD EPYC 9R14 96-Core Processor")
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip() or name
                    break
    except OSError:
        pass
    return name or "unknown CPU"


def _native_bf16(flags: dict, capability: str, onednn_bf16: bool) -> tuple[bool, str]:
    forced = _override(BF16_ENV)
    if forced is not None:
        return forced, f"forced by {BF16_ENV}={int(forced)}"
    hw = bool(flags.get("avx512_bf16") or flags.get("amx_bf16"))
    if not hw:
        return False, "the CPU has neither AVX512-BF16 nor AMX-BF16 (bf16 GEMMs are emulated)"
    if capability not in _AVX512_CAPABILITIES:
        return False, f"torch runs {capability} kernels here (bf16 GEMMs are emulated)"
    if not onednn_bf16:
        return False, "oneDNN does not run bf16 natively here (bf16 GEMMs are emulated)"
    which = "AMX-BF16" if flags.get("amx_bf16") else "AVX512-BF16"
    return True, f"the CPU has {which} and torch uses it"


def _native_int8(flags: dict, capability: str) -> tuple[bool, str]:
    forced = _override(INT8_ENV)
    if forced is not None:
        return forced, f"forced by {INT8_ENV}={int(forced)}"
    avx512_vnni = bool(flags.get("avx512_vnni")) and capability in _AVX512_CAPABILITIES
    for ok, name in (
        (bool(flags.get("amx_int8")), "AMX-INT8"),
        (avx512_vnni, "AVX512-VNNI"),
        (bool(flags.get("avx_vnni")), "AVX-VNNI"),
    ):
        if ok:
            return True, f"the CPU has {name} int8 dot products"
    return False, "no VNNI/AMX int8 dot products (torch._int_mm is slower than float32 here)"


@functools.cache
def _static_facts() -> tuple[dict, str, str, bool]:
    """(CPU flags, torch CPU capability, CPU name, oneDNN bf16) - they never change in a process."""
    flags = _cpu_flags()
    try:
        onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        onednn_bf16 = False
    return flags, str(torch.backends.cpu.get_cpu_capability()), _cpu_name(flags), onednn_bf16


def hardware() -> Hardware:
    """This process's ``Hardware``; the ``MYLLM101_NATIVE_*`` overrides are read on each call."""
    flags, capability, name, onednn_bf16 = _static_facts()
    bf16, bf16_why = _native_bf16(flags, capability, onednn_bf16)
    int8, int8_why = _native_int8(flags, capability)
    cuda = torch.cuda.is_available()
    return Hardware(
        cpu_name=name,
        cpu_capability=capability,
        native_bf16=bf16,
        native_int8=int8,
        bf16_why=bf16_why,
        int8_why=int8_why,
        threads=torch.get_num_threads(),
        torch_version=torch.__version__,
        cuda_device=torch.cuda.get_device_name(0) if cuda else None,
        cuda_bf16=bool(cuda and torch.cuda.is_bf16_supported()),
        limits=" ".join(f"{k}={os.environ[k]}" for k in _LIMIT_ENVS if os.environ.get(k)),
    )


@dataclass(frozen=True)
class Choice:
    """A precision (or kernel) chosen for this machine, and the reason, for logs and summaries."""

    value: str
    reason: str


def _device_type(device) -> str:
    return torch.device(device).type if device is not None else "cpu"


def choose_train_dtype(requested: str, device=None) -> Choice:
    """The trainer's precision: "auto" -> bf16 autocast where bf16 is native (a CUDA GPU with
    bf16, or a CPU with AVX512-BF16/AMX), fp16 + GradScaler on an older GPU, else float32.
    An explicit "bf16" on a CPU without native bf16 is honoured with a one-line warning."""
    hw, kind = hardware(), _device_type(device)
    if requested != "auto":
        if requested == "bf16" and kind == "cpu" and not hw.native_bf16:
            warn(
                f"dtype bf16 on this CPU will be slow: {hw.bf16_why}; float32 is typically "
                "20x+ faster here (dtype auto picks it)"
            )
        return Choice(requested, f"requested dtype {requested}")
    if kind == "cuda":
        if hw.cuda_bf16:
            return Choice("bf16", "auto: the CUDA device supports bf16")
        return Choice("fp16", "auto: the CUDA device lacks bf16, so fp16 with a GradScaler")
    if hw.native_bf16:
        return Choice("bf16", f"auto: bf16 autocast, since {hw.bf16_why}")
    return Choice("float32", f"auto: float32, since {hw.bf16_why}")


def choose_inference_dtype(requested: str, device=None) -> Choice:
    """Weights' dtype for generation: "fp32" | "bf16" | "auto" (bf16 where it is native: bf16
    weights halve the bytes each decoded token reads; where bf16 is emulated, fp32)."""
    hw, kind = hardware(), _device_type(device)
    if requested not in ("auto", "fp32", "bf16"):
        raise ValueError(f"dtype: expected auto, fp32 or bf16, got {requested!r}")
    if requested != "auto":
        if requested == "bf16" and kind == "cpu" and not hw.native_bf16:
            warn(f"dtype bf16 on this CPU may be slow: {hw.bf16_why}")
        return Choice(requested, f"requested dtype {requested}")
    if kind == "cuda":
        return Choice("bf16" if hw.cuda_bf16 else "fp32", "auto: CUDA device")
    if hw.native_bf16:
        return Choice("bf16", f"auto: bf16 weights, since {hw.bf16_why}")
    return Choice("fp32", f"auto: fp32 weights, since {hw.bf16_why}")


def int8_matmul_backend(device=None) -> str:
    """How ``fast.int8.int8_matmul`` multiplies int8 matrices on ``device``:

    "int_mm":     ``torch._int_mm`` (CUDA; a CPU with VNNI/AMX int8 dot products),
    "fp32_exact": the int8 values as float32 in K-chunks of 1024, each chunk's sums exact in float32
                  (|sum| <= 1024 * 128 * 128 = 2**24), added up in int32: the same int32 result.
                  Converting the int8 operands each call makes it 0.4-0.7x a float32 GEMM on
                  ready float32 weights (benchmarks/results/INT8.md), yet on an AVX2-only CPU
                  ``_int_mm`` at M=8, 4096^2 takes ~380 ms (0.7 GOP/s, FACTS.md): ~20x slower.
    """
    if _device_type(device) == "cuda":
        return "int_mm"
    # called for every int8 GEMM: only the int8 answer (cached CPU facts + the override), not the
    # whole hardware() record with its CUDA and thread queries
    flags, capability, _, _ = _static_facts()
    return "int_mm" if _native_int8(flags, capability)[0] else "fp32_exact"


def matmul_peak_size(device=None, dtype=torch.float32) -> int:
    """n of the square matmul-peak GEMM: 2048 on CUDA; on a CPU 1024 (512 for float64, whose GEMM
    is ~2x slower): large enough to reach the BLAS peak, ~0.1 s per call."""
    if _device_type(device) == "cuda":
        return 2048
    return 512 if dtype == torch.float64 else 1024


def matmul_peak_case(device=None, dtype=torch.float32, n: int | None = None):
    """The matmul-peak workload -> (run, flops): ``run()`` multiplies two random (n, n) matrices
    once with ``torch.mm`` on ``device`` in ``dtype`` and waits for the result (CUDA
    synchronize); ``flops`` = 2 n^3 per call. The inputs come from their own generator, so the
    caller's RNG stream is untouched. ``benchmarks/matmul_peak.py`` times the same ``run``."""
    device = torch.device(device if device is not None else "cpu")
    n = matmul_peak_size(device, dtype) if n is None else n
    g = torch.Generator(device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run() -> None:
        torch.mm(a, b)
        sync()

    return run, 2 * n**3


def matmul_peak_flops(device=None, dtype=torch.float32, rounds: int = 5) -> float:
    """Peak-ish FLOP/s of ``device`` in ``dtype`` for an MFU estimate: the fastest of ``rounds``
    timed calls of ``matmul_peak_case`` after one warm-up (a peak is a maximum; single timings
    catch clock ramp-up and other work)."""
    run, flops = matmul_peak_case(device, dtype)
    run()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return flops / best


_warned: set[str] = set()


def warn(message: str) -> None:
    """One line on stderr, once per message per process."""
    if message not in _warned:
        _warned.add(message)
        print(f"myllm101: warning: {message}", file=sys.stderr, flush=True)
