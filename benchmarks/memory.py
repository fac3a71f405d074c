"""Peak memory of one call, per implementation.

- NumPy: ``tracemalloc`` sees every NumPy buffer allocation (NumPy reports them to it).
- torch (CPU): the profiler's per-op memory records in time order; their running sum's maximum is
  the peak above what was allocated before the call (at op granularity: a buffer allocated and
  freed inside a single op is not seen).
- torch (CUDA): ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

import torch

MB = 1024 * 1024


def peak_numpy_mb(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (peak - base) / MB


def peak_torch_mb(fn: Callable[[], object], device: str = "cpu") -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / MB
    from torch.profiler import ProfilerActivity, profile

    gc.collect()  # garbage from before the call must not be freed (and subtracted) inside it
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # self memory = what an op allocated minus what it freed, excluding its children; frees that
    # happen between ops (a tensor going out of scope) show up as negative "[memory]" events.
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    gc.collect()  # the profiler's garbage, now, rather than inside a later timed round
    running = peak = 0
    for e in events:
        running += e.self_cpu_memory_usage
        peak = max(peak, running)
    return peak / MB
