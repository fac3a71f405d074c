"""Triton kernels vs eager PyTorch vs torch.compile (and SDPA for attention) on one CUDA GPU.

    python -m benchmarks.gpu [--out benchmarks/results] [--quick]

For every kernel in ``myllm101/kernels`` (rmsnorm, rope, int8 matmul, fused W8A8 linear, and, when
their modules import, flash attention and cross-entropy) and a sweep of sizes, it measures the
median time (``triton.testing.do_bench``), the throughput (GB/s for memory-bound ops, TFLOP/s or
TOP/s for matmuls) and the peak extra CUDA memory of one call. All implementations of a row run in
the same process on the same inputs; the speed-up column is eager time / this time.
Writes ``GPU.md`` and ``GPU.png`` (the device name in the title) to ``--out``.

Without CUDA it prints that it needs a GPU and exits 0. ``--smoke`` runs tiny sizes on CPU through
Triton's interpreter (no torch.compile C++ build: the ``aot_eager`` backend) only to exercise this
script; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

NO_GPU_MESSAGE = (
    "benchmarks.gpu needs a CUDA GPU (torch.cuda.is_available() is False here); nothing was run. "
    "Kernel correctness on CPU: pytest parity_tests/kernels (Triton interpreter)."
)


@dataclass
class Case:
    """One size of one kernel: implementations to time and the work one call does."""

    kernel: str
    size: str
    impls: dict[str, Callable[[], object]]
    work: float  # bytes moved (unit GB/s) or operations (unit TFLOP/s / TOP/s)
    unit: str


@dataclass
class Row:
    kernel: str
    size: str
    impl: str
    ms: float
    throughput: float
    unit: str
    peak_mib: float
    speedup: float = float("nan")


def _setup_env(smoke: bool) -> None:
    # must precede the first `import triton`: compile on a GPU, interpret on CPU
    os.environ["TRITON_INTERPRET"] = "1" if smoke else "0"


# --------------------------------------------------------------------------- measuring


def _measure(fn: Callable[[], object], device: str) -> tuple[float, float]:
    """(median ms, peak extra MiB of one call)."""
    import torch

    fn()  # warm-up: triton JIT, torch.compile, cuBLAS heuristics
    if device == "cuda":
        import triton.testing

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        ms = triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median")
        return float(ms), float(peak)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[1], float("nan")


def _fwd_bwd(f: Callable, inputs: tuple, dy) -> Callable[[], object]:
    """A closure running f(*inputs) and its backward into fresh gradient tensors."""
    import torch

    def run():
        y = f(*inputs)
        return torch.autograd.grad(y, [t for t in inputs if t.requires_grad], dy)

    return run


def _compiled(f: Callable, smoke: bool) -> Callable:
    import torch

    return torch.compile(f, backend="aot_eager" if smoke else "inductor", dynamic=False)


# --------------------------------------------------------------------------- cases


def rmsnorm_cases(device: str, dtype, sizes, smoke: bool) -> list[Case]:
    import torch
    import torch.nn.functional as F

    from myllm101.kernels import rmsnorm as kern

    def eager(x, w):
        return F.rms_norm(x, (x.shape[-1],), w, 1e-6)

    cases = []
    for R, C in sizes:
        x = torch.randn(R, C, device=device, dtype=dtype, requires_grad=True)
        w = torch.ones(C, device=device, dtype=dtype, requires_grad=True)
        dy = torch.randn(R, C, device=device, dtype=dtype)
        compiled = _compiled(eager, smoke)
        impls = {
            "triton": _fwd_bwd(lambda x, w: kern.rmsnorm(x, w, 1e-6), (x, w), dy),
            "eager": _fwd_bwd(eager, (x, w), dy),
            "torch.compile": _fwd_bwd(compiled, (x, w), dy),
        }
        # forward reads x, writes y; backward reads x, dy, writes dx (w and dw are O(C))
        work = 5 * R * C * x.element_size()
        cases.append(Case("rmsnorm fwd+bwd", f"{R}x{C}", impls, work, "GB/s"))
    return cases


def rope_cases(device: str, dtype, sizes, smoke: bool) -> list[Case]:
    import torch

    from myllm101.fast.rope import apply_rope as fast_rope
    from myllm101.fast.rope import rope_frequencies
    from myllm101.kernels import rope as kern

    def eager(x, cos, sin):
        return fast_rope(x, cos, sin, kernels="off")

    cases = []
    for B, H, T, D in sizes:
        x = torch.randn(B, H, T, D, device=device, dtype=dtype, requires_grad=True)
        cos, sin = rope_frequencies(D, T, device=device, dtype=dtype)
        dy = torch.randn_like(x)
        compiled = _compiled(eager, smoke)
        impls = {
            "triton": _fwd_bwd(kern.apply_rope, (x, cos, sin), dy),
            "eager": _fwd_bwd(eager, (x, cos, sin), dy),
            "torch.compile": _fwd_bwd(compiled, (x, cos, sin), dy),
        }
        work = 4 * x.numel() * x.element_size()  # read x, write y; read dy, write dx
        cases.append(Case("rope fwd+bwd", f"{B}x{H}x{T}x{D}", impls, work, "GB/s"))
    return cases


def int8_cases(device: str, sizes, smoke: bool) -> list[Case]:
    import torch

    from myllm101.fast import int8 as fast_int8
    from myllm101.kernels import int8_matmul as kern

    def eager_mm(a, b):
        return fast_int8.int8_matmul(a, b, kernels="off")  # torch._int_mm where it applies

    def eager_rescale(a, sa, w, sw, bias):
        acc = fast_int8.int8_matmul(a, w, kernels="off")
        return acc.to(sa.dtype) * (sa * sw) + bias

    cases = []
    for M, N, K in sizes:
        a = torch.randint(-127, 128, (M, K), device=device, dtype=torch.int8)
        b = torch.randint(-127, 128, (N, K), device=device, dtype=torch.int8)
        sa = torch.rand(M, 1, device=device, dtype=torch.bfloat16)
        sw = torch.rand(N, device=device, dtype=torch.bfloat16)
        bias = torch.randn(N, device=device, dtype=torch.bfloat16)
        xb = torch.randn(M, K, device=device, dtype=torch.bfloat16)
        wb = torch.randn(N, K, device=device, dtype=torch.bfloat16)
        mm_c, rs_c = _compiled(eager_mm, smoke), _compiled(eager_rescale, smoke)
        ops = 2 * M * N * K
        cases.append(
            Case(
                "int8 matmul",
                f"{M}x{N}x{K}",
                {
                    "triton": lambda a=a, b=b: kern.int8_matmul(a, b),
                    "eager": lambda a=a, b=b: eager_mm(a, b),
                    "torch.compile": lambda a=a, b=b, f=mm_c: f(a, b),
                    "bf16 matmul (context)": lambda x=xb, w=wb: x @ w.t(),
                },
                ops,
                "TOP/s",
            )
        )
        args = (a, sa, b, sw, bias)
        cases.append(
            Case(
                "w8a8 linear (fused rescale)",
                f"{M}x{N}x{K}",
                {
                    "triton": lambda args=args: kern.int8_linear_rescale(*args),
                    "eager": lambda args=args: eager_rescale(*args),
                    "torch.compile": lambda args=args, f=rs_c: f(*args),
                },
                ops,
                "TOP/s",
            )
        )
    return cases


def attention_cases(device: str, dtype, sizes, smoke: bool) -> list[Case]:
    import torch
    import torch.nn.functional as F

    from myllm101.kernels import attention as kern  # the other kernels' module; may be absent

    def eager(q, k, v):
        T = q.shape[-2]
        s = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, T, T)
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        return s.masked_fill(~mask, float("-inf")).softmax(-1) @ v

    def sdpa(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    cases = []
    for B, H, T, D in sizes:
        q, k, v = (
            torch.randn(B, H, T, D, device=device, dtype=dtype, requires_grad=True)
            for _ in range(3)
        )
        dy = torch.randn_like(q)
        compiled = _compiled(eager, smoke)
        impls = {
            "triton": _fwd_bwd(
                lambda q, k, v: kern.flash_attention(q, k, v, causal=True), (q, k, v), dy
            ),
            "eager": _fwd_bwd(eager, (q, k, v), dy),
            "torch.compile": _fwd_bwd(compiled, (q, k, v), dy),
            "SDPA": _fwd_bwd(sdpa, (q, k, v), dy),
        }
        # causal forward: 2 matmuls of 2*B*H*T*T*D flops, half of them masked; backward counted
        # as 2.5x the forward (the FlashAttention papers' convention)
        flops = 3.5 * (4 * B * H * T * T * D / 2)
        cases.append(Case("attention causal fwd+bwd", f"{B}x{H}x{T}x{D}", impls, flops, "TFLOP/s"))
    return cases


def cross_entropy_cases(device: str, dtype, sizes, smoke: bool) -> list[Case]:
    import torch
    import torch.nn.functional as F

    from myllm101.kernels import cross_entropy as kern  # the other kernels' module; may be absent

    def eager(x, t):
        return F.cross_entropy(x.float(), t)

    cases = []
    for N, V in sizes:
        x = torch.randn(N, V, device=device, dtype=dtype, requires_grad=True)
        t = torch.randint(0, V, (N,), device=device)
        dy = torch.ones((), device=device)
        compiled = _compiled(eager, smoke)
        impls = {
            "triton": _fwd_bwd(kern.cross_entropy, (x, t), dy),
            "eager": _fwd_bwd(eager, (x, t), dy),
            "torch.compile": _fwd_bwd(compiled, (x, t), dy),
        }
        work = 2 * N * V * x.element_size()  # read the logits, write their gradient
        cases.append(Case("cross-entropy fwd+bwd", f"{N}x{V}", impls, work, "GB/s"))
    return cases


def sparse24_cases(device: str, dtype, sizes, smoke: bool) -> list[Case]:
    """A 2:4-pruned Linear (issue 17): dense F.linear vs its weight as torch's semi-structured
    sparse tensor (myllm101/prune/semi_structured.py), which only CUDA runs."""
    import torch
    import torch.nn.functional as F

    from myllm101.fast.prune import nm_mask

    cases = []
    for M, N, K in sizes:
        x = torch.randn(M, K, device=device, dtype=dtype)
        w = torch.randn(N, K, device=device, dtype=dtype)
        w = w * nm_mask(w.abs().float()).to(dtype)  # 2 of every 4 inputs kept
        impls = {"eager": lambda x=x, w=w: F.linear(x, w)}
        if device == "cuda":
            from myllm101.prune.semi_structured import to_semi_structured_tensor

            ws = to_semi_structured_tensor(w)
            impls["2:4 semi-structured"] = lambda x=x, ws=ws: F.linear(x, ws)
        work = 2 * M * N * K  # the dense count: the speed-up column is the comparison
        cases.append(Case("2:4 sparse linear", f"{M}x{N}x{K}", impls, work, "TFLOP/s"))
    return cases


def sweeps(quick: bool, smoke: bool) -> dict[str, list]:
    if smoke:
        return {
            "rmsnorm": [(5, 33)],
            "rope": [(1, 2, 5, 8)],
            "int8": [(5, 7, 33)],
            "attention": [(1, 1, 16, 16)],
            "cross_entropy": [(5, 33)],
            "sparse24": [(8, 32, 64)],
        }
    if quick:
        return {
            "rmsnorm": [(8192, 4096)],
            "rope": [(8, 32, 2048, 128)],
            "int8": [(4096, 4096, 4096)],
            "attention": [(4, 16, 2048, 128)],
            "cross_entropy": [(8192, 50304)],
            "sparse24": [(4096, 4096, 4096)],
        }
    return {
        "rmsnorm": [(8192, 1024), (8192, 4096), (4096, 16384)],
        "rope": [(8, 32, 512, 128), (8, 32, 2048, 128), (4, 32, 8192, 128)],
        "int8": [(1024, 1024, 1024), (4096, 4096, 4096), (8192, 8192, 8192)],
        "attention": [(8, 16, 512, 64), (4, 16, 2048, 128), (2, 16, 8192, 128)],
        "cross_entropy": [(8192, 32000), (8192, 50304), (4096, 128256)],
        "sparse24": [(2048, 4096, 4096), (8192, 4096, 4096), (8192, 11008, 4096)],
    }


def build_cases(device: str, quick: bool, smoke: bool) -> tuple[list, list[str]]:
    """Generators of cases per kernel, and notes for kernels that could not be set up."""
    import torch

    dtype = torch.float32 if smoke else torch.bfloat16
    sw = sweeps(quick, smoke)
    builders = [
        ("rmsnorm", lambda: rmsnorm_cases(device, dtype, sw["rmsnorm"], smoke)),
        ("rope", lambda: rope_cases(device, dtype, sw["rope"], smoke)),
        ("int8_matmul", lambda: int8_cases(device, sw["int8"], smoke)),
        ("attention", lambda: attention_cases(device, dtype, sw["attention"], smoke)),
        ("cross_entropy", lambda: cross_entropy_cases(device, dtype, sw["cross_entropy"], smoke)),
        ("sparse24", lambda: sparse24_cases(device, dtype, sw["sparse24"], smoke)),
    ]
    return builders, []


def run_all(device: str, quick: bool, smoke: bool) -> tuple[list[Row], list[str]]:
    import torch

    torch._dynamo.config.cache_size_limit = 64  # one compiled graph per size
    builders, notes = build_cases(device, quick, smoke)
    rows: list[Row] = []
    for name, build in builders:
        try:
            cases = build()
        except (ImportError, AttributeError) as e:  # a kernel module that is not there (yet)
            notes.append(f"{name}: skipped, could not set up ({type(e).__name__}: {e})")
            continue
        for case in cases:
            case_rows = []
            for impl, fn in case.impls.items():
                try:
                    ms, peak = _measure(fn, device)
                except Exception as e:  # one failing implementation must not stop the sweep
                    notes.append(
                        f"{case.kernel} {case.size} {impl}: failed ({type(e).__name__}: {e})"
                    )
                    traceback.print_exc()
                    continue
                scale = 1e9 if case.unit == "GB/s" else 1e12
                row = Row(
                    case.kernel,
                    case.size,
                    impl,
                    ms,
                    case.work / (ms * 1e-3) / scale,
                    case.unit,
                    peak,
                )
                case_rows.append(row)
                print(
                    f"{case.kernel:28s} {case.size:18s} {impl:22s} {ms:9.3f} ms "
                    f"{row.throughput:9.2f} {case.unit:7s} {peak:9.1f} MiB",
                    flush=True,
                )
                if device == "cuda":
                    torch.cuda.empty_cache()
            eager = next((r for r in case_rows if r.impl == "eager"), None)
            for r in case_rows:
                r.speedup = eager.ms / r.ms if eager else float("nan")
            rows += case_rows
    return rows, notes


# --------------------------------------------------------------------------- report


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}), Triton interpreter"


def write_report(rows: list[Row], notes: list[str], out: Path, device: str, smoke: bool) -> None:
    import torch
    import triton

    out.mkdir(parents=True, exist_ok=True)
    name = device_name(device)
    lines = [
        "# Triton kernels on GPU",
        "",
        f"Device: **{name}**; torch {torch.__version__}, triton {triton.__version__}. "
        "Generated by `python -m benchmarks.gpu`.",
        "",
        "Median of `triton.testing.do_bench`; peak = extra CUDA memory of one call over what was "
        "allocated before it; speed-up = eager ms / this ms, same run, same inputs. bf16 inputs "
        "(int8 for the int8 GEMMs, bf16 scales). fwd+bwd rows time forward and backward together.",
        "",
    ]
    if smoke:
        lines += ["**Smoke run on CPU: the numbers below mean nothing.**", ""]
    for kernel in dict.fromkeys(r.kernel for r in rows):
        lines += [
            f"## {kernel}",
            "",
            "| size | impl | ms | throughput | peak MiB | speed-up vs eager |",
        ]
        lines += ["|---|---|---:|---:|---:|---:|"]
        for r in (r for r in rows if r.kernel == kernel):
            lines.append(
                f"| {r.size} | {r.impl} | {r.ms:.3f} | {r.throughput:.2f} {r.unit} | "
                f"{r.peak_mib:.1f} | {r.speedup:.2f}x |"
            )
        lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["![throughput per kernel](GPU.png)", ""]
    (out / "GPU.md").write_text("\n".join(lines))
    plot(rows, out / "GPU.png", name)


def plot(rows: list[Row], path: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kernels = list(dict.fromkeys(r.kernel for r in rows))
    if not kernels:
        return
    fig, axes = plt.subplots(1, len(kernels), figsize=(4.2 * len(kernels), 3.8), squeeze=False)
    for ax, kernel in zip(axes[0], kernels):
        krows = [r for r in rows if r.kernel == kernel]
        sizes = list(dict.fromkeys(r.size for r in krows))
        for impl in dict.fromkeys(r.impl for r in krows):
            pts = [(sizes.index(r.size), r.throughput) for r in krows if r.impl == impl]
            ax.plot(*zip(*pts), marker="o", label=impl)
        ax.set_xticks(range(len(sizes)), sizes, rotation=30, ha="right", fontsize=7)
        ax.set_title(kernel, fontsize=9)
        ax.set_ylabel(krows[0].unit)
        ax.legend(fontsize=7)
    fig.suptitle(f"Triton kernels vs eager vs torch.compile on {name}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--quick", action="store_true", help="one size per kernel")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny CPU run of this script (interpreter)"
    )
    args = parser.parse_args(argv)
    _setup_env(args.smoke)

    import torch

    if not args.smoke and not torch.cuda.is_available():
        print(NO_GPU_MESSAGE)
        return 0
    device = "cpu" if args.smoke else "cuda"
    t0 = time.perf_counter()
    rows, notes = run_all(device, args.quick, args.smoke)
    write_report(rows, notes, args.out, device, args.smoke)
    print(
        f"wrote {args.out / 'GPU.md'} and {args.out / 'GPU.png'} in {time.perf_counter() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
