"""Keep freed host memory for the next step: glibc malloc settings for CPU training loops.

Why: every training step allocates and frees the same large tensors: the logits (B, T, V) and
their gradient, activations, weight gradients. glibc serves a block over its mmap threshold
(128 KB, rising with use to at most 32 MB) with fresh pages from the kernel and hands them back on
``free``, so each step page-faults, and the kernel zeroes, the same hundreds of MB again. At the
training benchmark's peer shape (6 layers, width 384, vocab 8192, B=8, T=256, fp32) on a 2-core
CPU that was ~6k page faults per step for our GPT, 28 with reuse, and the step ran 1.14x faster
(LLaMA 1.07x; benchmarks/results/HOST_MEMORY.md). The log-softmax over the (2048, 8192) logits
alone took ~30 ms writing fresh pages against ~8-10 ms on reused ones.

``reuse_freed_memory()`` sets ``mallopt(M_MMAP_MAX, 0)``: every block comes from malloc's heap,
whose freed blocks the next step reuses, and ``M_TRIM_THRESHOLD`` high, so the heap's free top is
not returned to the kernel either. Its cost: the process keeps its peak memory until it exits (the
resident size does not shrink after a big step) and the heap may fragment a little; a block a
thread's own arena cannot hold still falls back to mmap. PyTorch's CPU performance guide gets the
same effect by preloading jemalloc or tcmalloc (``LD_PRELOAD``); this needs no other library.

``MYLLM101_MALLOC`` picks the policy: ``reuse`` (default) or ``system`` (leave malloc as it is).
It is process-wide: the trainer and ``finetune`` call it when they start training, never on
import (a server, or a notebook until it trains, keeps glibc's defaults). Elsewhere than glibc
(macOS, musl) nothing changes and the returned string says why.
"""

from __future__ import annotations

import ctypes
import os
import platform

ENV_VAR = "MYLLM101_MALLOC"
POLICIES = ("reuse", "system")
M_TRIM_THRESHOLD = -1  # glibc's <malloc.h> parameter numbers
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # bytes of free heap top kept (mallopt takes a C int)

_applied: str | None = None  # what reuse_freed_memory did in this process


def malloc_policy() -> str:
    """``$MYLLM101_MALLOC`` checked, lower case; ``reuse`` when unset."""
    policy = os.environ.get(ENV_VAR, "reuse").strip().lower()
    if policy not in POLICIES:
        raise ValueError(f"{ENV_VAR}: expected one of {', '.join(POLICIES)}, got {policy!r}")
    return policy


def reuse_freed_memory(policy: str | None = None) -> str:
    """Apply ``policy`` (None: ``$MYLLM101_MALLOC``) to this process -> what is in force, for logs
    and summary.json: ``"reuse"``, or ``"system"`` with the reason. Applying again is harmless;
    once ``reuse`` is set it stays for the life of the process."""
    global _applied
    policy = malloc_policy() if policy is None else policy
    if policy not in POLICIES:
        raise ValueError(f"malloc policy: expected one of {', '.join(POLICIES)}, got {policy!r}")
    if _applied == "reuse":
        return _applied
    if policy == "system":
        return f"system ({ENV_VAR}=system)"
    libc_name, _ = platform.libc_ver()
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None) if libc_name == "glibc" else None
    if mallopt is None:
        return f"system (not glibc: {libc_name or platform.system()})"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not (mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "system (glibc refused mallopt)"
    _applied = "reuse"
    return _applied
