"""Symmetric int8 quantization in PyTorch, with a real int8 x int8 -> int32 matmul.

Same format as the reference: scale = max|v| / 127 (1 for an all-zero group), q = clip(round(v /
scale), -127, 127); per tensor (), per output channel (out,), per token (N, 1); |v - q * scale| <=
scale / 2. ``int8_matmul`` picks its backend by what the machine does fast (``device.py``):

- ``torch._int_mm`` (int8 GEMM accumulating in int32) on CUDA and on CPUs with VNNI/AMX int8 dot
  products, where it is ~7x faster than a float32 GEMM of the same shape;
- elsewhere (an AVX2-only CPU, where ``_int_mm`` is slower than float32), the int8 values as
  float32 in K-chunks of 1024: every partial sum is an integer of magnitude <= 1024 * 128 * 128 =
  2**24, so float32 holds it exactly in any summation order, and the chunks add up in int32.

Both give the same int32 result. Plain ``@`` on int8 tensors would accumulate in int8 and overflow;
a CUDA shape ``_int_mm`` refuses multiplies in float64 (exact: partial sums stay below 2**53).

Dispatch: when ``myllm101.kernels.use_kernel`` says so (CUDA tensors and triton, or
``MYLLM101_KERNELS=on`` / ``kernels="on"``), ``int8_matmul`` runs the Triton GEMM of
``kernels/int8_matmul.py`` (any shape, no _int_mm limits) and ``w8a8_linear`` its fused variant
that rescales in the epilogue (float16/bfloat16/float32 activations; float64 stays here).

``Int8Linear`` on CPU float32 inference runs the kernel ``device.int8_linear_kernel`` names, on a
weight layout prepared once (``prepare_int8_weight``), each keeping its mode's semantics exactly:
weight_only "fbgemm_fp16" (the codes as exact fp16 in fbgemm's packed GEMM, float32 activations
and sums, scale after), w8a8 "fbgemm_int8" (fbgemm's dynamic int8 linear with its activation
quantization pinned to scale 1 / zero point 128: exact on VNNI), "int_mm", "fbgemm_fp16_exact"
(codes in fp16, K-chunks of 1024: exact without int8 dot products) or "fp32_exact". Speed vs a
float32 ``F.linear`` of the same shape (M rows x (out, in), weights rotated through >= 64 MB so they
come from memory as in decode; 1 thread, 10th-percentile time on a shared 2-core AMD EPYC; "AVX2"
= the same CPU under ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2,
faithful for fbgemm and ATen kernels, not for ``_int_mm``, which a real AVX2 CPU runs ~20x slower
than float32 (FACTS.md) but this capped oneDNN only ~2-3x; torch.ao = its dynamic int8 Linear):

    shape (M)      | weight-only         | w8a8                           | torch.ao
                   | dequant  fbgemm_fp16| int_mm  fbgemm_int8  fp16_exact| dynamic
    AVX-512 VNNI   |                     |                                |
    576x576 (1)    | 0.10     2.4        | 1.5     1.2          1.1       | 2.9
    576x576 (8)    | 1.1      2.0        | 1.8     1.5          1.2       | 3.4
    192x576 (1)    | 0.9      1.5        | 0.95    0.5          0.5       | 1.5
    1536x576 (1)   | 1.3      3.4        | 1.9     2.4          2.1       | 4.3
    576x1536 (8)   | 0.9      2.0        | 2.0     2.6          1.2       | 4.8
    2048x2048 (1)  | 0.07     2.6        | 1.4     3.6          2.1       | 4.7
    2048x2048 (8)  | 0.17     2.7        | 2.7     6.5          2.1       | 8.7
    2048^2 (128)   | 0.7      1.1        | 5.0     4.7          0.9       | 12
    AVX2 (capped)  |                     |                                |
    576x576 (1)    | 0.10     2.4        | (0.4)   not exact    1.2       | 2.1
    1536x576 (1)   | 1.2      3.1        | (0.4)   not exact    2.1       | 3.5
    576x1536 (8)   | 0.9      2.1        | (0.5)   not exact    1.2       | 3.5

Memory: "fbgemm_fp16" reads 2 bytes per weight at run time (the packed fp16 copy, kept beside the
int8 buffers that are saved), so weight-only int8 halves the bytes decode streams against float32,
not quarters them; the checkpoint on disk is int8. The w8a8 kernels read 1 byte per weight.
torch._weight_int8pack_mm (weight-only) ran at 0.01-0.4x float32 everywhere and is never picked
eagerly; compiled graphs use it (``int8_linear_bf16_activations``), as Inductor replaces it by a
generated GEMM that reads 1 byte per weight.
torch.ao's kernel stays ahead (it quantizes activations per tensor in C++, a different W8A8);
ours pays ~10-20 us of per-token quantization in Python per call.
"""

from __future__ import annotations

import itertools
import warnings
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from myllm101.checks import (
    QMAX,
    check_int8_linear,
    check_int8_operands,
    check_int8_scale,
    expect_dtype,
    expect_float,
    expect_ndim,
)
from myllm101.checks.quant import check_int8_table
from myllm101.device import int8_linear_kernel, int8_matmul_backend
from myllm101.fast.embedding import check_ids
from myllm101.kernels.dispatch import kernel_supports, use_kernel

EXACT_FP32_K = 1024  # int8 products <= 128 * 128 = 2**14, so a 1024-long float32 sum is exact
MODES = ("weight_only", "w8a8")


def _quantize(v: torch.Tensor, absmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q = clip(round(v / scale), -127, 127) with scale = absmax / 127 (1 where absmax is 0)."""
    codes, scale = _codes(v, absmax)
    return codes.to(torch.int8), scale


def _codes(v: torch.Tensor, absmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``_quantize``'s codes still in v's float dtype (integers in [-127, 127]), and the scale."""
    scale = torch.where(absmax > 0, absmax / QMAX, torch.ones_like(absmax))
    return torch.round(v / scale).clamp_(-QMAX, QMAX), scale


@torch.no_grad()
def quantize_per_tensor(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w: any float tensor -> (q: int8 like w, scale: () in w's dtype)."""
    expect_float("w", w)
    absmax = w.abs().amax() if w.numel() else w.new_zeros(())
    return _quantize(w, absmax)


@torch.no_grad()
def quantize_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w: (out, in) -> (q: (out, in) int8, scale: (out,)): one scale per output channel (row)."""
    expect_float("w", w)
    expect_ndim("w", w, 2)
    q, scale = _quantize(w, _row_absmax(w))
    return q, scale[:, 0]


@torch.no_grad()
def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x: (N, K) -> (q: (N, K) int8, scale: (N, 1)): one scale per token (row)."""
    expect_float("x", x)
    expect_ndim("x", x, 2)
    return _quantize(x, _row_absmax(x))


def _row_absmax(v: torch.Tensor) -> torch.Tensor:
    """(R, C) -> (R, 1); 0 for rows with no columns."""
    if v.shape[1] == 0:
        return v.new_zeros(v.shape[0], 1)
    return v.abs().amax(dim=1, keepdim=True)


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """q: int8 (rows, ...) with scale (), (rows,) or (rows, 1) -> q * scale in scale's dtype."""
    expect_dtype("q", q, ("int8",))
    check_int8_scale(q, scale)
    scale = scale[:, None] if scale.ndim == 1 else scale  # per row: (rows,) -> (rows, 1)
    return q.to(scale.dtype) * scale


def _int_mm_ok(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether torch._int_mm takes (M, K) @ (K, N) here (CUDA needs M > 16 and K, N % 8 == 0)."""
    if not hasattr(torch, "_int_mm"):
        return False
    if a.device.type == "cpu":
        return True
    M, K = a.shape
    N = b.shape[0]
    return a.device.type == "cuda" and M > 16 and K % 8 == 0 and N % 8 == 0


def _row_major(t: torch.Tensor) -> torch.Tensor:
    """t (R, C) with strides exactly (C, 1). ``.contiguous()`` is not enough: torch calls a (1, N)
    tensor with strides (1, 1) contiguous, and CPU ``_int_mm`` then reads it with leading dimension
    1 and returns garbage (seen in torch 2.13 for b of shape (N, 1))."""
    if t.stride() == (t.shape[1], 1):
        return t
    return torch.empty(t.shape, dtype=t.dtype, device=t.device).copy_(t)


def int8_matmul(a: torch.Tensor, b: torch.Tensor, kernels: str | None = None) -> torch.Tensor:
    """a: (M, K) int8, b: (N, K) int8 -> a @ b.T: (M, N) int32, exact. ``kernels``: auto|on|off."""
    check_int8_operands(a, b)
    if use_kernel(a, b, kernels=kernels):
        from myllm101.kernels.int8_matmul import int8_matmul as int8_matmul_kernel

        return int8_matmul_kernel(a, b)
    backend = int8_matmul_backend(a.device)
    if backend == "int_mm" and _int_mm_ok(a, b):
        # a dense (K, N) operand is ~1.5x faster than the transposed view on CPU
        return torch._int_mm(_row_major(a), _row_major(b.t()))
    if backend == "fp32_exact":
        return int8_matmul_fp32_exact(a, b)
    return (a.to(torch.float64) @ b.to(torch.float64).t()).to(torch.int32)


def int8_matmul_fp32_exact(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (M, K) int8 @ b (N, K).T -> (M, N) int32, exactly, through float32 GEMMs over K-chunks of
    1024 (see the module docstring); the backend for CPUs without int8 dot products."""
    M, K = a.shape
    out = torch.zeros(M, b.shape[0], dtype=torch.int32, device=a.device)
    for k0 in range(0, K, EXACT_FP32_K):
        a_k, b_k = a[:, k0 : k0 + EXACT_FP32_K].float(), b[:, k0 : k0 + EXACT_FP32_K].float()
        out += F.linear(a_k, b_k).to(torch.int32)  # exact integers in float32
    return out


def int8_linear(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, b=None) -> torch.Tensor:
    """Weight-only int8: x (..., in) @ dequantize(w_q, w_scale).T + b -> (..., out) in x's dtype.

    Autograd gives dx = dy @ dequantized weight: the straight-through gradient of the reference.
    """
    check_int8_linear(x, w_q, w_scale, b)
    w = dequantize(w_q, w_scale).to(x.dtype)  # (out, in)
    return F.linear(x, w, None if b is None else b.to(x.dtype))


@torch.no_grad()
def w8a8_linear(
    x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, b=None, kernels: str | None = None
) -> torch.Tensor:
    """Per-token int8 activations times int8 weights, int32 accumulate, rescale: (..., out).

    Inference only (rounding has no useful gradient). ``kernels``: "auto" | "on" | "off".
    """
    check_int8_linear(x, w_q, w_scale, b)
    x2 = x.reshape(-1, x.shape[-1])  # (N, in)
    x_q, x_scale = quantize_per_token(x2)  # (N, in) int8, (N, 1)
    if kernel_supports(x) and use_kernel(x_q, w_q, kernels=kernels):
        from myllm101.kernels.int8_matmul import int8_linear_rescale

        bias = None if b is None else b.to(x.dtype)
        y = int8_linear_rescale(x_q, x_scale, w_q, w_scale.to(x.dtype), bias)  # fused epilogue
        return y.reshape(*x.shape[:-1], w_q.shape[0])
    acc = int8_matmul(x_q, w_q, kernels=kernels)  # (N, out) int32
    y = acc.to(x.dtype) * (x_scale * w_scale.to(x.dtype))  # (N, out)
    if b is not None:
        y = y + b.to(x.dtype)
    return y.reshape(*x.shape[:-1], w_q.shape[0])


# ---- Int8Linear's CPU kernels: a weight layout prepared once, then one call per forward ----


def prepare_int8_weight(kernel: str, w_q: torch.Tensor) -> object:
    """The layout ``kernel`` (``device.INT8_KERNELS``) reads, built once from w_q (out, in) int8.
    Scales stay outside: every kernel multiplies by them after its sum, as the reference does."""
    if kernel == "fbgemm_fp16":  # |q| <= 127 is exact in float16: fbgemm's packed fp16 B
        return torch.ops.quantized.linear_prepack_fp16(w_q.float(), None)
    if kernel == "fbgemm_fp16_exact":  # one packed B per K-chunk: each chunk's sums exact
        chunks = range(0, w_q.shape[1], EXACT_FP32_K)
        return [
            torch.ops.quantized.linear_prepack_fp16(w_q[:, k : k + EXACT_FP32_K].float(), None)
            for k in chunks
        ]
    if kernel == "fbgemm_int8":
        return _fbgemm_int8_prepack(w_q)
    if kernel == "int_mm":  # the dense (in, out) operand _int_mm reads fastest
        return _row_major(w_q.t())
    return None  # fp32_exact, int8pack: read w_q as it is


def _fbgemm_int8_prepack(w_q: torch.Tensor) -> object:
    """fbgemm's packed int8 B for (out, in + 2): w_q and two zero columns (see int8_linear_packed),
    scale 1 and zero point 0, so fbgemm returns the int32 sums as float32."""
    out_features = w_q.shape[0]
    padded = F.pad(w_q, (0, 2))  # (out, in + 2)
    ones = torch.ones(out_features, dtype=torch.float64)
    zeros = torch.zeros(out_features, dtype=torch.long)
    with warnings.catch_warnings():  # torch 2.13 warns that quantized tensors are deprecated
        warnings.simplefilter("ignore", UserWarning)
        qw = torch._make_per_channel_quantized_tensor(padded, ones, zeros, 0)
    return torch.ops.quantized.linear_prepack(qw, None)


def _int8_sums(kernel: str, packed: object, x_q: torch.Tensor, w_q: torch.Tensor) -> torch.Tensor:
    """Exact sum_k x_q[n, k] * w_q[o, k] -> (N, out), as float32 (rounded once, like int32 -> f32)."""
    if kernel == "int_mm":
        return torch._int_mm(x_q, packed).float()
    if kernel == "fp32_exact":
        return int8_matmul_fp32_exact(x_q, w_q).float()
    if kernel == "fbgemm_fp16_exact":
        x_f = x_q.float()
        parts = [
            torch.ops.quantized.linear_dynamic_fp16(
                x_f[:, i * EXACT_FP32_K : (i + 1) * EXACT_FP32_K], p
            )
            for i, p in enumerate(packed)
        ]  # each an exact integer <= 2**24 in float32
        if len(parts) == 1:
            return parts[0]
        return torch.stack(parts).double().sum(0).float()  # exact in float64, then one rounding
    # fbgemm_int8: fbgemm quantizes its float input per tensor, asymmetric uint8 with
    # scale = (max - min) / 255. Two padding columns holding -128 and 127 (times zero weights) make
    # max - min = 255: scale 1, zero point 128, so its uint8 is exactly x_q + 128 and its int32 sum
    # (minus the zero point's share) exactly ours. Exact only without int16 saturation (VNNI).
    x_p = F.pad(x_q, (0, 2))  # (N, in + 2) float codes
    x_p[0, -2:] = _FBGEMM_RANGE
    return torch.ops.quantized.linear_dynamic(x_p, packed, False)


_FBGEMM_RANGE = torch.tensor([-128.0, 127.0])  # the padding pair: max - min = 255


def int8_linear_packed(
    x2: torch.Tensor, kernel: str, packed: object, w_q: torch.Tensor, w_scale: torch.Tensor, b=None
) -> torch.Tensor:
    """Int8Linear's CPU forward: x2 (N, in) float32 -> (N, out) float32 with ``kernel``'s
    ``packed`` weight (``prepare_int8_weight``). weight_only kernels: x2 @ (w_q * w_scale).T + b;
    w8a8 kernels: the same exact int32 sums and rescale as ``w8a8_linear``."""
    scale = w_scale if w_scale.dtype == x2.dtype else w_scale.to(x2.dtype)
    if kernel == "fbgemm_fp16":
        y = torch.ops.quantized.linear_dynamic_fp16(x2, packed).mul_(scale)  # (N, out)
    elif kernel == "int8pack":
        y = torch._weight_int8pack_mm(x2.contiguous(), w_q, scale.expand(w_q.shape[0]).contiguous())
    else:  # quantize_per_token's codes: int8, except fbgemm_int8 which takes them as float
        x_q, x_scale = _codes(x2, _row_absmax(x2))  # (N, in) float32 codes, (N, 1)
        x_q = x_q if kernel == "fbgemm_int8" else x_q.to(torch.int8)
        y = _int8_sums(kernel, packed, x_q, w_q) * (x_scale * scale)
    return y if b is None else y + b.to(x2.dtype)


# ---- Int8Linear inside torch.compile --------------------------------------------------------
#
# fbgemm's packed weights are Python objects a compiled graph cannot hold, and without them a
# compiled Int8Linear falls back to the generic path, which Inductor's freezing turns into a float32
# weight (4 bytes per weight read, not 2; SmolLM2 int8 decoded at 27 tokens/s compiled, 57 eager).
# So a compiled graph calls the packed kernel as one opaque custom op naming its module by a
# handle; ``register_for_compile`` (fast/compiled_decode.py calls it before compiling) hands
# them out, outside the traced code.

_COMPILE_HANDLES: dict[int, weakref.ref] = {}  # handle -> the Int8Linear it names
_NEXT_HANDLE = itertools.count()


@torch.library.custom_op(
    "myllm101::int8_linear_packed",
    mutates_args=(),
    schema="(Tensor x2, str kernel, int handle, int out_features) -> Tensor",
)
def int8_linear_packed_op(x2: torch.Tensor, kernel: str, handle: int, out_features: int):
    """``int8_linear_packed`` of the Int8Linear ``handle`` names, with its own packed weight,
    scale and bias: x2 (N, in) float32 -> (N, out_features)."""
    module = _COMPILE_HANDLES[handle]()
    if module is None:
        raise RuntimeError(f"int8_linear_packed: the Int8Linear of handle {handle} is gone")
    buffers = module._buffers
    args = (buffers["weight_q"], buffers["weight_scale"], buffers["bias"])
    return int8_linear_packed(x2, kernel, module.packed_weight(kernel), *args)


@int8_linear_packed_op.register_fake
def _(x2: torch.Tensor, kernel: str, handle: int, out_features: int):
    return x2.new_empty(x2.shape[0], out_features)


def int8_linear_bf16_activations(
    x2: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, b=None
) -> torch.Tensor:
    """Weight-only int8 for a compiled CPU graph: x2 (N, in) float32 -> (N, out) float32.

    x2 is rounded to bfloat16 and multiplied by the int8 codes with float32 sums, which the op
    rounds to bfloat16; the float32 scale and bias apply after. Each rounding is relative 2**-9,
    as in bf16 inference. ``torch._weight_int8pack_mm`` (ATen's kernel is slow) exists here for
    Inductor: with ``max_autotune`` it generates a C++ GEMM for the shape, which reads the codes at
    1 byte per weight (fbgemm's fp16 kernel reads 2). Its vectorised micro-kernels take bf16 (not
    float32) activations, on AVX-512 and on AVX2, so the activations are rounded first.
    """
    if w_q.shape[1] % BF16_ACTIVATIONS_K:
        raise ValueError(
            f"int8_linear_bf16_activations: in_features must be a multiple of "
            f"{BF16_ACTIVATIONS_K}, got weight_q of shape {tuple(w_q.shape)}"
        )
    ones = torch.ones(w_q.shape[0], dtype=torch.bfloat16, device=x2.device)  # scales go after
    y = torch._weight_int8pack_mm(x2.to(torch.bfloat16), w_q, ones).to(x2.dtype)
    y = y * w_scale.to(x2.dtype)
    return y if b is None else y + b.to(x2.dtype)


BF16_ACTIVATIONS = "bf16_activations"  # the compile-only kernel name of the function above
# ATen's CPU _weight_int8pack_mm reads K in blocks of 16 on AVX-512 (8 on AVX2) and, given
# another K, returned garbage or crashed the process (torch 2.13): such layers keep fbgemm
BF16_ACTIVATIONS_K = 16


def register_for_compile(model: nn.Module, bf16_activations: bool = False) -> None:
    """Prepare every Int8Linear of ``model`` for a compiled forward: one that runs a packed CPU
    kernel gets a handle (kept while the module lives; a copy gets its own) and its kernel, which
    the compiled forward calls through ``int8_linear_packed_op``; the others keep
    ``_compile_handle`` None. With ``bf16_activations``, weight-only layers on CPU run
    ``int8_linear_bf16_activations`` instead (no handle): what Inductor's autotuning makes fast."""
    for module in model.modules():
        if type(module) is not Int8Linear:
            continue
        probe = torch.zeros(1, module.in_features, device=module.weight_q.device)
        with torch.inference_mode():
            kernel = module.cpu_kernel(probe)
        handle = module._compile_handle
        if (
            kernel is not None
            and bf16_activations
            and module.mode == "weight_only"
            and module.in_features % BF16_ACTIVATIONS_K == 0
        ):
            module._compile_handle = None
            module._compile_kernel = BF16_ACTIVATIONS
            continue
        if kernel is None:
            module._compile_handle = None
        elif handle is None or _COMPILE_HANDLES.get(handle, lambda: None)() is not module:
            module._compile_handle = handle = next(_NEXT_HANDLE)
            _COMPILE_HANDLES[handle] = weakref.ref(module, lambda _, h=handle: _drop(h))
        module._compile_kernel = kernel


def _drop(handle: int) -> None:
    _COMPILE_HANDLES.pop(handle, None)


class Int8Linear(nn.Module):
    """A linear layer whose weight is stored as int8 (buffers ``weight_q``, ``weight_scale``).

    mode "weight_only": dequantize the weight, float GEMM (saves memory, keeps activations exact).
    mode "w8a8": quantize activations per token too and run the GEMM in int8 (saves compute).

    On CPU float32 inference the kernel is ``device.int8_linear_kernel(mode)``; its weight layout
    (``prepare_int8_weight``) is built on first use and cached outside the state_dict, keyed by the
    weight's storage and version, so ``load_state_dict`` or any in-place change rebuilds it.
    """

    def __init__(
        self,
        weight_q: torch.Tensor,
        weight_scale: torch.Tensor,
        bias: torch.Tensor | None = None,
        mode: str = "weight_only",
        kernels: str | None = None,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        expect_dtype("weight_q", weight_q, ("int8",))
        expect_ndim("weight_q", weight_q, 2)
        self.out_features, self.in_features = weight_q.shape
        self.mode = mode
        self.kernels = kernels  # w8a8 only; None: follow $MYLLM101_KERNELS
        self.register_buffer("weight_q", weight_q)  # (out, in) int8
        self.register_buffer("weight_scale", weight_scale)  # () or (out,)
        self.register_buffer("bias", bias)  # (out,) or None
        self._packed: tuple[tuple, object] | None = None  # (key, layout): derived, never saved
        self._compile_handle: int | None = None  # register_for_compile's; None: not registered
        self._compile_kernel: str | None = None

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, mode: str = "weight_only", per_channel: bool = True):
        """Quantize a trained ``nn.Linear`` (per output channel by default: one outlier row does
        not inflate every other row's step)."""
        w = linear.weight.detach()
        q, scale = quantize_per_channel(w) if per_channel else quantize_per_tensor(w)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(q, scale, bias, mode)

    def cpu_kernel(self, x: torch.Tensor) -> str | None:
        """The packed CPU kernel for ``x``, or None for the generic path of the mode (float64,
        autograd, autocast, torch.compile, CUDA, Triton forced, empty input)."""
        if x.device.type != "cpu" or x.dtype != torch.float32 or x.numel() == 0:
            return None
        if self._buffers["weight_q"].device.type != "cpu" or torch.is_autocast_enabled("cpu"):
            return None
        if torch.compiler.is_compiling():
            return None
        if self.mode == "weight_only" and torch.is_grad_enabled() and x.requires_grad:
            return None  # the generic path keeps the straight-through gradient
        if self.mode == "w8a8" and use_kernel(x, kernels=self.kernels):
            return None
        kernel = int8_linear_kernel(self.mode, "cpu").value
        return None if kernel == "dequantize" else kernel

    def packed_weight(self, kernel: str) -> object:
        """``prepare_int8_weight(kernel, weight_q)``, built once per weight version."""
        q = self._buffers["weight_q"]  # (a plain dict lookup: this runs on every call)
        key = (kernel, q.data_ptr(), q._version, tuple(q.shape))
        if self._packed is None or self._packed[0] != key:
            x = torch.zeros(1, self.in_features, dtype=self.weight_scale.dtype)  # shape stand-in
            check_int8_linear(x, q, self.weight_scale, self.bias)  # the weights, once per version
            self._packed = (key, prepare_int8_weight(kernel, q))
        return self._packed[1]

    def _load_from_state_dict(self, *args, **kwargs):
        self._packed = None  # new weights: the layouts derived from the old ones go
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_packed"] = None  # fbgemm's packed objects are rebuilt, not pickled
        state["_compile_handle"] = None  # a handle names this module, never a copy
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._compile_kernel is not None and torch.compiler.is_compiling():
            y = self._compiled_forward(x)
            if y is not None:
                return y
        kernel = self.cpu_kernel(x)  # every call: the choice depends on x, grad mode, env
        if kernel is not None:
            if self._packed is None or x.shape[-1] != self.in_features:
                check_int8_linear(x, self.weight_q, self.weight_scale, self.bias)
            packed = self.packed_weight(kernel)  # its rebuild checks the new weights
            x2 = x.reshape(-1, self.in_features)  # (N, in)
            buffers = self._buffers
            args = (buffers["weight_q"], buffers["weight_scale"], buffers["bias"])
            if torch.is_grad_enabled():  # decode runs under inference_mode: skip the context
                with torch.no_grad():
                    y = int8_linear_packed(x2, kernel, packed, *args)
            else:
                y = int8_linear_packed(x2, kernel, packed, *args)
            return y.reshape(*x.shape[:-1], self.out_features)
        if self.mode == "w8a8":
            return w8a8_linear(x, self.weight_q, self.weight_scale, self.bias, self.kernels)
        return int8_linear(x, self.weight_q, self.weight_scale, self.bias)

    def _compiled_forward(self, x: torch.Tensor) -> torch.Tensor | None:
        """What a compiled graph runs for the kernel ``register_for_compile`` chose, or None for
        the generic path (another dtype or device, or a gradient to keep)."""
        if x.dtype != torch.float32 or x.device.type != "cpu":
            return None
        x2 = x.reshape(-1, self.in_features)  # (N, in)
        if self._compile_kernel == BF16_ACTIVATIONS:
            if torch.is_grad_enabled() and x.requires_grad:
                return None  # the op has no derivative: the generic path keeps the gradient
            buffers = self._buffers
            args = (buffers["weight_q"], buffers["weight_scale"], buffers["bias"])
            y = int8_linear_bf16_activations(x2, *args)
        elif self._compile_handle is not None:  # the packed kernel, as one opaque op
            y = int8_linear_packed_op(x2, self._compile_kernel, self._compile_handle,
                                      self.out_features)  # fmt: skip
        else:
            return None
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        per = "channel" if self.weight_scale.ndim else "tensor"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"mode={self.mode}, per_{per}"
        )


class Int8Embedding(nn.Module):
    """An embedding table stored as int8 rows, one scale per row (buffers ``weight_q`` (V, C),
    ``weight_scale`` (V,)): ids (...) -> (..., C) in the scale's dtype, only the looked-up rows
    expanded (reference: ``int8_embedding_forward``).

    ``tied_to(head)`` shares a tied LM head's buffers: the head's per-output-channel codes are the
    table's per-row codes, so the checkpoint stores one int8 copy for both (as the float model
    stores one Parameter). Inference only.
    """

    def __init__(self, weight_q: torch.Tensor, weight_scale: torch.Tensor):
        super().__init__()
        check_int8_table(weight_q, weight_scale)
        self.num_embeddings, self.embedding_dim = weight_q.shape
        self.register_buffer("weight_q", weight_q)  # (V, C) int8
        self.register_buffer("weight_scale", weight_scale)  # (V,)

    @classmethod
    def tied_to(cls, head: Int8Linear) -> Int8Embedding:
        """The embedding whose rows are ``head``'s output channels (the same tensors, not copies)."""
        if head.weight_scale.ndim != 1:
            raise ValueError(
                "head: a tied embedding needs one scale per output channel (per_channel=True), "
                f"got weight_scale of shape {tuple(head.weight_scale.shape)}"
            )
        return cls(head.weight_q, head.weight_scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        check_ids(ids, self.num_embeddings)
        rows = self.weight_q[ids].to(self.weight_scale.dtype)  # (..., C)
        return rows * self.weight_scale[ids].unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 per row"
