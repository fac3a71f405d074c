"""Turn a pytest-benchmark JSON of groups-with-a-baseline into a markdown report and a chart.

    python -m benchmarks.ratio_report benchmarks/results/models.json --name MODELS --title "Models"

Conventions a suite follows (in ``benchmark.extra_info``), so every ratio is measured in one run:

- ``benchmark.group``: rows compared with each other; exactly one row per group has
  ``baseline=True`` and every row of the group gets ``ratio = baseline time / its time`` (> 1 is
  faster than the baseline);
- ``impl``, ``mode``, ``shape``, ``peak_mb`` (extra memory of one round, or None), ``loadavg``;
- optional ``count`` + ``unit`` (e.g. 2048 "tokens" per round) for a throughput column;
- optional ``flops`` (per round) + ``dtype`` ("fp32"/"bf16") for MFU against the "matmul peak"
  group of the same JSON (``benchmarks/matmul_peak.py``);
- optional ``activation_mb`` (memory a forward holds for backward) gets its own column;
- optional ``note`` (printed under the group's table) and ``target`` (the issue's goal, quoted).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.report import emulated, machine_info, machine_line  # noqa: E402

PEAK_GROUP = "matmul peak"


def load_groups(data: dict) -> dict[str, list[dict]]:
    """group -> rows (dicts with the extra_info plus ``s``, the median seconds per round)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for b in data["benchmarks"]:
        stats = b["stats"]
        groups[b["group"] or b["name"]].append(
            {**b["extra_info"], "s": stats["median"], "s_min": stats.get("min", stats["median"])}
        )
    return dict(groups)


def peaks(groups: dict[str, list[dict]]) -> dict[str, float]:
    """dtype -> FLOP/s of the square matmul measured in this run, from its fastest round (a peak
    is a maximum; the median of a short run also holds clock ramp-up and interruptions)."""
    return {r["dtype"]: r["flops"] / r["s_min"] for r in groups.get(PEAK_GROUP, [])}


def add_ratios(groups: dict[str, list[dict]], peak: dict[str, float]) -> None:
    for name, rows in groups.items():
        base = [r for r in rows if r.get("baseline")]
        for r in rows:
            r["ratio"] = base[0]["s"] / r["s"] if len(base) == 1 and r["s"] > 0 else None
            r["per_s"] = r["count"] / r["s"] if r.get("count") else None
            p = peak.get(r.get("dtype", ""))
            r["mfu"] = (
                r["flops"] / r["s"] / p if r.get("flops") and p and name != PEAK_GROUP else None
            )


def _fmt(v, spec: str, suffix: str = "") -> str:
    return "-" if v is None else format(v, spec) + suffix


def markdown(groups: dict[str, list[dict]], peak: dict[str, float], title: str, machine: dict):
    lines = [
        f"# {title}",
        "",
        f"{machine_line(machine)} Times are "
        "medians; ratio = the group's baseline time / the row's time (> 1 is faster than the "
        "baseline, both measured in the same run); peak MB is the extra memory one round "
        "allocates (torch profiler at op granularity on CPU, tracemalloc for NumPy).",
        "",
    ]
    if machine.get("load"):
        lines += [
            f"Load average during the run: {machine['load']} (2 cores; it includes the "
            "benchmark's own threads, ~1-2 when it runs alone: clearly above 2 means other work "
            "shared them, which slows torch's threaded kernels most).",
            "",
        ]
    if peak:
        lines += [
            "Matmul peak measured in this run (MFU denominator): "
            + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in sorted(peak.items())),
            "",
        ]
    for name, rows in groups.items():
        if name == PEAK_GROUP:
            continue
        unit = next((r["unit"] for r in rows if r.get("unit")), None)
        act = any(r.get("activation_mb") is not None for r in rows)
        mfu = any(r["mfu"] is not None for r in rows)
        lines += [
            f"## {name}",
            "",
            f"Shape: {rows[0].get('shape', '?')}",
            "",
            "| impl | mode | median ms | ratio | "
            + (f"{unit}/s | " if unit else "")
            + ("MFU | " if mfu else "")
            + "peak MB |"
            + (" activation MB |" if act else ""),
            "|---|---|---:|---:|"
            + ("---:|" if unit else "")
            + ("---:|" if mfu else "")
            + "---:|"
            + ("---:|" if act else ""),
        ]
        for r in rows:
            impl = r["impl"] + (" (baseline)" if r.get("baseline") else "")
            if emulated(r.get("dtype"), machine):
                impl += " (emulated on this CPU)"
            lines.append(
                f"| {impl} | {r.get('mode', '')} | {r['s'] * 1e3:.2f} | {_fmt(r['ratio'], '.2f', 'x')} | "
                + (f"{_fmt(r['per_s'], ',.1f')} | " if unit else "")
                + (f"{_fmt(r['mfu'] and 100 * r['mfu'], '.1f', '%')} | " if mfu else "")
                + f"{_fmt(r.get('peak_mb'), '.1f')} |"
                + (f" {_fmt(r.get('activation_mb'), '.1f')} |" if act else "")
            )
        extra = sorted({r[k] for r in rows for k in ("note", "target") if r.get(k)})
        lines += [""] + [f"- {e}" for e in extra] + ([""] if extra else [])
    return "\n".join(lines) + "\n"


def plot(groups: dict[str, list[dict]], path: Path, title: str) -> None:
    bars = [
        (f"{name}: {r['impl']}", r["ratio"])
        for name, rows in groups.items()
        for r in rows
        if r["ratio"] is not None and not r.get("baseline") and name != PEAK_GROUP
    ]
    fig, ax = plt.subplots(figsize=(11, 0.3 * len(bars) + 1.5))
    ax.barh([b[0] for b in bars], [b[1] for b in bars], color="tab:blue")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("speed ratio vs the group's baseline (log scale, > 1 is faster)")
    ax.set_title(title)
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bench_json", type=Path)
    p.add_argument("--name", required=True, help="output stem: NAME.md and name.png")
    p.add_argument("--title", required=True)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    data = json.loads(args.bench_json.read_text())
    groups = load_groups(data)
    peak = peaks(groups)
    add_ratios(groups, peak)
    machine = machine_info(data)
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / f"{args.name.lower()}.png"
    md = markdown(groups, peak, args.title, machine) + f"\n![ratios]({png.name})\n"
    (args.out / f"{args.name}.md").write_text(md)
    plot(groups, png, args.title)
    print(f"wrote {args.out / args.name}.md and {png} ({sum(map(len, groups.values()))} rows)")


if __name__ == "__main__":
    main()
