"""The machine's matmul peak, measured in the same run as the models (the MFU denominator).

A suite that reports MFU imports ``test_matmul_peak`` into its module, so pytest runs it with the
suite: ``benchmarks/ratio_report.py`` divides each row's achieved FLOP/s (``extra_info["flops"]``
per round / median time) by the peak of the row's ``extra_info["dtype"]`` from the same JSON,
taken from the fastest of these rounds (a peak is a maximum).

The workload is ``myllm101.device.matmul_peak_case``, the one the trainer times for its own MFU
(``matmul_peak_flops``): the benchmark and the training log divide by the same kind of peak.
"""

from __future__ import annotations

import os

import pytest
import torch

from myllm101.device import hardware, matmul_peak_case, matmul_peak_size

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_matmul_peak(benchmark, dtype):
    n = matmul_peak_size("cpu", DTYPES[dtype])  # 1024: square, ~0.1 s per fp32 round here
    mm, flops = matmul_peak_case("cpu", DTYPES[dtype], n)
    # bf16 without hardware support (AVX2-only CPU) runs ~170x slower than fp32: one matmul per
    # round and 3 rounds measure that emulated speed well enough (the report marks the row)
    emulated = dtype == "bf16" and not hardware().native_bf16
    reps, rounds = (1, 3) if emulated else (8, 10)

    def run():
        for _ in range(reps):
            mm()

    run()  # warm-up (thread pool, packing buffers)
    benchmark.group = "matmul peak"
    benchmark.extra_info.update(
        component="matmul-peak", size=f"{n}x{n}", impl=dtype, mode=f"{reps} x torch.mm",
        shape=f"{n}x{n} @ {n}x{n}", dtype=dtype, flops=flops * reps, peak_mb=0.0,
        loadavg=os.getloadavg()[0],
    )  # fmt: skip
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)
