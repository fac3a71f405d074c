"""Group-wise symmetric int4 weight-only quantization in PyTorch, and ``Int4Linear``.

Same format as ``reference/int4.py``: scale = absmax(group of g input columns) / 7 (1 for an
all-zero group), q = clip(round(w / scale), -8, 7), two codes per byte as q + 8 (column 2j in the
low nibble, 2j + 1 in the high one); |w - q * scale| <= scale / 2.

Where ``Int4Linear`` multiplies (float32 / bfloat16 inference; ``device.int4_matmul_backend``):

- CPU "int4pack": torch's ``_weight_int4pack_mm_for_cpu``. It stores uint4 values u with
  (K / g, N, 2) "scales and zeros" and computes w = (u - 8) * scale + zero, so our codes map to it
  exactly with u = q + 8 and zero = 0 (checked against the dequantized weight in the tests). Its
  layout is built from ours on first use (``refresh()``) and cached outside the state_dict, keyed
  by the buffers' storage and version. Only its bf16-activation path is vectorized, so x, the
  scales and y go through bf16: each product x * q * scale picks up at most 2 * 2**-9 relative
  error and y one more bf16 rounding, ~20x below int4's own step. It needs N % 16 == 0 and g in
  {32, 64, 128, 256}; other shapes take the fallback. Cost of the cache: the converted weight
  (in/2 bytes per row, like ours) and bf16 scales, so ~1 byte per weight in all: 4x below float32.
  Inside fast/compiled_decode.py's graph (``register_for_compile``) the same kernel runs, the
  layout computed in the graph and folded to a constant by Inductor's freezing.
- "dequantize": q * scale expanded to a float weight on every call, then ``F.linear``: the float
  weight lives only during the call (caching it would give the memory saving back). This is also
  the autograd path (dx = dy @ dequantized weight, the straight-through gradient), the float64 and
  float16 path, and the one for shapes int4pack refuses.
- CUDA (or ``MYLLM101_KERNELS=on``): the Triton kernel of ``kernels/int4_matmul.py``, which
  unpacks and scales each tile in registers (``kernels.dispatch.use_kernel``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from myllm101.checks import expect_dtype, expect_ndim
from myllm101.checks.quant import (
    INT4_MAX,
    INT4_MIN,
    check_int4_codes,
    check_int4_linear,
    check_int4_packed,
    check_int4_weight,
)
from myllm101.device import int4_matmul_backend
from myllm101.kernels.dispatch import kernel_supports, use_kernel

ZERO_POINT = 8  # a code q is stored as the nibble q + 8 (0..15)
INT4PACK_GROUPS = (32, 64, 128, 256)  # the group sizes torch's CPU int4 kernel takes
INT4PACK_N_MULTIPLE = 16  # ... and the multiple of out_features it needs


@torch.no_grad()
def quantize_int4(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """w: (out, in) float -> (q: (out, in) int8 in [-7, 7], scale: (out, in // g) in w's dtype)."""
    check_int4_weight(w, group_size)
    out_f, in_f = w.shape
    groups = w.reshape(out_f, in_f // group_size, group_size)  # (out, G, g)
    absmax = groups.abs().amax(dim=2)  # (out, G)
    scale = torch.where(absmax > 0, absmax / INT4_MAX, torch.ones_like(absmax))  # (out, G)
    q = torch.round(groups / scale[:, :, None]).clamp_(INT4_MIN, INT4_MAX).to(torch.int8)
    return q.reshape(out_f, in_f), scale


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """q: (out, in) int8 in [-8, 7], in even -> packed: (out, in // 2) uint8 (low nibble = even
    column, high nibble = odd column, each q + 8)."""
    check_int4_codes(q)
    u = (q + ZERO_POINT).to(torch.uint8)  # (out, in) in 0..15
    return u[:, 0::2] | (u[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """packed: (out, in // 2) uint8 -> q: (out, in) int8 in [-8, 7]."""
    expect_dtype("packed", packed, ("uint8",))
    expect_ndim("packed", packed, 2)
    nibbles = torch.stack((packed & 0x0F, packed >> 4), dim=-1)  # (out, in // 2, 2): even, odd
    return (nibbles.view(torch.int8) - ZERO_POINT).reshape(packed.shape[0], -1)


def dequantize_int4(packed: torch.Tensor, scale: torch.Tensor, group_size: int) -> torch.Tensor:
    """packed (out, in // 2) uint8, scale (out, in // g) -> w = q * scale: (out, in), scale's dtype."""
    check_int4_packed(packed, scale, group_size)
    q = unpack_int4(packed)  # (out, in)
    out_f, in_f = q.shape
    groups = q.reshape(out_f, in_f // group_size, group_size).to(scale.dtype)  # (out, G, g)
    return (groups * scale[:, :, None]).reshape(out_f, in_f)


def int4_linear(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    group_size: int,
    b: torch.Tensor | None = None,
    kernels: str | None = None,
) -> torch.Tensor:
    """x (..., in) @ dequantize_int4(packed, scale, g).T + b -> (..., out) in x's dtype.

    The Triton kernel when ``use_kernel`` says so (CUDA, or ``kernels="on"``) and no gradient is
    needed; else the dequantizing path, whose autograd gives the straight-through dx.
    """
    check_int4_linear(x, packed, scale, group_size, b)
    needs_grad = torch.is_grad_enabled() and x.requires_grad
    if not needs_grad and kernel_supports(x) and use_kernel(x, packed, kernels=kernels):
        from myllm101.kernels.int4_matmul import int4_linear as int4_linear_kernel

        return int4_linear_kernel(x, packed, scale, group_size, b)
    w = dequantize_int4(packed, scale, group_size).to(x.dtype)  # (out, in), this call only
    return F.linear(x, w, None if b is None else b.to(x.dtype))


# ---- torch's CPU int4 kernel ---------------------------------------------------------------------


def int4pack_supported(out_features: int, group_size: int) -> bool:
    """Whether ``_weight_int4pack_mm_for_cpu`` takes this shape (and exists in this torch)."""
    return (
        hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")
        and group_size in INT4PACK_GROUPS
        and out_features % INT4PACK_N_MULTIPLE == 0
    )


@torch.no_grad()
def prepare_int4pack(
    packed: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Our (packed, scale) -> torch's (int4pack weight, scales_and_zeros (in // g, out, 2) bf16).

    torch dequantizes u (0..15) as (u - 8) * scale + zero: u = q + 8 is our nibble, zero = 0.
    """
    u = (unpack_int4(packed).to(torch.int32) + ZERO_POINT).contiguous()  # (out, in) in 0..15
    weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(u, 1)  # innerKTiles: CUDA only
    s = scale.t().to(torch.bfloat16)  # (G, out)
    scales_and_zeros = torch.stack((s, torch.zeros_like(s)), dim=-1).contiguous()  # (G, out, 2)
    return weight, scales_and_zeros


def int4pack_linear(
    x2: torch.Tensor,
    prepared: tuple[torch.Tensor, torch.Tensor],
    group_size: int,
    b: torch.Tensor | None = None,
) -> torch.Tensor:
    """x2 (N, in) float32/bf16 -> (N, out) in x2's dtype, through bf16 (module docstring)."""
    weight, scales_and_zeros = prepared
    xb = x2.to(torch.bfloat16).contiguous()
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(xb, weight, group_size, scales_and_zeros)
    y = y.to(x2.dtype)
    return y if b is None else y + b.to(x2.dtype)


def register_for_compile(model: nn.Module) -> None:
    """Let every Int4Linear of ``model`` run int4pack inside a compiled graph, its layout built
    in the graph from the buffers: with Inductor's freezing the layout is computed once, and
    with ``max_autotune`` the GEMM becomes a generated C++ one (its int4 weight-only template).
    Without freezing, a compiled call would rebuild the layout each time: only
    fast/compiled_decode.py, which freezes, calls this."""
    for module in model.modules():
        if type(module) is Int4Linear:
            # what eager picks for one row, asked here: the CPU feature query inside
            # int4_matmul_backend would break the graph at every layer
            probe = torch.zeros(1, module.in_features, device=module.weight_packed.device)
            with torch.inference_mode():
                module._compile_int4pack = module.cpu_kernel(probe) == "int4pack"


class Int4Linear(nn.Module):
    """A linear layer whose weight is stored as group-wise int4 (buffers ``weight_packed``
    (out, in // 2) uint8 and ``weight_scale`` (out, in // group_size)) plus ``bias`` or None.

    Inference layer: forward picks its kernel per call (module docstring); autograd gives dx only.
    """

    def __init__(
        self,
        weight_packed: torch.Tensor,
        weight_scale: torch.Tensor,
        group_size: int,
        bias: torch.Tensor | None = None,
        kernels: str | None = None,
    ):
        super().__init__()
        check_int4_packed(weight_packed, weight_scale, group_size)
        self.out_features, self.in_features = weight_packed.shape[0], 2 * weight_packed.shape[1]
        self.group_size = group_size
        self.kernels = kernels  # None: follow $MYLLM101_KERNELS
        self.register_buffer("weight_packed", weight_packed)  # (out, in // 2) uint8
        self.register_buffer("weight_scale", weight_scale)  # (out, in // g)
        self.register_buffer("bias", bias)  # (out,) or None
        self._int4pack: tuple[tuple, tuple] | None = None  # (key, torch's layout): never saved
        self._compile_int4pack = False  # register_for_compile's: int4pack inside compiled graphs

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, group_size: int = 64) -> Int4Linear:
        """Round-to-nearest int4 of a trained ``nn.Linear`` (scales in its weight's dtype)."""
        q, scale = quantize_int4(linear.weight.detach(), group_size)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(pack_int4(q), scale, group_size, bias)

    @classmethod
    @torch.no_grad()
    def from_quantized(
        cls,
        q: torch.Tensor,
        scale: torch.Tensor,
        group_size: int,
        bias: torch.Tensor | None = None,
    ) -> Int4Linear:
        """From codes q (out, in) int8 in [-8, 7] and scales (out, in // g), e.g. GPTQ's."""
        check_int4_codes(q)
        return cls(pack_int4(q), scale.detach().clone(), group_size, bias)

    def cpu_kernel(self, x: torch.Tensor) -> str:
        """ "int4pack" or "dequantize" for this input (see the module docstring)."""
        if x.device.type != "cpu" or self.weight_packed.device.type != "cpu":
            return "dequantize"
        if x.dtype not in (torch.float32, torch.bfloat16) or x.numel() == 0:
            return "dequantize"
        if torch.is_grad_enabled() and x.requires_grad:
            return "dequantize"  # keeps the straight-through gradient
        if torch.is_autocast_enabled("cpu"):
            return "dequantize"
        if torch.compiler.is_compiling():  # decided outside the graph (register_for_compile)
            return "int4pack" if self._compile_int4pack else "dequantize"
        if use_kernel(x, kernels=self.kernels):
            return "dequantize"  # the Triton kernel forced (int4_linear dispatches to it)
        if not int4pack_supported(self.out_features, self.group_size):
            return "dequantize"
        return int4_matmul_backend(x.device, rows=x.numel() // self.in_features)

    def refresh(self) -> tuple[torch.Tensor, torch.Tensor]:
        """torch's int4pack layout of the current buffers, rebuilt when they changed."""
        p, s = self.weight_packed, self.weight_scale
        key = (p.data_ptr(), p._version, s.data_ptr(), s._version, tuple(p.shape))
        if self._int4pack is None or self._int4pack[0] != key:
            self._int4pack = (key, prepare_int4pack(p, s))
        return self._int4pack[1]

    def _load_from_state_dict(self, *args, **kwargs):
        self._int4pack = None  # new weights: the layout derived from the old ones goes
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_int4pack"] = None  # derived: rebuilt on first use
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cpu_kernel(x) == "int4pack":
            x2 = x.reshape(-1, self.in_features)  # (N, in)
            if torch.compiler.is_compiling():
                # the layout from the buffers, in the graph: freezing folds it to a constant
                prepared = prepare_int4pack(self.weight_packed, self.weight_scale)
                y = int4pack_linear(x2, prepared, self.group_size, self.bias)
                return y.reshape(*x.shape[:-1], self.out_features)
            args = (self.weight_packed, self.weight_scale, self.group_size, self.bias)
            check_int4_linear(x, *args)
            with torch.no_grad():
                y = int4pack_linear(x2, self.refresh(), self.group_size, self.bias)
            return y.reshape(*x.shape[:-1], self.out_features)
        return int4_linear(
            x, self.weight_packed, self.weight_scale, self.group_size, self.bias, self.kernels
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"group_size={self.group_size}, bias={self.bias is not None}"
        )
