"""Every pruned model of PRUNE.md, built and measured: ``myllm101 prune`` per row, then one
``myllm101 eval --json`` per base model, then benchmarks/prune_report.py.

    python -m benchmarks.prune_table                 # build what is missing, eval, PRUNE.md
    python -m benchmarks.prune_table --no-speed      # perplexity and size only (a busy machine)
    python -m benchmarks.prune_table --bases shakespeare --force

Two base models, one table each:
- "smollm2": SmolLM2-135M-Instruct from its GGUF, whose weights were stored quantized (Q4_1) once;
  pruned models in runs/pruned/NAME (the names PRUNE.md always had).
- "shakespeare": a never-quantized LLaMA trained here in float32 (configs/llama-shakespeare.json,
  its BPE tokenizer runs/tok-shakespeare-4k), in runs/llama-shakespeare; trained when missing
  (``myllm101 tokenizer train`` + ``myllm101 train`` with ``TRAIN_OVERRIDES``: 600 steps, 3-10
  minutes on 2 cores); pruned models in runs/pruned/shakespeare/NAME.

Rows (``variants``): magnitude and Wanda at 25% and 50%, 2:4, 25% of heads + neurons removed, each
as pruned and after ``--steps`` steps of full recovery fine-tuning ("-rec", masks kept); LoRA
recovery ("-lora": adapters merged and re-masked) of wanda-50 and 2:4; and wanda-50 quantized to
int8 after pruning. Recovery learning rates per base: ``RECOVER_LR``. A directory that exists is
reused unless ``--force``; ``--rows`` picks rows by name or glob.

``eval`` times each model in turn, so a slow spell of the VM lands on whichever model runs then
(rows of unchanged shapes read 0.71-1.23x of the base in one run). The structured rows' prefill,
the issue's speed target, is timed again after it with the rows alternating: the base and each
structured model in turn, ``--alternating-rounds`` times, median (``alternating_prefill``);
``--alternating-only`` does just that on the existing results and rewrites the report.

Speed depends on machine load, perplexity and size do not: ``--no-speed`` runs ``myllm101 eval``
with one timing round and drops its speed and memory numbers from the results (eval has no option
to skip them), so the report shows no speed column values and the prefill target as not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from fnmatch import fnmatchcase
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RAW = RESULTS / "prune_eval.raw.json"
TOKENIZER = "runs/tok-shakespeare-4k"
BASES = {  # name -> (model spec for prune / eval, directory of its pruned models)
    "smollm2": ("smollm2", "runs/pruned"),
    "shakespeare": ("runs/llama-shakespeare", "runs/pruned/shakespeare"),
}
# recovery learning rates {base: (full, lora)}: SmolLM2's are prune's defaults; the small LLaMA was
# trained at 2e-3 (min 2e-4), and at 2e-5 a 20-step recovery moves its loss by < 0.01
# the config's cosine runs over 2000 steps but its 180 s budget stops it at ~300 on 2 busy cores
# (val loss 5.4: pruning half of it then changes nothing measurable); 600 steps end the schedule
TRAIN_OVERRIDES = ("--max_steps=600", "--max_time_s=720", "--save_interval=600")
RECOVER_LR = {"smollm2": (2e-5, 5e-4), "shakespeare": (2e-4, 2e-3)}
METHODS = {  # row name -> the prune options
    "magnitude-25": ["--method", "magnitude", "--sparsity", "0.25"],
    "magnitude-50": ["--method", "magnitude", "--sparsity", "0.5"],
    "wanda-25": ["--method", "wanda", "--sparsity", "0.25"],
    "wanda-50": ["--method", "wanda", "--sparsity", "0.5"],
    "2of4": ["--method", "2:4"],
    "structured-25": ["--method", "heads+neurons", "--sparsity", "0.25"],
}
LORA = ("wanda-50", "2of4")  # also recovered with LoRA
QUANTIZED = ("wanda-50",)  # also quantized to int8 after pruning


def variants(steps: int, lrs: tuple[float, float] = RECOVER_LR["smollm2"]) -> dict[str, list[str]]:
    """{row name: ``myllm101 prune`` options}, in table order; a pruned row before its recoveries.
    lrs: the (full, lora) recovery learning rates."""
    out = {}
    for name, opts in METHODS.items():
        rec = [*opts, "--recover-steps", str(steps)]
        out[name] = opts
        out[f"{name}-rec"] = [*rec, "--recover-lr", str(lrs[0])]
        if name in LORA:
            out[f"{name}-lora"] = [*rec, "--recover-method", "lora", "--recover-lr", str(lrs[1])]
    return out


def myllm101(*args: str) -> None:
    """Run ``myllm101 ARGS`` in this Python (the repo root as working directory); fail loudly."""
    cmd = [sys.executable, "-m", "myllm101", *args]
    print("+ myllm101 " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def ensure_shakespeare_model(spec: str) -> None:
    """Train the never-quantized LLaMA (and its tokenizer) when its run directory is missing."""
    if (ROOT / spec).is_dir():
        return
    if not (ROOT / TOKENIZER / "myllm101_tokenizer.json").is_file():
        myllm101("tokenizer", "train", "--input", "data/shakespeare/train.txt", "--vocab-size",
                 "4096", "--special", "<|endoftext|>", "--out", TOKENIZER)  # fmt: skip
    myllm101("train", "--config", "configs/llama-shakespeare.json", f"--tokenizer={TOKENIZER}",
             "--overwrite", *TRAIN_OVERRIDES)  # fmt: skip


def row_names(steps: int) -> list[str]:
    """Every row's name in table order (the -int8 rows right after the model they quantize)."""
    names = []
    for name in variants(steps):
        names += [name, f"{name}-int8"] if name in QUANTIZED else [name]
    return names


def build(base: str, steps: int, force: bool, rows: list[str]) -> list[str]:
    """The pruned directories of ``base`` named in ``rows`` (missing ones, or all with ``force``)
    -> the eval specs, the base model first."""
    spec, out_dir = BASES[base]
    if base == "shakespeare":
        ensure_shakespeare_model(spec)
    specs, options = [spec], variants(steps, RECOVER_LR[base])
    for name in rows:
        out = f"{out_dir}/{name}"
        if force or not (ROOT / out / "model.safetensors").is_file():
            if name.endswith("-int8"):
                src = out.removesuffix("-int8")
                if not (ROOT / src / "model.safetensors").is_file():
                    myllm101("prune", "--model", spec, "--out", src, "--overwrite", "--no-progress",
                             *options[name.removesuffix("-int8")])  # fmt: skip
                myllm101(
                    "quantize", "--model", src, "--scheme", "int8", "--out", out, "--overwrite"
                )
            else:
                myllm101("prune", "--model", spec, "--out", out, "--overwrite", "--no-progress",
                         *options[name])  # fmt: skip
        specs.append(out)
    return specs


def evaluate(specs: list[str], max_tokens: int, speed: bool, tmp: Path) -> list[dict]:
    """``myllm101 eval --json`` over ``specs`` (one process: the speeds are comparable)."""
    args = ["eval", "--json", str(tmp), "--max-tokens", str(max_tokens)]
    if not speed:
        args += ["--rounds", "1"]
    for s in specs:
        args += ["--model", s]
    myllm101(*args)
    results = json.loads(tmp.read_text())
    if not speed:  # measured on a busy machine with one round: not numbers to report
        for r in results:
            r.pop("speed", None)
            r.pop("memory", None)
            r["settings"]["rounds"] = 0
    return results


def alternating_prefill(specs: list[str], rounds: int, tokens: int = 128) -> dict[str, float]:
    """{spec: median seconds of one forward over ``tokens`` ids at batch 1}, the models (fused as
    ``eval`` runs them) timed in alternation, one forward each per round, after a warm-up."""
    import statistics
    import time

    import torch

    from myllm101.fast.fuse import fused_copy
    from myllm101.quant.eval import load_any

    loaded = {s: load_any(str(ROOT / s) if (ROOT / s).is_dir() else s) for s in specs}
    models = {s: fused_copy(m.model) for s, m in loaded.items()}
    vocab = min(m.cfg.vocab_size for m in loaded.values())
    ids = torch.randint(0, vocab, (1, tokens), generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {s: [] for s in specs}
    with torch.inference_mode():
        for m in models.values():
            m(ids)
        for _ in range(rounds):
            for s, m in models.items():
                t0 = time.perf_counter()
                m(ids)
                times[s].append(time.perf_counter() - t0)
    return {s: statistics.median(t) for s, t in times.items()}


def add_alternating(results: list[dict], rounds: int) -> None:
    """Time the base (results[0]) and its structured rows alternately; each structured result
    gets ``prefill_alternating`` {ratio (base time / its time), ms, base_ms, rounds}."""
    structured = [r for r in results if Path(r["model"]).name.startswith("structured-")]
    if not structured:
        return
    base = results[0]["model"]
    print(f"alternating prefill: {base} and {len(structured)} structured models, {rounds} rounds",
          flush=True)  # fmt: skip
    med = alternating_prefill([base, *(r["model"] for r in structured)], rounds)
    for r in structured:
        ms, base_ms = med[r["model"]] * 1e3, med[base] * 1e3
        r["prefill_alternating"] = {"ratio": base_ms / ms, "rounds": rounds, "ms": ms,
                                    "base_ms": base_ms}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bases", default=",".join(BASES), help=f"comma-separated of {list(BASES)}")
    p.add_argument("--steps", type=int, default=20, help="recovery fine-tuning steps")
    p.add_argument("--max-tokens", type=int, default=2048, help="of each held-out text")
    p.add_argument("--no-speed", action="store_true", help="perplexity and size only")
    p.add_argument("--force", action="store_true", help="rebuild existing pruned directories")
    p.add_argument("--rows", default=None,
                   help="comma-separated row names or globs (default: every row)")  # fmt: skip
    p.add_argument("--json", type=Path, default=RAW, help="the results, {base: [eval results]}")
    p.add_argument("--alternating-rounds", type=int, default=15,
                   help="rounds of the structured rows' alternating prefill timing")  # fmt: skip
    p.add_argument("--alternating-only", action="store_true",
                   help="only (re)time the structured rows alternately, on the existing "
                        "--json")  # fmt: skip
    args = p.parse_args(argv)
    bases = [b.strip() for b in args.bases.split(",") if b.strip()]
    unknown = [b for b in bases if b not in BASES]
    if unknown or not bases:
        raise SystemExit(f"--bases: expected names from {list(BASES)}, got {args.bases!r}")
    if args.steps < 1 or args.max_tokens < 2:
        raise SystemExit(f"--steps / --max-tokens: expected >= 1 / >= 2, got {args.steps} / "
                         f"{args.max_tokens}")  # fmt: skip
    names = row_names(args.steps)
    rows = names
    if args.rows is not None:
        pats = [r.strip() for r in args.rows.split(",") if r.strip()]
        rows = [n for n in names if any(fnmatchcase(n, pat) for pat in pats)]
        if not rows:
            raise SystemExit(f"--rows: expected names or globs of {names}, got {args.rows!r}")
    if args.alternating_rounds < 1:
        raise SystemExit(f"--alternating-rounds: expected >= 1, got {args.alternating_rounds}")
    for base in bases:
        tables = {}  # the other bases' tables as the file has them now
        if args.json.is_file():
            old = json.loads(args.json.read_text())
            tables = old if isinstance(old, dict) else {"smollm2": old}  # the older list format
        if args.alternating_only:
            if base not in tables:
                raise SystemExit(f"--alternating-only: no {base!r} results in {args.json}")
            results = tables[base]
        else:
            specs = build(base, args.steps, args.force, rows)
            tmp = args.json.with_name(f".{args.json.stem}.{base}.tmp.json")
            results = evaluate(specs, args.max_tokens, not args.no_speed, tmp)
            tmp.unlink()
        if args.alternating_only or not args.no_speed:
            add_alternating(results, args.alternating_rounds)
        tables[base] = results
        args.json.write_text(json.dumps({b: tables[b] for b in BASES if b in tables}, indent=1))
        print(f"wrote {args.json} ({base})", flush=True)
    from benchmarks.prune_report import main as report

    report([str(args.json), "--out", str(args.json.parent)])


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
