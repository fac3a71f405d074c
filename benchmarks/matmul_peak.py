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
from myllm101.fast import cpu_gemm

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


def step_gemms_case(model: torch.nn.Module, B: int, T: int, n_layer: int, n_head: int):
    """The GEMMs of one training step of ``model`` on (B, T) tokens, alone -> (run, flops).

    Per ``nn.Linear`` (in -> out) with M = B * T rows: forward x W^T (M, in) @ (in, out), backward
    dy W (M, out) @ (out, in) and dW = dy^T x (out, M) @ (M, in); per layer the attention's six
    batched products, (B H, T, D) by (B H, D, T) and back, over the full T x T square. That is
    ``train_flops_per_token`` * B * T exactly: the FLOPs the MFU column counts, timed with nothing
    else around them, so "MFU" against this peak says how much of the step's time is matmul at
    the step's own shapes (the issue's "matmul peak measured in the same run at this shape").
    The Linears' GEMMs run as ours' training step runs them: each by the library
    ``fast/cpu_gemm.py`` picks at its shape (MKL or oneDNN, whichever is faster here), so the peak
    is the faster library's, not only ``torch.mm``'s."""
    M = B * T
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen)

    weights = {id(m.weight): m for m in model.modules() if isinstance(m, torch.nn.Linear)}
    shapes = [(m.in_features, m.out_features) for m in weights.values()]
    data = {s: (rand(M, s[0]), rand(s[1], s[0]), rand(M, s[1])) for s in set(shapes)}
    C = shapes[0][0] if not hasattr(model, "cfg") else model.cfg.n_embd
    D = C // n_head
    q, k = rand(B * n_head, T, D), rand(B * n_head, T, D)
    p = rand(B * n_head, T, T)

    def run() -> None:
        for s in shapes:
            x, w, dy = data[s]
            cpu_gemm.gemm("forward", x, w)  # x W^T
            cpu_gemm.gemm("dx", dy, w.t())  # dy W
            cpu_gemm.gemm("dw", dy.t(), x.t())  # dy^T x
        for _ in range(n_layer):
            torch.bmm(q, k.transpose(1, 2))  # scores
            torch.bmm(p, k)  # weighted sum of values
            torch.bmm(q, k.transpose(1, 2))  # dP = dO V^T
            torch.bmm(p.transpose(1, 2), q)  # dV
            torch.bmm(p, k)  # dQ = dS K
            torch.bmm(p.transpose(1, 2), q)  # dK

    flops = sum(6 * M * i * o for i, o in shapes) + n_layer * 6 * 2 * B * n_head * T * T * D
    return run, flops
