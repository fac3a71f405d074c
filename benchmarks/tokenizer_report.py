"""Turn the tokenizer benchmarks' JSON into benchmarks/results/TOKENIZER.md and tokenizer.png.

    python -m benchmarks.tokenizer_report tok.json [--out benchmarks/results]

The report is computed from ``tokenizer.raw.json``, written next to it (``benchmarks/raw.py``);
passing that file instead of the full JSON reproduces the report.

Ratios compare implementations measured in the same run (medians). Rows that carry a target
(issue 14's, set in benchmarks/test_tokenizer.py) get a "Targets" table, each marked met or missed
by ``ratio_report.check``. Reference training cells for 4k-32k vocabularies are *estimates*: the
measured time of the reference's 32 merges on that corpus, scaled to the number of merges the fast
trainer actually made (its per-merge cost is a full pass over every distinct word, nearly constant
across merges; it ignores that words shrink, so it errs high).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks import ratio_report, raw  # noqa: E402
from benchmarks.report import machine_info, machine_line  # noqa: E402

IMPLS = ("fast", "fast-cold", "reference", "tiktoken", "hf")
NAMES = {
    "fast": "ours (fast)",
    "fast-cold": "ours (fast, cold cache)",
    "fast-2w": "ours (fast, words counted in 2 processes)",
    "reference": "ours (reference)",
    "tiktoken": "tiktoken",
    "hf": "HF tokenizers",
    "hf-2t": "HF tokenizers (2 threads, 2 KB texts)",
}


def rows_of(data: dict, bench: str) -> list[dict]:
    out = []
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if info.get("bench") == bench:
            out.append({**info, "s": b["stats"]["median"]})
    return out


def encode_table(rows: list[dict]) -> tuple[list[str], dict]:
    lines = [
        "| size | implementation | MB | seconds | MB/s | vs tiktoken | vs HF tokenizers |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    speeds = defaultdict(dict)
    for r in rows:
        speeds[r["size"]][r["impl"]] = r["bytes"] / 1e6 / r["s"]
    for r in sorted(rows, key=lambda r: (r["size"] != "full", IMPLS.index(r["impl"]))):
        mbps = speeds[r["size"]][r["impl"]]
        tik, hf = speeds[r["size"]].get("tiktoken"), speeds[r["size"]].get("hf")
        vs_tik = f"{mbps / tik:.2f}x" if tik else "-"
        vs_hf = f"{mbps / hf:.2f}x" if hf else "-"
        lines.append(f"| {r['size']} | {NAMES[r['impl']]} | {r['bytes'] / 1e6:.2f} | {r['s']:.3f} "
                     f"| {mbps:.2f} | {vs_tik} | {vs_hf} |")  # fmt: skip
    return lines, speeds


def train_table(rows: list[dict]) -> tuple[list[str], list[dict]]:
    per_merge = {r["size"]: r["s"] / max(r["merges"], 1) for r in rows if r["impl"] == "reference"}
    cells = defaultdict(dict)
    for r in rows:
        if r["impl"] in ("fast", "hf") or (r["impl"] == "reference" and r["size"] == "smoke"):
            cells[(r["size"], r["vocab"], r["bytes"])][r["impl"]] = r
    lines = [
        "| corpus | vocab asked | vocab reached (fast) | ours fast s | ours reference s | HF s "
        "| reference / fast | fast / HF |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    table = []
    for (size, vocab, nbytes), impls in sorted(cells.items(), key=lambda kv: (kv[0][2], kv[0][1])):
        fast, ref, hf = impls.get("fast"), impls.get("reference"), impls.get("hf")
        if ref:
            ref_s, ref_txt = ref["s"], f"{ref['s']:.2f}"
        elif fast and size in per_merge:
            ref_s = per_merge[size] * fast["merges"]
            ref_txt = f"~{ref_s:,.0f} (est.)"
        else:
            ref_s, ref_txt = None, "-"
        fast_s = fast and fast["s"]
        hf_s = hf and hf["s"]
        table.append({"size": size, "vocab": vocab, "fast": fast_s, "reference": ref_s, "hf": hf_s,
                      "estimated": ref is None})  # fmt: skip
        lines.append(
            f"| {size} ({nbytes / 1e6:.2f} MB) | {vocab} | {fast['reached'] if fast else '-'} "
            f"| {_f(fast_s)} | {ref_txt} | {_f(hf_s)} "
            f"| {_ratio(ref_s, fast_s)} | {_ratio(fast_s, hf_s)} |"
        )
    for size, t in per_merge.items():
        lines.append(f"\nReference trainer measured: {t:.3f} s per merge on the {size} corpus.")
    return lines, table


def _f(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _ratio(a, b) -> str:
    return f"{a / b:.1f}x" if a and b else "-"


def patho_table(rows: list[dict]) -> list[str]:
    by = defaultdict(dict)
    for r in rows:
        by[(r["kind"], r["chars"])][r["impl"]] = r["s"]
    lines = ["| input | chars | " + " | ".join(f"{NAMES[i]} ms" for i in IMPLS) + " |",
             "|---|---:|" + "---:|" * len(IMPLS)]  # fmt: skip
    for (kind, n), t in sorted(by.items()):
        cells = " | ".join("-" if i not in t else f"{t[i] * 1e3:.2f}" for i in IMPLS)
        lines.append(f"| {kind} | {n} | {cells} |")
    return lines


def _case(r: dict) -> tuple:
    """What a row measured, apart from the implementation (rows of one case are compared)."""
    return tuple(r.get(k) for k in ("bench", "size", "kind", "chars", "vocab"))


def _case_name(r: dict) -> str:
    if r["bench"] == "pathological":
        return f"{r['kind']} {r['chars']:,} chars"
    return f"{r['bench']} {r['size']}" + (f" vocab {r['vocab']}" if r.get("vocab") else "")


def target_table(data: dict) -> list[str]:
    """Rows that carry a target (text, ``goals`` as ratio_report reads them, and ``vs``: the
    implementation of the same case they are timed against), each marked met or missed from
    ratio = vs time / row time. Empty if no row has one."""
    rows = [{**b.get("extra_info", {}), "s": b["stats"]["median"]} for b in data["benchmarks"]]
    cases = defaultdict(dict)
    for r in rows:
        if "bench" in r:
            cases[_case(r)][r["impl"]] = r
    lines = []
    for r in (r for r in rows if r.get("target")):
        base = cases[_case(r)].get(r["vs"])
        row = {**r, "ratio": base["s"] / r["s"] if base else None}
        verdict = ratio_report.check(ratio_report.goals_of([row])[r["target"]], row, base)
        verdict = verdict["text"] if verdict else "not checked (no goal for this row)"
        base_s = f"{base['s']:.3f}" if base else "not measured"
        lines.append(
            f"| {r['target'].removeprefix('target: ')} | {_case_name(r)} | {NAMES[r['impl']]} "
            f"| {r['s']:.3f} | {NAMES[r['vs']]} | {base_s} | {verdict} |"
        )
    if not lines:
        return []
    return [
        "## Targets (issue 14)",
        "",
        "ratio = the named implementation's time / ours, both measured in this run (> 1: ours "
        "is faster).",
        "",
        "| target | case | implementation | seconds | vs | vs seconds | verdict |",
        "|---|---|---|---:|---|---:|---|",
        *lines,
        "",
    ]


def plot(speeds: dict, train: list[dict], patho: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    size = "full" if "full" in speeds else next(iter(speeds), None)
    if size:
        impls = [i for i in IMPLS if i in speeds[size]]
        axes[0].barh([NAMES[i] for i in impls], [speeds[size][i] for i in impls], color="tab:blue")
        axes[0].set_xlabel(f"encode MB/s, GPT-2 vocab ({size} corpus), single thread")
        axes[0].invert_yaxis()
    labels = [f"{r['size']} v{r['vocab']}" for r in train]
    x = range(len(train))
    for k, impl in enumerate(("fast", "reference", "hf")):
        vals = [r[impl] or 0 for r in train]
        axes[1].bar([i + 0.27 * (k - 1) for i in x], vals, 0.27, label=NAMES[impl],
                    hatch=None if impl != "reference" else "//")  # fmt: skip
    axes[1].set_xticks(list(x), labels, rotation=45, ha="right")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("training seconds (log; hatched reference = estimate where marked)")
    axes[1].legend()
    for kind, style in (("repeat", "-"), ("random", "--")):
        for impl in IMPLS:
            pts = sorted(
                (r["chars"], r["s"]) for r in patho if r["kind"] == kind and r["impl"] == impl
            )
            if pts:
                axes[2].plot(*zip(*pts), style, marker="o", label=f"{NAMES[impl]} {kind}")
    axes[2].set_xscale("log")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("input characters")
    axes[2].set_ylabel("encode seconds")
    if axes[2].get_legend_handles_labels()[0]:
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bench_json", type=Path, help="pytest-benchmark JSON, or a tokenizer.raw.json")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    data, raw_path = raw.load(args.bench_json, args.out, "tokenizer")
    machine = machine_info(data)
    enc_lines, speeds = encode_table(rows_of(data, "encode"))
    train_lines, train = train_table(rows_of(data, "train"))
    patho = rows_of(data, "pathological")
    md = [
        "# Tokenizer benchmarks",
        "",
        raw.source_line(data, raw_path),
        "",
        f"{machine_line(machine)} Everything single thread. Medians; every ratio compares implementations measured in the same run. "
        "GPT-2's vocabulary for encoding (tiktoken and HF built from our loaded ranks); "
        "our reference encoder runs on a 1 MB slice. Ours (fast) keeps a piece -> ids cache "
        "across calls and the timed rounds follow a warm-up on the same text: 'ours (fast)' rows "
        "are warm-cache numbers, 'ours (fast, cold cache)' rows clear the cache before every "
        "call (what a first encode of new text costs).",
        "",
        *target_table(data),
        "## Encode throughput",
        "",
        *enc_lines,
        "",
        "## BPE training (GPT-2 split pattern)",
        "",
        "HF's trainer learns a similar but not identical vocabulary (its tie-breaking differs); "
        "the times compare the work, not the result. 'vocab reached' < asked means the corpus ran "
        "out of pairs.",
        "",
        *train_lines,
        "",
        "## Pathological inputs (GPT-2 vocabulary)",
        "",
        "'repeat' = one character n times (one huge pre-token: BPE's worst case); 'random' = random "
        "bytes read as Latin-1.",
        "",
        *patho_table(patho),
        "",
        "![tokenizer benchmarks](tokenizer.png)",
    ]
    (args.out / "TOKENIZER.md").write_text("\n".join(md) + "\n")
    plot(speeds, train, patho, args.out / "tokenizer.png")
    print(f"wrote {args.out / 'TOKENIZER.md'}, {args.out / 'tokenizer.png'} and {raw_path}")


if __name__ == "__main__":
    main()
