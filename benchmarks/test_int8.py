"""int8 matmul backends against a float32 GEMM of the same shape, measured in one run.

What ``fast.int8.int8_matmul`` may run on a CPU (device.py picks by capability):

- ``int_mm``:     ``torch._int_mm`` (VNNI/AMX int8 dot products where the CPU has them),
- ``fp32_exact``: float32 GEMMs over K-chunks of 1024 (exact int32 result),
- ``fp32``:       ``F.linear`` on float32 copies, the baseline (what the int8 path competes with).

Groups "int8 matmul M=8" (decode-like) and "int8 matmul M=128" (prefill-like), K = N = 4096.
The report marks the int_mm row "emulated on this CPU" where the CPU lacks int8 dot products.

    pytest benchmarks/test_int8.py --benchmark-only --benchmark-json=benchmarks/results/int8.json
    python -m benchmarks.ratio_report benchmarks/results/int8.json --name INT8 --title "int8 matmul"
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from benchmarks.memory import peak_torch_mb
from myllm101.device import hardware
from myllm101.fast.int8 import _row_major, int8_matmul_fp32_exact

K = N = 4096
IMPLS = ("fp32", "int_mm", "fp32_exact")


def _operands(M: int):
    g = torch.Generator().manual_seed(M)
    a = torch.randint(-127, 128, (M, K), generator=g, dtype=torch.int8)
    b = torch.randint(-127, 128, (N, K), generator=g, dtype=torch.int8)
    return a, b


@pytest.mark.parametrize("M", [8, 128])
@pytest.mark.parametrize("impl", IMPLS)
def test_int8_matmul_backends(benchmark, impl, M):
    a, b = _operands(M)
    if impl == "fp32":
        af, bf = a.float(), b.float()
        run = lambda: F.linear(af, bf)  # noqa: E731
    elif impl == "int_mm":
        bt = _row_major(b.t())
        run = lambda: torch._int_mm(a, bt)  # noqa: E731
    else:
        run = lambda: int8_matmul_fp32_exact(a, b)  # noqa: E731
    # float64 sums of integers below 2**53 are exact; the fp32 baseline is not (sums pass 2**24)
    exact = (a.double() @ b.double().t()).to(torch.int32)
    is_exact = torch.equal(run().to(torch.int32), exact)
    if impl == "fp32_exact" or (impl == "int_mm" and hardware().native_int8):
        assert is_exact, impl
    peak = peak_torch_mb(run)
    benchmark.group = f"int8 matmul M={M}"
    benchmark.extra_info.update(
        component="int8-matmul", size=f"M={M}", impl=impl, mode=f"({M}, {K}) @ ({N}, {K}).T",
        shape=f"M={M} K={K} N={N}", baseline=impl == "fp32", flops=2 * M * K * N,
        dtype="int8" if impl == "int_mm" else "fp32", peak_mb=peak, exact=is_exact,
        note=f"device.py picks {'int_mm' if hardware().native_int8 else 'fp32_exact'} on this "
        "CPU (fp32 = F.linear on float32 copies made before timing: the speed to beat)",
        loadavg=os.getloadavg()[0],
    )  # fmt: skip
    benchmark.pedantic(run, rounds=20 if M == 8 else 10, iterations=1, warmup_rounds=2)


# ---- Int8Linear kernels at SmolLM2's decode shapes (device.INT8_KERNELS), vs float32 and torch.ao ----

DECODE_SHAPES = [(576, 576), (192, 576), (1536, 576), (576, 1536), (2048, 2048)]  # (out, in)
LINEAR_IMPLS = ("fp32", "torch.ao dynamic int8", "dequantize", "fbgemm_fp16") + (
    "int_mm",
    "fbgemm_int8",
    "fbgemm_fp16_exact",
    "fp32_exact",
)
COLD_BYTES = 64 * 2**20  # int8 weights rotated through twice the 32 MB L3: read from memory


def _linear_run(impl: str, N: int, K: int, x: torch.Tensor):
    """run() applies one of ``copies`` weights per call (round robin), like decode's layers."""
    from myllm101.fast import int8 as fast

    copies = max(2, -(-COLD_BYTES // (N * K)))
    g = torch.Generator().manual_seed(N + K)
    qs = [fast.quantize_per_channel(torch.randn(N, K, generator=g) * 0.05) for _ in range(copies)]
    if impl == "fp32":
        ws = [q.float() * s[:, None] for q, s in qs]
        calls = [lambda w=w: F.linear(x, w) for w in ws]
    elif impl == "torch.ao dynamic int8":
        import warnings

        calls = []
        for q, s in qs:
            m = torch.ao.nn.quantized.dynamic.Linear(K, N, dtype=torch.qint8)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                zeros = torch.zeros(N, dtype=torch.long)
                m.set_weight_bias(
                    torch._make_per_channel_quantized_tensor(q, s.double(), zeros, 0), None
                )
            calls.append(m)
        calls = [lambda m=m: m(x) for m in calls]
    elif impl == "dequantize":
        calls = [lambda q=q, s=s: fast.int8_linear(x, q, s) for q, s in qs]
    else:
        packs = [(fast.prepare_int8_weight(impl, q), q, s) for q, s in qs]
        calls = [lambda p=p: fast.int8_linear_packed(x, impl, *p) for p in packs]
    state = {"i": 0}

    def run():
        state["i"] = (state["i"] + 1) % copies
        return calls[state["i"]]()

    return run, copies


@pytest.mark.parametrize("M", [1, 8])
@pytest.mark.parametrize("shape", DECODE_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("impl", LINEAR_IMPLS)
def test_int8_linear_kernels(benchmark, impl, shape, M):
    from myllm101.device import INT8_KERNELS, _fbgemm_int8_exact, int8_linear_kernel

    N, K = shape
    if impl == "fbgemm_int8" and not _fbgemm_int8_exact():
        pytest.skip("fbgemm's int8 GEMM saturates here (no VNNI): not an exact w8a8 kernel")
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(M))
    run, copies = _linear_run(impl, N, K, x)
    mode = next((m for m, names in INT8_KERNELS.items() if impl in names), "float")
    picked = {m: int8_linear_kernel(m).value for m in INT8_KERNELS}
    benchmark.group = f"int8 linear {N}x{K} M={M}"
    benchmark.extra_info.update(
        component="int8-linear", size=f"{N}x{K} M={M}", impl=impl, mode=mode,
        shape=f"M={M} out={N} in={K}", baseline=impl == "fp32", flops=2 * M * N * K,
        dtype="fp32", peak_mb=peak_torch_mb(run), copies=copies,
        note=f"weights rotated through {copies} copies (from memory, as in decode); device.py "
        f"picks {picked['weight_only']} (weight-only) and {picked['w8a8']} (w8a8) on this CPU; "
        "torch.ao quantizes activations per tensor (another W8A8 variant)",
        loadavg=os.getloadavg()[0],
    )  # fmt: skip
    benchmark.pedantic(run, rounds=max(30, copies), iterations=1, warmup_rounds=2)
