"""Rotary position embedding (RoPE) in PyTorch, rotate-half layout as in LLaMA / HF:

    y = x * cos + rotate_half(x) * sin,    rotate_half([x1, x2]) = [-x2, x1]

Speed: rotate_half's sign is moved onto the small (T, D) sin table, so the big tensor only needs a
roll (no negation, no cat) and the multiply-add is one fused ``torch.addcmul``: on CPU about 1.6x
faster forward and 3x faster forward+backward than the textbook cat/neg/mul/mul/add chain.
The cos/sin tables are built in float64 and cast once, so float32 tables are correctly rounded
(float32 angles at position 500 would already be off by ~3e-5).

Positions: ``apply_rope`` takes (T, D) tables (every row at the same positions: training, or a
KV cache's offset) or (B, 1, T, D) tables gathered per row (``RotaryEmbedding(q, k,
position_ids=...)``: a left-padded batch, where each row starts counting after its padding). It is
the only place the rotation is computed, for both kinds of table.

Dispatch: when ``myllm101.kernels.use_kernel`` says so (CUDA tensors and triton, or
``MYLLM101_KERNELS=on`` / ``kernels="on"``), float16/bfloat16/float32 inputs go to the Triton kernel
in ``kernels/rope.py`` (one fused pass, forward and backward, either kind of table); float64 always
stays here.
"""

import torch
from torch import nn

from myllm101.checks import (
    check_rope,
    check_rope_frequencies,
    expect_int,
    expect_positive,
    expect_shape,
)
from myllm101.kernels.dispatch import kernel_supports, use_kernel


def rope_frequencies(
    head_dim: int,
    seq_len: int,
    theta: float = 10000.0,
    offset: int = 0,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (seq_len, head_dim), for positions offset .. offset + seq_len - 1."""
    check_rope_frequencies(head_dim, seq_len, theta, offset)
    # float64 on the CPU (every backend has it there), then one rounding to the target dtype
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (D/2,)
    positions = torch.arange(offset, offset + seq_len, dtype=torch.float64)  # (T,)
    angles = torch.outer(positions, inv_freq)  # (T, D/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, D)
    return angles.cos().to(device, dtype), angles.sin().to(device, dtype)


def apply_rope(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kernels: str | None = None
) -> torch.Tensor:
    """x: (B, H, T, D), cos/sin: (T, D) or per row (B, 1, T, D) -> (B, H, T, D) in x's dtype.

    ``kernels``: auto|on|off (None = $MYLLM101_KERNELS), see the module docstring.
    """
    check_rope(x, cos, sin)
    if kernel_supports(x) and use_kernel(x, cos, sin, kernels=kernels):
        from myllm101.kernels.rope import apply_rope as rope_kernel  # imports triton

        # the same rounding of the tables as below, so both paths compute the same function
        return rope_kernel(x, cos.to(x.dtype), sin.to(x.dtype))
    return rotate(x, cos, signed_sin_table(sin))


def signed_sin_table(sin: torch.Tensor) -> torch.Tensor:
    """[-sin1, sin2] (the halves of the last dimension): rotate_half(x) * sin == roll(x, half) *
    [-sin1, sin2], so the small table carries the sign instead of the big x."""
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)


def rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """x * cos + roll(x, D/2) * signed_sin in x's dtype, unchecked: ``apply_rope``'s torch path,
    and the decode step's (fast/llama.py ``Llama.decode_step``), which signs the table once per
    step for all layers."""
    half = x.shape[-1] // 2
    if cos.dtype != x.dtype:  # (a no-op .to still costs a call: decode runs this twice a layer)
        cos, signed_sin = cos.to(x.dtype), signed_sin.to(x.dtype)
    return torch.addcmul(x * cos, x.roll(half, dims=-1), signed_sin)


class RotaryEmbedding(nn.Module):
    """Caches cos/sin for positions 0 .. max_seq_len - 1; forward rotates q and k.

    The tables are non-persistent buffers: they follow ``.to(device)`` but stay out of the
    state_dict (they are a function of the config, not learned).
    """

    def __init__(
        self,
        head_dim: int,
        max_seq_len: int,
        theta: float = 10000.0,
        device=None,
        dtype=None,
        kernels: str | None = None,
    ):
        super().__init__()
        expect_positive("max_seq_len", max_seq_len)
        self.head_dim, self.max_seq_len, self.theta = head_dim, max_seq_len, theta
        self.kernels = kernels  # None: follow $MYLLM101_KERNELS
        cos, sin = rope_frequencies(
            head_dim, max_seq_len, theta, device=device, dtype=dtype or torch.float32
        )
        self.register_buffer("cos", cos, persistent=False)  # (max_seq_len, D)
        self.register_buffer("sin", sin, persistent=False)  # (max_seq_len, D)

    def _apply(self, fn, recurse=True):
        # after .to()/.double()/.half(), rebuild the tables from float64 in the new dtype, so a
        # float32 -> float64 cast gives exact float64 tables instead of widened float32 ones
        super()._apply(fn, recurse)
        self.cos, self.sin = rope_frequencies(
            self.head_dim,
            self.max_seq_len,
            self.theta,
            device=self.cos.device,
            dtype=self.cos.dtype,
        )
        return self

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        offset: int = 0,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q: (B, H, T, D), k: (B, Hkv, T', D) at positions offset.. -> rotated (q, k).

        position_ids: (B, T) positions per row (then T' == T, and offset is not used): the table
        rows are gathered per token, (B, 1, T, D), and rotated by the same ``apply_rope``.
        """
        if position_ids is not None:
            return self._at_positions(q, k, position_ids)
        longest = max(q.shape[-2], k.shape[-2])
        if offset < 0 or offset + longest > self.max_seq_len:
            raise ValueError(
                f"positions: expected offset + seq_len <= max_seq_len={self.max_seq_len} "
                f"(offset >= 0), got offset={offset}, seq_len={longest}"
            )
        Tq, Tk = q.shape[-2], k.shape[-2]
        cos, sin, kern = self.cos, self.sin, self.kernels
        q = apply_rope(q, cos[offset : offset + Tq], sin[offset : offset + Tq], kernels=kern)
        k = apply_rope(k, cos[offset : offset + Tk], sin[offset : offset + Tk], kernels=kern)
        return q, k

    def _at_positions(self, q, k, position_ids):
        expect_int("position_ids", position_ids)
        expect_shape("position_ids", position_ids, (q.shape[0], q.shape[2]))
        expect_shape("k", k, (q.shape[0], None, q.shape[2], q.shape[3]))
        if not torch.compiler.is_compiling():  # a data-dependent check: skipped while tracing
            lo, hi = int(position_ids.min()), int(position_ids.max())
            if lo < 0 or hi >= self.max_seq_len:
                raise ValueError(
                    f"position_ids: expected values in [0, {self.max_seq_len}) (max_seq_len), "
                    f"got min {lo}, max {hi}"
                )
        cos = self.cos[position_ids].unsqueeze(1)  # (B, 1, T, D)
        sin = self.sin[position_ids].unsqueeze(1)  # (B, 1, T, D)
        return (
            apply_rope(q, cos, sin, kernels=self.kernels),
            apply_rope(k, cos, sin, kernels=self.kernels),
        )

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, max_seq_len={self.max_seq_len}, theta={self.theta}"
