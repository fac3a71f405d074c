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
