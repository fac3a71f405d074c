"""Turn a pytest-benchmark JSON of groups-with-a-baseline into a markdown report and a chart.

    python -m benchmarks.ratio_report benchmarks/results/models.json --name MODELS --title "Models"

Conventions a suite follows (in ``benchmark.extra_info``), so every ratio is measured in one run:

- ``benchmark.group``: rows compared with each other; exactly one row per group has
  ``baseline=True`` and every row of the group gets ``ratio = baseline time / its time`` (> 1 is
  faster than the baseline);
- ``impl``, ``mode``, ``shape``, ``peak_mb`` (extra memory of one round, or None), ``loadavg``;
- optional ``count`` + ``unit`` (e.g. 2048 "tokens" per round) for a throughput column;
- optional ``flops`` (per round) + ``dtype`` ("fp32"/"bf16") for MFU against the "matmul peak"
  group of the same JSON (``benchmarks/matmul_peak.py``); a row with a ``peak_key`` divides by
  the peak row of that dtype and key instead (the GEMMs of its own step, timed alone), falling
  back to the square matmul's;
- optional ``activation_mb`` (memory a forward holds for backward) gets its own column;
- optional ``note`` (printed under the group's table) and ``target`` (the issue's goal, quoted).

A target is checked, never judged by hand: ``GOALS`` turns each target text into ``Goal``s (or a
row carries its own in ``extra_info["goals"]``, dicts with Goal's fields), and every row a goal
applies to says "met" or "missed" with the numbers in a "target" column; a target text without a
rule is printed as "not checked".

The report is computed from ``NAME.raw.json``, written next to it (``benchmarks/raw.py``); passing
that file instead of the full JSON reproduces the report.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks import raw  # noqa: E402
from benchmarks.report import emulated, machine_info, machine_line  # noqa: E402

PEAK_GROUP = "matmul peak"


@dataclass(frozen=True)
class Goal:
    """One checkable part of a target: every row whose ``impl`` is in ``impls`` (and whose
    extra_info matches each ``where`` item) must have ``metric op value``. Metrics: ``ratio``
    (baseline time / row time), ``per_s`` (the throughput column), ``mfu`` (the MFU column, a
    fraction of the same run's matmul peak), ``activation`` (row / baseline activation MB),
    ``extra_time`` (row time / baseline time - 1), ``extra:KEY`` (the row's own extra_info KEY,
    e.g. a memory fraction the suite computed) and ``time_vs:IMPL`` (row time / the time of the
    group's row whose impl is IMPL: a comparison with a peer that is not the baseline)."""

    impls: tuple[str, ...]
    metric: str
    op: str
    value: float
    where: tuple[tuple[str, object], ...] = ()

    def applies(self, row: dict) -> bool:
        return row.get("impl") in self.impls and all(
            str(row.get(k)) == str(v) for k, v in self.where
        )


# the suites' target texts (benchmarks/test_*.py), each as the goals that decide it
GOALS: dict[str, tuple[Goal, ...]] = {
    "target: ours >= 1.2x transformers' prefill tokens/s (fp32)": (
        Goal(("ours-fp32", "ours-fp32-fast"), "ratio", ">=", 1.2),
    ),
    "target: cached decode ours-fp32 >= 2x transformers-fp32 (memory bandwidth, ~22 GB/s here, "
    "caps fp32 weights at ~43 tokens/s); ours-bf16 >= 65 tokens/s": (
        Goal(("ours-fp32", "ours-fp32-fast", "ours-fp32-compiled"), "ratio", ">=", 2.0),
        Goal(("ours-bf16", "ours-bf16-compiled"), "per_s", ">=", 65.0),
    ),
    "target: ours >= 1.3x transformers' tokens/s (fp32 and bf16)": (
        Goal(("fast-fp32", "fast-bf16"), "ratio", ">=", 1.3),
    ),
    "target: KV cache >= 10x at 512 new tokens": (
        Goal(("kv-cache",), "ratio", ">=", 10.0, where=(("size", "512"),)),
    ),
    "target: checkpointing activation memory <= 1/3 at <= 30% time cost": (
        Goal(("fp32+ckpt",), "activation", "<=", 1 / 3),
        Goal(("fp32+ckpt",), "extra_time", "<=", 0.30),
    ),
}


def goals_of(rows: list[dict]) -> dict[str, tuple[Goal, ...] | None]:
    """A group's target texts -> their goals: those a row of the group carries in
    ``extra_info["goals"]`` for that text, else ``GOALS``' (None: no rule, so not checked)."""
    out: dict[str, tuple[Goal, ...] | None] = {}
    for r in rows:
        text = r.get("target")
        if text and r.get("goals"):
            out[text] = tuple(
                Goal(
                    tuple(g["impls"]),
                    g["metric"],
                    g["op"],
                    g["value"],
                    tuple(tuple(w) for w in g.get("where", ())),
                )
                for g in r["goals"]
            )
        elif text and text not in out:
            out[text] = GOALS.get(text)
    return out


def _metric(goal: Goal, row: dict, base: dict | None, rows: list[dict] = ()) -> float | None:
    if goal.metric in ("ratio", "per_s", "mfu"):
        return row.get(goal.metric)
    if goal.metric.startswith("extra:"):
        return row.get(goal.metric.removeprefix("extra:"))
    if goal.metric.startswith("time_vs:"):
        other = [r for r in rows if r.get("impl") == goal.metric.removeprefix("time_vs:")]
        return row["s"] / other[0]["s"] if len(other) == 1 and other[0]["s"] > 0 else None
    if base is None:
        return None
    if goal.metric == "activation":
        a, b = row.get("activation_mb"), base.get("activation_mb")
        return a / b if a is not None and b else None
    if goal.metric == "extra_time":
        return row["s"] / base["s"] - 1 if base["s"] > 0 else None
    raise ValueError(
        f"unknown goal metric {goal.metric!r} (ratio, per_s, mfu, activation, extra_time, "
        f"extra:KEY, time_vs:IMPL)"
    )


def _show(metric: str, v: float) -> str:
    if metric.startswith("extra:"):
        return f"{v:.2f}"
    if metric == "extra_time":
        return f"{100 * v:+.0f}%"
    if metric == "per_s":
        return f"{v:,.1f}"
    if metric == "mfu":
        return f"{100 * v:.1f}%"
    return f"{v:.2f}x"


LABEL = {
    "ratio": "{}",
    "per_s": "{} {unit}/s",
    "mfu": "MFU {}",
    "activation": "activation {}",
    "extra_time": "time {}",
    "extra": "{name} {}",
    "time_vs": "time vs {name} {}",
}


def check(goals: tuple[Goal, ...], row: dict, base: dict | None, rows: list[dict] = ()
          ) -> dict | None:  # fmt: skip
    """{"met": bool, "text": "met: 1.34x >= 1.20x"} for a row some goal applies to, else None
    (``rows``: the row's group, for ``time_vs:IMPL``)."""
    parts, met = [], True
    for g in goals:
        if not g.applies(row):
            continue
        v = _metric(g, row, base, rows)
        unit = row.get("unit") or "units"
        if v is None:
            ok, txt = False, f"{g.metric} not measured"
        else:
            ok = v >= g.value if g.op == ">=" else v <= g.value
            cmp = f"{_show(g.metric, v)} {g.op if ok else _negate(g.op)} {_show(g.metric, g.value)}"
            label = LABEL.get(g.metric.split(":")[0], "{}")
            name = g.metric.split(":", 1)[1] if ":" in g.metric else ""
            txt = label.format(cmp, unit=unit, name=name)
        met &= ok
        parts.append(txt)
    if not parts:
        return None
    return {"met": met, "text": ("met: " if met else "missed: ") + "; ".join(parts)}


def _negate(op: str) -> str:
    return {">=": "<", "<=": ">"}[op]


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
    """dtype (or "dtype key" for a row with a ``peak_key``) -> FLOP/s measured in this run, from
    its fastest round (a peak is a maximum; the median of a short run also holds clock ramp-up
    and interruptions)."""
    return {_peak_name(r): r["flops"] / r["s_min"] for r in groups.get(PEAK_GROUP, [])}


def _peak_name(r: dict) -> str:
    key = r.get("peak_key")
    return f"{r.get('dtype', '')} {key}" if key else r.get("dtype", "")


def add_ratios(groups: dict[str, list[dict]], peak: dict[str, float]) -> None:
    """Per row: ``ratio``, ``per_s``, ``mfu`` and ``target_check`` (see ``check``; None where no
    goal applies)."""
    for name, rows in groups.items():
        base = [r for r in rows if r.get("baseline")]
        for r in rows:
            r["ratio"] = base[0]["s"] / r["s"] if len(base) == 1 and r["s"] > 0 else None
            r["per_s"] = r["count"] / r["s"] if r.get("count") else None
            p = peak.get(_peak_name(r), peak.get(r.get("dtype", "")))
            r["mfu"] = (
                r["flops"] / r["s"] / p if r.get("flops") and p and name != PEAK_GROUP else None
            )
        goals = goals_of(rows)
        for r in rows:
            mine = goals.get(r.get("target"))
            r["target_check"] = (
                check(mine, r, base[0] if len(base) == 1 else None, rows) if mine else None
            )


def target_lines(rows: list[dict]) -> list[str]:
    """The group's target texts, each with its verdict computed from the rows."""
    out = []
    for text, goals in sorted(goals_of(rows).items()):
        mine = [r for r in rows if r.get("target") == text]
        checks = [r["target_check"] for r in mine if r.get("target_check")]
        if goals is None:
            verdict = "not checked (no rule for this text in benchmarks/ratio_report.py GOALS)"
        elif not checks:
            where = {f"{k} = {v}" for g in goals for k, v in g.where}
            verdict = "not for this group" + (
                f" (applies where {', '.join(sorted(where))})" if where else ""
            )
        elif all(c["met"] for c in checks):
            verdict = "met"
        else:
            missed = [
                r["impl"] for r in mine if r.get("target_check") and not r["target_check"]["met"]
            ]
            verdict = "missed by " + ", ".join(missed)
        out.append(f"{text}: **{verdict}**")
    return out


def _fmt(v, spec: str, suffix: str = "") -> str:
    return "-" if v is None else format(v, spec) + suffix


def markdown(
    groups: dict[str, list[dict]], peak: dict[str, float], title: str, machine: dict, source=""
):
    lines = [
        f"# {title}",
        "",
        *([source, ""] if source else []),
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
        tgt = any(r.get("target_check") for r in rows)
        lines += [
            f"## {name}",
            "",
            f"Shape: {rows[0].get('shape', '?')}",
            "",
            "| impl | mode | median ms | ratio | "
            + (f"{unit}/s | " if unit else "")
            + ("MFU | " if mfu else "")
            + "peak MB |"
            + (" activation MB |" if act else "")
            + (" target |" if tgt else ""),
            "|---|---|---:|---:|"
            + ("---:|" if unit else "")
            + ("---:|" if mfu else "")
            + "---:|"
            + ("---:|" if act else "")
            + ("---|" if tgt else ""),
        ]
        for r in rows:
            impl = r["impl"] + (" (baseline)" if r.get("baseline") else "")
            if emulated(r.get("dtype"), machine):
                impl += " (emulated on this CPU)"
            verdict = r.get("target_check")
            lines.append(
                f"| {impl} | {r.get('mode', '')} | {r['s'] * 1e3:.2f} | {_fmt(r['ratio'], '.2f', 'x')} | "
                + (f"{_fmt(r['per_s'], ',.1f')} | " if unit else "")
                + (f"{_fmt(r['mfu'] and 100 * r['mfu'], '.1f', '%')} | " if mfu else "")
                + f"{_fmt(r.get('peak_mb'), '.1f')} |"
                + (f" {_fmt(r.get('activation_mb'), '.1f')} |" if act else "")
                + ((f" {verdict['text']} |" if verdict else " - |") if tgt else "")
            )
        extra = sorted({r["note"] for r in rows if r.get("note")}) + target_lines(rows)
        lines += [""] + [f"- {e}" for e in extra] + ([""] if extra else [])
    return "\n".join(lines) + "\n"


def plot(groups: dict[str, list[dict]], path: Path, title: str) -> None:
    bars = [
        (f"{name}: {r['impl']}", r["ratio"], r.get("target_check"))
        for name, rows in groups.items()
        for r in rows
        if r["ratio"] is not None and not r.get("baseline") and name != PEAK_GROUP
    ]
    colour = {None: "tab:blue", True: "tab:green", False: "tab:red"}
    fig, ax = plt.subplots(figsize=(11, 0.3 * len(bars) + 1.5))
    ax.barh([b[0] for b in bars], [b[1] for b in bars],
            color=[colour[b[2] and b[2]["met"]] for b in bars])  # fmt: skip
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("speed ratio vs the group's baseline (log scale, > 1 is faster)")
    ax.set_title(title + (" (green: target met, red: missed)" if any(b[2] for b in bars) else ""))
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bench_json", type=Path, help="pytest-benchmark JSON, or a name.raw.json")
    p.add_argument("--name", required=True, help="output stem: NAME.md, name.png, name.raw.json")
    p.add_argument("--title", required=True)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    data, raw_path = raw.load(args.bench_json, args.out, args.name.lower())
    groups = load_groups(data)
    peak = peaks(groups)
    add_ratios(groups, peak)
    machine = machine_info(data)
    png = args.out / f"{args.name.lower()}.png"
    md = markdown(groups, peak, args.title, machine, raw.source_line(data, raw_path))
    (args.out / f"{args.name}.md").write_text(md + f"\n![ratios]({png.name})\n")
    plot(groups, png, args.title)
    n = sum(map(len, groups.values()))
    print(f"wrote {args.out / args.name}.md, {png} and {raw_path} ({n} rows)")


if __name__ == "__main__":
    main()
