"""The quantization report: the speed tables of ``ratio_report`` plus the accuracy-size-speed table
and a perplexity-vs-size chart, all from one ``quant.raw.json`` (benchmarks/test_quant.py).

    python -m benchmarks.quant_report benchmarks/results/quant.json     # or quant.raw.json
    python -m benchmarks.quant_report quant-fresh.json --name QUANT-fresh   # a partial run

Per model (SmolLM2-135M, whose weights were shipped as Q4_1, and "fresh", a LLaMA trained in the
run and never quantized) and scheme: model.safetensors MB, the linear weights' MB, perplexity on
both held-out texts with its change against ours-fp32, decode tokens/s (whole generate calls,
and their decode steps after the first new token), prefill tokens/s (the same rows as the speed
tables) and GPTQ's recovery of round-to-nearest int4's perplexity loss
(1 - gptq loss / rtn loss; the issue's target is >= 0.5 on the never-quantized model).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks import ratio_report, raw  # noqa: E402

TEXTS = ("shakespeare-test", "python-stdlib")
GPTQ_TARGET = 0.5  # of RTN int4's perplexity loss, on the never-quantized model
KINDS = {"decode": " decode", "steps": " decode steps", "prefill": " prefill"}  # group name ends


def _fmt(v, spec: str, suffix: str = "") -> str:
    return "-" if v is None else format(v, spec) + suffix


def accuracy_rows(groups: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """model -> one dict per ours-* scheme: size, perplexities, decode and prefill tokens/s."""
    out: dict[str, list[dict]] = {}
    for name, rows in groups.items():
        kind = next((k for k, suffix in KINDS.items() if name.endswith(suffix)), None)
        if kind is None:
            continue
        model = name.removesuffix(KINDS[kind])
        for r in rows:
            if not str(r.get("impl", "")).startswith("ours-"):
                continue
            mine = out.setdefault(model, [])
            row = next((m for m in mine if m["impl"] == r["impl"]), None)
            if row is None and r.get("size_mb") is None:
                row = {"impl": r["impl"]}  # a prefill row before its decode row: speed only
                mine.append(row)
            if row is not None and "size_mb" not in row and r.get("size_mb") is not None:
                row.update(size_mb=r["size_mb"], linear_mb=r.get("linear_mb"))
                row["linear_fp32_mb"] = r.get("linear_fp32_mb")
                for t in TEXTS:
                    row[t] = r.get(f"ppl_{t}")
                    row[f"change {t}"] = r.get(f"ppl_change_{t}")
            elif row is None:
                row = {"impl": r["impl"], "size_mb": r["size_mb"], "linear_mb": r.get("linear_mb")}
                row["linear_fp32_mb"] = r.get("linear_fp32_mb")
                for t in TEXTS:
                    row[t] = r.get(f"ppl_{t}")
                    row[f"change {t}"] = r.get(f"ppl_change_{t}")
                mine.append(row)
            row[kind] = r["count"] / r["s"] if r.get("count") else None
    return out


def markdown(table: dict[str, list[dict]]) -> str:
    lines = [
        "## Accuracy, size and speed",
        "",
        "Perplexity on strided windows of each held-out text (myllm101/quant/eval.py), change "
        "against ours-fp32; size = model.safetensors; linear MB = the quantized Linears' weights "
        "and scales (fp32: the same Linears in float32); tokens/s from the tables above (decode: "
        "the whole generate call, prefill included; decode steps: the steps after the first new "
        "token).",
        "",
    ]
    for model, rows in table.items():
        lines += [
            f"### {model}",
            "",
            "| scheme | size MB | linear MB | ppl Shakespeare | change | ppl stdlib | change "
            "| decode tok/s | decode steps tok/s | prefill tok/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        fp32_linear = max((r.get("linear_fp32_mb") or 0.0 for r in rows), default=0.0)
        for r in rows:
            a, b = TEXTS
            if r["impl"] in ("ours-fp32", "ours-fp32-compiled"):
                r = {**r, "linear_mb": fp32_linear or None}
            lines.append(
                f"| {r['impl']} | {_fmt(r.get('size_mb'), '.1f')} "
                f"| {_fmt(r.get('linear_mb'), '.1f')} "
                f"| {_fmt(r.get(a), '.3f')} | {_fmt(r.get(f'change {a}'), '+.2%')} "
                f"| {_fmt(r.get(b), '.3f')} | {_fmt(r.get(f'change {b}'), '+.2%')} "
                f"| {_fmt(r.get('decode'), '.1f')} | {_fmt(r.get('steps'), '.1f')} "
                f"| {_fmt(r.get('prefill'), '.1f')} |"
            )
        lines += ["", *gptq_lines(model, rows)]
        lines.append("")
    return "\n".join(lines)


def gptq_recovery(rows: list[dict], text: str) -> float | None:
    """1 - GPTQ's perplexity loss / round-to-nearest's (int4-g64 against fp32 on ``text``); None
    when RTN lost under 0.5% (nothing to recover: the ratio would be noise over noise)."""
    by = {r["impl"]: r.get(text) for r in rows}
    fp32, rtn, gptq = by.get("ours-fp32"), by.get("ours-int4-g64"), by.get("ours-gptq-int4-g64")
    if None in (fp32, rtn, gptq) or rtn - fp32 < 0.005 * fp32:
        return None
    return (rtn - gptq) / (rtn - fp32)


def gptq_lines(model: str, rows: list[dict]) -> list[str]:
    out = []
    for text in TEXTS:
        rec = gptq_recovery(rows, text)
        if rec is None:
            out.append(f"- GPTQ recovery on {text}: undefined (round-to-nearest int4 lost < 0.5%)")
            continue
        verdict = "met" if rec >= GPTQ_TARGET else "missed"
        out.append(
            f"- GPTQ int4-g64 recovers {rec:.0%} of round-to-nearest int4's perplexity loss on "
            f"{text} (target >= {GPTQ_TARGET:.0%}): **{verdict}**"
            + ("" if model == "fresh" else " (SmolLM2 was shipped as Q4_1: informative only)")
        )
    return out


def plot(table: dict[str, list[dict]], path: Path) -> None:
    fig, axes = plt.subplots(len(table), len(TEXTS), figsize=(11, 3.8 * len(table)), squeeze=False)
    for row_axes, (model, rows) in zip(axes, table.items()):
        for ax, text in zip(row_axes, TEXTS):
            for r in rows:
                if r.get(text) is None or r["impl"].endswith("-compiled"):  # its scheme's point
                    continue
                ax.scatter(r["size_mb"], r[text], zorder=3)
                ax.annotate(r["impl"].removeprefix("ours-"), (r["size_mb"], r[text]),
                            textcoords="offset points", xytext=(4, 4), fontsize=8)  # fmt: skip
            ax.set_xlabel("model.safetensors (MB)")
            ax.set_ylabel("perplexity")
            ax.set_title(f"{model}: {text}")
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bench_json", type=Path, help="pytest-benchmark JSON, or quant.raw.json")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--name", default="QUANT", help="output stem (QUANT-fresh for a partial run)")
    args = p.parse_args(argv)
    stem = args.name.lower()
    ratio_report.main([str(args.bench_json), "--name", args.name, "--title", "Quantization",
                       "--out", str(args.out)])  # fmt: skip
    data = raw.expand(json.loads((args.out / f"{stem}.raw.json").read_text()))
    groups = ratio_report.load_groups(data)
    ratio_report.add_ratios(groups, {})
    table = accuracy_rows(groups)
    md = args.out / f"{args.name}.md"
    png = args.out / f"{stem}_ppl_size.png"
    md.write_text(
        md.read_text() + "\n" + markdown(table) + f"\n![perplexity vs size]({png.name})\n"
    )
    plot(table, png)
    print(f"wrote the accuracy table to {md} and {png}")


if __name__ == "__main__":
    main()
