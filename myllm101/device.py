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
    int4_matmul_backend(dev, rows)  -> "int4pack" | "dequantize" (MYLLM101_INT4_KERNEL forces one)
    int8_linear_kernel(mode, dev)   -> Choice(kernel of fast.int8.Int8Linear for "weight_only" | "w8a8")
    matmul_peak_flops(dev, dtype)   -> FLOP/s of a square torch.mm: the MFU denominator

Forcing a branch (tests, or a user who knows better): ``MYLLM101_NATIVE_BF16=0|1`` and
``MYLLM101_NATIVE_INT8=0|1`` override what the CPU queries say. ``MYLLM101_INT8_KERNEL=name``
forces one ``Int8Linear`` kernel by name (``INT8_KERNELS``; a mode that lacks the name keeps its own
choice): e.g. ``dequantize`` or ``fbgemm_fp16`` for weight_only, ``int_mm``, ``fp32_exact``,
``fbgemm_fp16_exact`` or ``fbgemm_int8`` for w8a8.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

BF16_ENV, INT8_ENV = "MYLLM101_NATIVE_BF16", "MYLLM101_NATIVE_INT8"
# torch.backends.cpu.get_cpu_capability() values whose kernels use AVX-512 (the bf16/VNNI paths)
_AVX512_CAPABILITIES = ("AVX512", "AVX512_BF16", "AVX512_VNNI", "AMX")
# environment variables that make torch / oneDNN use fewer CPU features than the CPU has (they
# emulate an older CPU: a report made under them says so)
_LIMIT_ENVS = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "FBGEMM_ENABLE_INSTRUCTIONS",  # fbgemm (quantized / fp16-packed linears) ignores the others
)


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


KERNEL_ENV = "MYLLM101_INT8_KERNEL"
# every kernel fast.int8.Int8Linear can run, per mode; each keeps its mode's semantics exactly
INT8_KERNELS = {
    "weight_only": ("dequantize", "fbgemm_fp16", "int8pack"),
    "w8a8": ("int_mm", "fp32_exact", "fbgemm_fp16_exact", "fbgemm_int8"),
}


def _fbgemm_available() -> bool:
    """fbgemm (x86 CPUs) runs torch's quantized and fp16-packed linears."""
    return "fbgemm" in torch.backends.quantized.supported_engines


@functools.cache
def _fbgemm_int8_exact() -> bool:
    """Does fbgemm's uint8 x int8 GEMM sum in int32 without saturating here? With VNNI (vpdpbusd)
    it does; its AVX2 kernel adds pairs of u8*s8 products in int16 (vpmaddubsw) and clips them.
    Asked of fbgemm itself: 255 * 127 + 255 * 127 = 64770 clips to 32767 without VNNI."""
    if not _fbgemm_available():
        return False
    try:
        q = torch.full((1, 4), 127, dtype=torch.int8)  # (out, in + 2 padding columns)
        q[0, 2:] = 0
        zero = torch.zeros(1, dtype=torch.long)
        with warnings.catch_warnings():  # torch 2.13 warns that quantized tensors are deprecated
            warnings.simplefilter("ignore", UserWarning)
            qw = torch._make_per_channel_quantized_tensor(q, torch.ones(1).double(), zero, 0)
        x = torch.tensor([[127.0, 127.0, -128.0, 127.0]])  # uint8 = x + 128: 255, 255
        y = torch.ops.quantized.linear_dynamic(
            x, torch.ops.quantized.linear_prepack(qw, None), False
        )
        return float(y[0, 0]) == 2 * 127 * 127
    except Exception:  # an engine that refuses: not exact as far as we know
        return False


def int8_linear_kernel(mode: str, device=None) -> Choice:
    """The kernel ``fast.int8.Int8Linear`` runs for ``mode`` on float32 CPU inputs (anything else:
    float64, autograd, autocast, CUDA, takes the generic path of its mode). Measured with SmolLM2's
    decode shapes (fast/int8.py's docstring has the table):

    weight_only (x @ (q * scale).T in float):
      "fbgemm_fp16": q stored as float16 (exact: |q| <= 127) in fbgemm's packed layout, float32
                     activations and sums, times scale after: 1.5-3x float32 at M=1..8 on both CPU
                     kinds (half the bytes of a float32 weight). Where fbgemm exists (x86).
      "dequantize":  q * scale as a float weight each call, then F.linear (anywhere else);
      "int8pack":    ``torch._weight_int8pack_mm``: never picked, ~0.1x float32 here.
    w8a8 (per-token int8 activations, exact int32 sums):
      "fbgemm_int8":       fbgemm's dynamic int8 linear, its activation quantization made exact
                           (see fast/int8.py): ~2x ``_int_mm``, where fbgemm sums without
                           saturating (VNNI; asked of fbgemm by a probe, ``_fbgemm_int8_exact``);
      "int_mm":            ``torch._int_mm`` where the CPU has int8 dot products but fbgemm does
                           not use them (and on CUDA);
      "fbgemm_fp16_exact": the codes as float16 / float32 through fbgemm's fp16 GEMM in K-chunks
                           of 1024 (every partial sum an integer <= 2**24: exact) on CPUs without
                           int8 dot products, where ``_int_mm`` is ~20x slower than float32;
      "fp32_exact":        the same with float32 GEMMs on int8 converted each call (no fbgemm).
    ``MYLLM101_INT8_KERNEL=name`` forces a kernel of ``INT8_KERNELS[mode]``.
    """
    env = os.environ.get(KERNEL_ENV, ""), os.environ.get(INT8_ENV, "")
    return _int8_linear_kernel(mode, _device_type(device), *env)


@functools.lru_cache(maxsize=64)
def _int8_linear_kernel(mode: str, device_type: str, forced: str, native_int8: str) -> Choice:
    """``int8_linear_kernel``, decided once per mode, device type and value of the two variables
    that change it (every Int8Linear call asks; the CPU facts it reads are fixed per process)."""
    del native_int8  # only a cache key: int8_matmul_backend reads the variable itself
    if mode not in INT8_KERNELS:
        raise ValueError(f"mode: expected one of {tuple(INT8_KERNELS)}, got {mode!r}")
    forced = forced.strip().lower()
    if forced:
        every = sorted({k for names in INT8_KERNELS.values() for k in names})
        if forced not in every:
            raise ValueError(f"{KERNEL_ENV}: expected one of {', '.join(every)}, got {forced!r}")
        if forced in INT8_KERNELS[mode]:
            return Choice(forced, f"forced by {KERNEL_ENV}={forced}")
    if device_type == "cuda":
        kernel = "dequantize" if mode == "weight_only" else "int_mm"
        return Choice(kernel, "CUDA: F.linear / torch._int_mm (or the Triton kernels)")
    fbgemm = _fbgemm_available()
    if mode == "weight_only":
        if fbgemm:
            return Choice("fbgemm_fp16", "fbgemm: int8 codes as exact fp16, half the bytes of fp32")
        return Choice("dequantize", "no fbgemm on this CPU: dequantize, then a float32 GEMM")
    if int8_matmul_backend(device_type) == "int_mm":
        if _fbgemm_int8_exact():
            return Choice("fbgemm_int8", "fbgemm sums int8 products exactly (VNNI) and fastest")
        return Choice("int_mm", "int8 dot products, but fbgemm's int8 GEMM would saturate here")
    if fbgemm:
        return Choice("fbgemm_fp16_exact", "no int8 dot products: exact fp16-stored codes")
    return Choice("fp32_exact", "no int8 dot products and no fbgemm: exact float32 chunks")


INT4_KERNEL_ENV = "MYLLM101_INT4_KERNEL"
INT4_KERNELS = ("int4pack", "dequantize")  # what fast.int4.Int4Linear can run on a CPU


def int4_matmul_backend(device=None, rows: int = 1) -> str:
    """How ``fast.int4.Int4Linear`` multiplies ``rows`` activation rows by its int4 weight on
    ``device`` (float32 / bfloat16 CPU inference; benchmarks/test_int4.py measures both):

    "int4pack":   torch's ``_weight_int4pack_mm_for_cpu`` on bf16 activations, its weight layout
                  converted once from ours. Vectorized for AVX2 and AVX-512 (its float32-activation
                  path is scalar, ~20-100x slower: never used). Measured through Int4Linear, one
                  thread, SmolLM2's 1536x576 / 576x1536 and 2048^2, vs a cache-warm float32
                  F.linear: AVX-512 0.7-1.6x at M = 1, 1.1-2.3x at M = 8, 0.8-1.1x at M = 128;
                  under ATEN_CPU_CAPABILITY=avx2 0.4-0.6x, 0.8-1.5x, 0.5-0.6x; and 1.1-30x faster
                  than the dequantizing fallback everywhere (most at decode).
    "dequantize": q * scale expanded to a float weight on every call, then F.linear: where torch
                  lacks the op, where its kernel is scalar (ATEN_CPU_CAPABILITY=default: 100x+
                  slower at M = 128) and on CUDA (where the Triton kernel usually runs).
    ``rows`` (activation rows per call) is kept for a per-size choice; none is needed so far.

    ``MYLLM101_INT4_KERNEL=int4pack|dequantize`` forces one (where int4pack cannot run the shape,
    fast/int4.py still falls back).
    """
    forced = os.environ.get(INT4_KERNEL_ENV, "").strip().lower()
    if forced:
        if forced not in INT4_KERNELS:
            raise ValueError(
                f"{INT4_KERNEL_ENV}: expected one of {', '.join(INT4_KERNELS)}, got {forced!r}"
            )
        return forced
    if _device_type(device) == "cuda" or not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        return "dequantize"
    capability = _static_facts()[1]
    return "int4pack" if capability in (*_AVX512_CAPABILITIES, "AVX2") else "dequantize"


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
