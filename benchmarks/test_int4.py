"""int4 weight-only linear (``fast.int4.Int4Linear``) against a float32 ``F.linear`` and int8
weight-only (``fast.int8.Int8Linear``), measured in one run.

Rows of each group ("int4 linear OUTxIN M=M"; baseline fp32):

- ``fp32``:        ``F.linear`` with a float32 weight (4 bytes per weight),
- ``int4``:        ``Int4Linear`` as dispatched on this CPU (``device.int4_matmul_backend``),
- ``int4pack``:    the same module forced to torch's ``_weight_int4pack_mm_for_cpu`` (bf16
                   activations; ~0.5 byte per weight + bf16 scales),
- ``dequantize``:  forced to expand q * scale to float32 on every call, then ``F.linear``,
- ``int8``:        ``Int8Linear`` weight-only with its default CPU kernel.

Shapes: SmolLM2-135M's MLP (1536x576 up/gate, 576x1536 down) and a 2048x2048 projection, at decode
(M = 1, 8) and prefill (M = 128) row counts, group size 64. As in decode, each call uses the next
of several weight copies (round robin, at least 48 MB of that row's weights), so weights come from
memory rather than cache. The AVX2 picture: run again under ``ATEN_CPU_CAPABILITY=avx2`` (the
report header then says "capped by").

    pytest benchmarks/test_int4.py --benchmark-only --benchmark-json=benchmarks/results/int4.json
    python -m benchmarks.ratio_report benchmarks/results/int4.json --name INT4 --title "int4 linear"
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from benchmarks.memory import peak_torch_mb
from myllm101.device import INT4_KERNEL_ENV, int4_matmul_backend

SHAPES = [(1536, 576), (576, 1536), (2048, 2048)]  # (out, in)
IMPLS = ("fp32", "int4", "int4pack", "dequantize", "int8")
GROUP = 64
COLD_BYTES = 48 * 2**20  # 1.5x the 32 MB L3: each row's weights are read from memory
BYTES_PER_WEIGHT = {"fp32": 4.0, "int8": 1.0, "int4": 0.5, "int4pack": 0.5, "dequantize": 0.5}


def _modules(impl: str, N: int, K: int) -> list:
    """Enough copies of one layer that they fill COLD_BYTES in ``impl``'s own format."""
    from myllm101.fast.int4 import Int4Linear
    from myllm101.fast.int8 import Int8Linear

    copies = max(2, -(-COLD_BYTES // int(N * K * BYTES_PER_WEIGHT[impl])))
    g = torch.Generator().manual_seed(N + K)
    out = []
    for _ in range(copies):
        if impl == "fp32":
            w = torch.randn(N, K, generator=g) * 0.05
            out.append(lambda x, w=w: F.linear(x, w))
        elif impl == "int8":
            q = torch.randint(-127, 128, (N, K), generator=g, dtype=torch.int8)
            out.append(Int8Linear(q, torch.rand(N, generator=g) * 1e-3, None, "weight_only"))
        else:
            q = torch.randint(-8, 8, (N, K), generator=g, dtype=torch.int8)
            scale = torch.rand(N, K // GROUP, generator=g) * 0.01
            out.append(Int4Linear.from_quantized(q, scale, GROUP))
    return out


@pytest.mark.parametrize("M", [1, 8, 128])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("impl", IMPLS)
def test_int4_linear(benchmark, monkeypatch, impl, shape, M):
    N, K = shape
    monkeypatch.delenv(INT4_KERNEL_ENV, raising=False)
    picked = int4_matmul_backend("cpu", rows=M)  # what device.py picks here, before any forcing
    if impl in ("int4pack", "dequantize"):
        monkeypatch.setenv(INT4_KERNEL_ENV, impl)
    monkeypatch.setenv("MYLLM101_KERNELS", "off")
    layers = _modules(impl, N, K)
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(M))
    kernel = layers[0].cpu_kernel(x) if hasattr(layers[0], "cpu_kernel") else None
    if impl.startswith("int4"):
        assert kernel == (impl if impl != "int4" else picked)
    state = {"i": 0}

    def run():
        state["i"] = (state["i"] + 1) % len(layers)
        return layers[state["i"]](x)

    with torch.no_grad():
        for _ in range(len(layers)):  # int4pack layouts are built on first use, not timed
            run()
        peak = peak_torch_mb(run)
        benchmark.group = f"int4 linear {N}x{K} M={M}"
        benchmark.extra_info.update(
            component="int4-linear", size=f"{N}x{K} M={M}", impl=impl,
            mode=f"kernel {kernel}" if kernel else "float32", shape=f"M={M} out={N} in={K}",
            baseline=impl == "fp32", flops=2 * M * N * K, dtype="fp32", peak_mb=peak,
            copies=len(layers), weight_bytes=BYTES_PER_WEIGHT[impl],
            note=f"group size {GROUP}; weights rotated through copies (from memory, as in "
            f"decode); device.py picks {picked} at M={M} on this CPU "
            "(int4pack runs bf16 activations; dequantize expands the weight every call)",
            loadavg=os.getloadavg()[0],
        )  # fmt: skip
        benchmark.pedantic(run, rounds=10 if M <= 8 else 5, iterations=1, warmup_rounds=2)
