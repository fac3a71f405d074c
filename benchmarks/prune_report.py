"""PRUNE.md + one perplexity-vs-size PNG per base model, from ``myllm101 eval --json`` results
over pruned models (benchmarks/prune_table.py builds and measures them).

    python -m benchmarks.prune_report benchmarks/results/prune_eval.raw.json

The raw file is {base name: [eval results]} ("smollm2", "shakespeare": the never-quantized LLaMA
trained here), or a plain list (one SmolLM2 table, the older format). Each result is one model
directory as ``myllm101 eval`` measured it (quant/eval.py: perplexity on both held-out texts,
greedy agreement with its base, prefill / decode tokens/s at batch 1, size, peak memory), a base's
models all in one process, one after another. The float base is a row of its own; every pruned
row's speed-ups are its tokens/s over that row's, measured in the same run (a run with
``--no-speed`` has none). Perplexity changes are against the unpruned fp32 model, also for a
pruned-then-quantized row (whose own eval compares it with its pruned base).

Per base, a recovery table: each method's perplexity change as pruned, after full fine-tuning with
the masks kept, and after LoRA (merged, re-masked). And the issue's two targets: Wanda's perplexity
change at 50% unstructured is lower than magnitude's; removing 25% of heads and neurons
("heads+neurons 0.25") speeds prefill up >= 1.2x.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PREFILL_GOAL = 1.2
TITLES = {
    "smollm2": "SmolLM2-135M-Instruct (from a GGUF: its weights were quantized to Q4_1 once)",
    "shakespeare": "a never-quantized LLaMA (configs/llama-shakespeare.json, trained here in "
    "float32)",
}
PNG = {"smollm2": "prune.png"}  # others: prune-{base}.png


def ppl_change(r: dict, base: dict | None, text: str) -> float | None:
    """r's perplexity on ``text`` over the unpruned fp32 model's (not over r's own base)."""
    a = r.get("perplexity", {}).get(text, {}).get("ppl")
    b = (base or {}).get("perplexity", {}).get(text, {}).get("ppl")
    return a / b - 1 if a and b else None


def label(r: dict) -> str:
    """The row's method: "wanda 0.5", "wanda 0.5 + full rec.", "wanda 0.5 + LoRA rec.", "int8"."""
    p = r.get("pruning") or {}
    if not p or r.get("quantization") or r["scheme"] in ("int8", "w8a8") or "pruning" not in r:
        return r["scheme"]
    rec = p.get("recovery")
    if not rec:
        return f"{p['method']} {p['sparsity']:g}"
    kind = "LoRA" if rec.get("method") == "lora" else "full"
    return f"{p['method']} {p['sparsity']:g} + {kind} rec."


def recovery_text(rec: dict | None) -> str | None:
    """ "full, 20 steps: loss 5.09 -> 4.36" (mean loss on recovery batches before / after when
    recorded, else the first and last training losses)."""
    if not rec:
        return None
    kind = rec.get("method", "full") + (f" r={rec['rank']}" if rec.get("rank") else "")
    a, b = rec.get("loss_before", rec["first_loss"]), rec.get("loss_after", rec["last_loss"])
    text = f"{kind}, {rec['steps']} steps: loss {a:.2f} -> {b:.2f}"
    if rec.get("loss_unmasked") is not None:
        text += f" ({rec['loss_unmasked']:.2f} before re-masking)"
    return text


def pruning_rows(results: list[dict]) -> list[dict]:
    """One row per model: its pruning entry's numbers and its speed over the unpruned base's."""
    base = next((r for r in results if not r.get("pruning") and r["scheme"] == "fp32"), None)
    rows = []
    for r in results:
        p = r.get("pruning") or {}
        sp, bsp = r.get("speed", {}), (base or {}).get("speed", {})
        rows.append({
            "model": Path(r["model"]).name, "scheme": r["scheme"], "label": label(r),
            "params_m": (p.get("params_after") or 0) / 1e6 or None,
            "block_sparsity": p.get("block_sparsity"),
            "ppl_change": ppl_change(r, base, "shakespeare-test"),
            "ppl_change_stdlib": ppl_change(r, base, "python-stdlib"),
            "recovery": recovery_text(p.get("recovery")),
            "prefill_x": sp["prefill_tokens_per_s"] / bsp["prefill_tokens_per_s"]
                         if sp and bsp else None,
            "decode_x": sp["decode_tokens_per_s"] / bsp["decode_tokens_per_s"]
                        if sp and bsp else None,
            "alternating": r.get("prefill_alternating"),
        })  # fmt: skip
    return rows


def _f(v, spec: str, unit: str = "") -> str:
    return "-" if v is None else format(v, spec) + unit


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
    if s and s["alternating"]:  # timed alternating with the base: what the target is judged on
        a = s["alternating"]
        ok = a["ratio"] >= PREFILL_GOAL
        table = (
            "" if s["prefill_x"] is None else f"; {s['prefill_x']:.2f}x in the table, timed in turn"
        )
        out.append(f"target: 25% heads + neurons removed, prefill >= {PREFILL_GOAL}x: "
                   f"**{'met' if ok else 'missed'}** ({a['ratio']:.2f}x: {a['ms']:.0f} ms against "
                   f"{a['base_ms']:.0f}, median of {a['rounds']} rounds alternating with the "
                   f"base{table})")  # fmt: skip
    elif s and s["prefill_x"] is not None:
        ok = s["prefill_x"] >= PREFILL_GOAL
        out.append(f"target: 25% heads + neurons removed, prefill >= {PREFILL_GOAL}x: "
                   f"**{'met' if ok else 'missed'}** ({s['prefill_x']:.2f}x)")  # fmt: skip
    elif s:
        out.append("target: structured prefill speed-up: **not measured** (this run measured no "
                   "speed: `prune_table.py --no-speed`)")  # fmt: skip
    else:
        out.append("target: structured prefill speed-up: **not measured** (row missing)")
    return out


def recovery_table(rows: list[dict]) -> list[str]:
    """Per method: Shakespeare-test perplexity change as pruned, after full and after LoRA
    recovery (rows that exist)."""
    by = {r["label"]: r for r in rows}
    methods = [r["label"] for r in rows if "rec." not in r["label"] and r["block_sparsity"]
               is not None]  # fmt: skip
    lines = ["| method | pruned | + full recovery | + LoRA recovery |", "|---|---:|---:|---:|"]
    for m in methods:
        cells = [
            by.get(k, {}).get("ppl_change") for k in (m, f"{m} + full rec.", f"{m} + LoRA rec.")
        ]
        lines.append(f"| {m} | " + " | ".join(_f(c, "+.1%") for c in cells) + " |")
    return lines if len(lines) > 2 else []


def section(name: str, results: list[dict]) -> list[str]:
    from myllm101.quant.eval import format_table

    rows = pruning_rows(results)
    s = results[0].get("settings", {})
    speed = any(r.get("speed") for r in results)
    timing = (f"speed at batch 1, median of {s.get('rounds')} rounds, each model in turn in one "
              f"process" if speed else "no speed measured in this run (`--no-speed`)")  # fmt: skip
    png = PNG.get(name, f"prune-{name}.png")
    lines = [
        f"## {TITLES.get(name, name)}",
        "",
        f"CPU: {results[0].get('cpu', '?')}. Perplexity over the first {s.get('max_tokens')} "
        f"tokens of each held-out text (window {s.get('window')}, stride {s.get('stride')}); "
        f"{timing} (`myllm101 eval`).",
        "",
        "| model | method | params (M) | block zeros | ppl change shakesp. | ppl change stdlib | "
        "prefill vs base | decode vs base | recovery |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['label']} | {_f(r['params_m'], '.1f')} | "
            f"{_f(r['block_sparsity'], '.1%')} | {_f(r['ppl_change'], '+.1%')} | "
            f"{_f(r['ppl_change_stdlib'], '+.1%')} | {_f(r['prefill_x'], '.2f', 'x')} | "
            f"{_f(r['decode_x'], '.2f', 'x')} | {r['recovery'] or '-'} |"
        )
    lines += ["", *(f"- {t}" for t in targets(rows)), ""]
    rec = recovery_table(rows)
    if rec:
        lines += ["Recovery (perplexity change on the Shakespeare test split vs the unpruned "
                  "model):", "", *rec, ""]  # fmt: skip
    lines += ["Every number of `myllm101 eval`:", "", format_table(results), ""]
    lines += [f"![perplexity vs size]({png})", ""]
    return lines


def tables_of(raw) -> dict[str, list[dict]]:
    """{base: results}: the raw file's dict, or an older plain list as the SmolLM2 table."""
    return raw if isinstance(raw, dict) else {"smollm2": raw}


def markdown(raw) -> str:
    lines = [
        "# Pruning: what it costs and buys (CPU)",
        "",
        "Built by `python -m benchmarks.prune_table` (every row's `myllm101 prune` command, then "
        "`myllm101 eval` per base). `+ full rec.`: fine-tuned after pruning with every weight "
        "training and the pruned ones kept at 0; `+ LoRA rec.`: LoRA adapters on the block "
        "Linears trained, merged and the masks applied again (the update's entries at pruned "
        "positions are dropped; the loss before that is in the recovery column). Recovery losses: "
        "the mean next-token loss on the first 4 recovery batches before / after: batches it "
        "trained on, so a fall there says the training worked, and the perplexity columns (held-out "
        "text) say whether it helped.",
        "",
    ]
    for name, results in tables_of(raw).items():
        lines += section(name, results)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="prune_table.py's raw file (or eval --json output)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    raw = json.loads(args.results.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "PRUNE.md").write_text(markdown(raw))
    from myllm101.quant.plot import plot_perplexity_vs_size

    for name, results in tables_of(raw).items():
        png = args.out / PNG.get(name, f"prune-{name}.png")
        plot_perplexity_vs_size(results, png, title=f"Pruning: {TITLES.get(name, name)}")
    print(f"wrote {args.out / 'PRUNE.md'} and its PNGs")


if __name__ == "__main__":
    main()
