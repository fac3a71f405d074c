"""PRUNE.md + prune.png from ``myllm101 eval --json`` over pruned models (``make prune-table``).

    python -m benchmarks.prune_report benchmarks/results/prune_eval.json

Each result is one model directory as ``myllm101 eval`` measured it (quant/eval.py: perplexity on
both held-out texts, greedy agreement with its base, prefill / decode tokens/s at batch 1, size,
peak memory), all in one process, one after another. The float base is a row of its own; every
pruned row's speed-ups are its tokens/s over that row's, measured in the same run. The issue's two
targets are checked from the rows (the perplexity changes in the first table are against the
unpruned fp32 model, also for a pruned-then-quantized row, whose own eval compares it with its
pruned base): Wanda's perplexity change at 50% unstructured is lower than
magnitude's; removing 25% of heads and neurons ("heads+neurons 0.25") speeds prefill up >= 1.2x.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PREFILL_GOAL = 1.2


def ppl_change(r: dict, base: dict | None, text: str) -> float | None:
    """r's perplexity on ``text`` over the unpruned fp32 model's (not over r's own base)."""
    a = r.get("perplexity", {}).get(text, {}).get("ppl")
    b = (base or {}).get("perplexity", {}).get(text, {}).get("ppl")
    return a / b - 1 if a and b else None


def pruning_rows(results: list[dict]) -> list[dict]:
    """One row per model: its pruning entry's numbers and its speed over the unpruned base's."""
    base = next((r for r in results if not r.get("pruning") and r["scheme"] == "fp32"), None)
    rows = []
    for r in results:
        p = r.get("pruning") or {}
        sp, bsp = r.get("speed", {}), (base or {}).get("speed", {})
        rec = p.get("recovery") or {}
        rows.append({
            "model": Path(r["model"]).name, "scheme": r["scheme"],
            "params_m": (p.get("params_after") or 0) / 1e6 or None,
            "block_sparsity": p.get("block_sparsity"),
            "ppl_change": ppl_change(r, base, "shakespeare-test"),
            "ppl_change_stdlib": ppl_change(r, base, "python-stdlib"),
            "recovery": f"{rec['steps']} steps, loss {rec['first_loss']:.2f} -> "
                        f"{rec['last_loss']:.2f}" if rec else None,
            "prefill_x": sp["prefill_tokens_per_s"] / bsp["prefill_tokens_per_s"]
                         if sp and bsp else None,
            "decode_x": sp["decode_tokens_per_s"] / bsp["decode_tokens_per_s"]
                        if sp and bsp else None,
        })  # fmt: skip
    return rows


def _f(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def targets(rows: list[dict]) -> list[str]:
    """The issue's two checks, each met / missed / not measured, from the rows' schemes."""
    by = {r["scheme"]: r for r in rows}
    out = []
    mag, wanda = by.get("magnitude 0.5"), by.get("wanda 0.5")
    if mag and wanda and mag["ppl_change"] is not None and wanda["ppl_change"] is not None:
        ok = wanda["ppl_change"] < mag["ppl_change"]
        out.append(f"target: Wanda's perplexity change at 50% < magnitude's: **{'met' if ok else 'missed'}** "
                   f"({wanda['ppl_change']:+.1%} vs {mag['ppl_change']:+.1%}, Shakespeare test)")  # fmt: skip
    else:
        out.append("target: Wanda vs magnitude at 50%: **not measured** (rows missing)")
    s = by.get("heads+neurons 0.25")
    if s and s["prefill_x"] is not None:
        ok = s["prefill_x"] >= PREFILL_GOAL
        out.append(f"target: 25% heads + neurons removed, prefill >= {PREFILL_GOAL}x: "
                   f"**{'met' if ok else 'missed'}** ({s['prefill_x']:.2f}x)")  # fmt: skip
    else:
        out.append("target: structured prefill speed-up: **not measured** (row missing)")
    return out


def markdown(results: list[dict]) -> str:
    from myllm101.quant.eval import format_table

    rows = pruning_rows(results)
    cpu = results[0].get("cpu", "?")
    s = results[0].get("settings", {})
    lines = [
        "# Pruning: what it costs and buys (SmolLM2-135M, CPU)",
        "",
        f"CPU: {cpu}. Perplexity over the first {s.get('max_tokens')} tokens of each held-out "
        f"text (window {s.get('window')}, stride {s.get('stride')}); speed at batch 1, median "
        f"of {s.get('rounds')} rounds, each model in turn in one process (`myllm101 eval`).",
        "",
        "| model | method | params (M) | block zeros | ppl change shakesp. | ppl change stdlib | "
        "prefill vs base | decode vs base | recovery |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['scheme']} | {_f(r['params_m'], '.1f')} | "
            f"{_f(r['block_sparsity'], '.1%')} | {_f(r['ppl_change'], '+.1%')} | "
            f"{_f(r['ppl_change_stdlib'], '+.1%')} | {_f(r['prefill_x'], '.2f')}x | "
            f"{_f(r['decode_x'], '.2f')}x | {r['recovery'] or '-'} |"
        )
    lines += ["", *(f"- {t}" for t in targets(rows)), "", "Every number of `myllm101 eval`:", ""]
    lines += [format_table(results), "", "![perplexity vs size](prune.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="myllm101 eval --json output")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    results = json.loads(args.results.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "PRUNE.md").write_text(markdown(results))
    from myllm101.quant.plot import plot_perplexity_vs_size

    plot_perplexity_vs_size(results, args.out / "prune.png")
    print(f"wrote {args.out / 'PRUNE.md'} and {args.out / 'prune.png'}")


if __name__ == "__main__":
    main()
