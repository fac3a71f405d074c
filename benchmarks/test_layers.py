"""Reference (NumPy) vs fast (PyTorch) for every component: forward, and forward+backward.

Run with ``make bench``; ``benchmarks/report.py`` turns the JSON into REPORT.md and a chart.
Each benchmark also records the call's peak memory in ``extra_info``.
"""

import os

import pytest

from benchmarks.memory import peak_numpy_mb, peak_torch_mb
from myllm101.compare import SIZES, all_cases

CASES = {size: all_cases(size=size, dtype="float32") for size in SIZES}
PARAMS = [
    pytest.param(size, i, impl, mode, id=f"{case.name}-{size}-{impl}-{mode}")
    for size in SIZES
    for i, case in enumerate(CASES[size])
    for impl in ("reference", "fast")
    for mode in ("forward", "forward+backward")
    if mode == "forward" or case.ref_backward is not None
]


def case_fn(case, impl: str, mode: str):
    if mode == "forward":
        return case.ref_forward if impl == "reference" else case.fast_forward
    return case.ref_backward if impl == "reference" else case.fast_backward


@pytest.mark.parametrize("size,index,impl,mode", PARAMS)
def test_layer(benchmark, size, index, impl, mode):
    case = CASES[size][index]
    fn = case_fn(case, impl, mode)
    fn()  # warm-up (first-call allocations, lazy init)
    peak = peak_numpy_mb(fn) if impl == "reference" else peak_torch_mb(fn)
    benchmark.group = f"{case.name} {size} {mode}"
    benchmark.extra_info.update(
        component=case.name,
        shape=case.shape,
        size=size,
        impl=impl,
        mode=mode,
        peak_mb=peak,
        loadavg=os.getloadavg()[0],  # other work on the machine skews torch's threads most
    )
    rounds = 3 if size == "realistic" else 20
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
