"""Turn pytest-benchmark JSON into benchmarks/results/REPORT.md and a bar chart.

    python -m benchmarks.report benchmarks/results/layers.json [--out benchmarks/results]

Each row compares the reference and the fast implementation measured in the same run; the
speed-up is reference time / fast time (median of the rounds). The report is computed from
``layers.raw.json``, written next to it (``benchmarks/raw.py``); passing that file instead of the
full JSON reproduces the report.
"""

from __future__ import annotations

import argparse
import platform
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks import raw  # noqa: E402


def load_rows(bench_json: dict) -> list[dict]:
    """One row per (component, size, mode) with both implementations side by side."""
    grouped: dict[tuple, dict] = defaultdict(dict)
    for b in bench_json["benchmarks"]:
        info = b["extra_info"]
        key = (info["component"], info["size"], info["shape"], info["mode"])
        grouped[key][info["impl"]] = {"ms": b["stats"]["median"] * 1e3, "mb": info.get("peak_mb")}
    rows = []
    for (component, size, shape, mode), impls in grouped.items():
        ref, fast = impls.get("reference"), impls.get("fast")
        rows.append(
            {
                "component": component,
                "size": size,
                "shape": shape,
                "mode": mode,
                "ref_ms": ref and ref["ms"],
                "fast_ms": fast and fast["ms"],
                "speedup": ref["ms"] / fast["ms"] if ref and fast and fast["ms"] > 0 else None,
                "ref_mb": ref and ref["mb"],
                "fast_mb": fast and fast["mb"],
            }
        )
    rows.sort(key=lambda r: (r["size"] != "small", r["component"], r["mode"]))
    return rows


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def markdown(rows: list[dict], machine: dict, source: str = "") -> str:
    lines = [
        "# Benchmark report",
        "",
        *([source, ""] if source else []),
        f"{machine_line(machine)} "
        "Reference = NumPy (float32), fast = PyTorch eager (float32), measured in the same run; "
        "times are medians, speed-up = reference / fast, peak memory is the extra memory one call "
        "allocates (tracemalloc for NumPy, the torch profiler for torch, at op granularity).",
        "",
        *(
            [
                f"Load average during the run: {machine['load']}. Anything above ~0.5 means other "
                "work shared the cores; torch's multi-threaded kernels suffer most, so treat fast "
                "timings of such a run as pessimistic.",
                "",
            ]
            if machine.get("load")
            else []
        ),
        "| component | shape | mode | reference ms | fast ms | speed-up | reference peak MB "
        "| fast peak MB |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['component']} | {r['shape']} | {r['mode']} | {_fmt(r['ref_ms'], '.3f')} "
            f"| {_fmt(r['fast_ms'], '.3f')} | {_fmt(r['speedup'], '.2f')}x "
            f"| {_fmt(r['ref_mb'], '.1f')} | {_fmt(r['fast_mb'], '.1f')} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    rows = [r for r in rows if r["speedup"] is not None]
    sizes = sorted({r["size"] for r in rows}, key=lambda s: s != "small")
    fig, axes = plt.subplots(len(sizes), 1, figsize=(11, 0.32 * len(rows) + 2.5), squeeze=False)
    for ax, size in zip(axes[:, 0], sizes, strict=True):
        sub = [r for r in rows if r["size"] == size]
        labels = [f"{r['component']} ({r['mode']})" for r in sub]
        ax.barh(labels, [r["speedup"] for r in sub], color="tab:blue")
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("speed-up of fast over reference (log scale, >1 is faster)")
        ax.set_title(f"{size} shapes")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine_info(data: dict) -> dict:
    """CPU, cores, Python, the load average range of a pytest-benchmark JSON and what the CPU does
    natively (``hw``: device.Hardware as recorded by benchmarks/conftest.py; None in JSON written
    before it was recorded)."""
    mi = data.get("machine_info", {})
    loads = [b["extra_info"]["loadavg"] for b in data["benchmarks"] if "loadavg" in b["extra_info"]]
    return {
        "load": f"{min(loads):.1f} to {max(loads):.1f}" if loads else None,
        "cpu": mi.get("cpu", {}).get("brand_raw", platform.processor() or platform.machine()),
        "cores": mi.get("cpu", {}).get("count", "?"),
        "python": f"Python {mi.get('python_version', platform.python_version())}",
        "hw": mi.get("myllm101"),
    }


def machine_line(machine: dict) -> str:
    """The header's 'Machine: ...' sentence: CPU model, cores, torch's CPU capability, native bf16
    and int8 yes/no, torch threads and version (where the numbers below hold)."""
    hw = machine.get("hw")
    if not hw:
        return (
            f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores; "
            f"{machine.get('python', '')} (CPU capabilities not recorded in this JSON)."
        )
    yes = lambda b: "yes" if b else "no"  # noqa: E731
    capped = f", capped by {hw['limits']}" if hw.get("limits") else ""
    return (
        f"Machine: {hw['cpu_name']}, {machine.get('cores', '?')} cores; torch CPU capability "
        f"{hw['cpu_capability']}{capped}; native bf16: {yes(hw['native_bf16'])}, native int8: "
        f"{yes(hw['native_int8'])}; {hw['threads']} torch threads; torch {hw['torch_version']}; "
        f"{machine.get('python', '')}."
    )


def emulated(dtype: str | None, machine: dict) -> bool:
    """Whether a row in ``dtype`` ran without hardware support on the recorded CPU (bf16 without
    AVX512-BF16/AMX, int8 without VNNI/AMX): such rows are marked in the reports."""
    hw = machine.get("hw")
    if not hw or not dtype or hw.get("cuda_device"):
        return False
    if "bf16" in dtype or "bfloat16" in dtype:
        return not hw["native_bf16"]
    if "int8" in dtype:
        return not hw["native_int8"]
    return False


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bench_json", type=Path, help="pytest-benchmark JSON, or a layers.raw.json")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    data, raw_path = raw.load(args.bench_json, args.out, "layers")
    rows = load_rows(data)
    machine = machine_info(data)
    (args.out / "REPORT.md").write_text(
        markdown(rows, machine, raw.source_line(data, raw_path))
        + "\n![speed-ups](layers_speedup.png)\n"
    )
    plot(rows, args.out / "layers_speedup.png")
    print(
        f"wrote {args.out / 'REPORT.md'}, {args.out / 'layers_speedup.png'} and {raw_path} "
        f"({len(rows)} rows)"
    )


if __name__ == "__main__":
    main()
