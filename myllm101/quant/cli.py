"""``myllm101 quantize`` and ``myllm101 eval``.

    myllm101 quantize --model smollm2|minilm|DIR --scheme int8|w8a8|int4-g64|gptq-int4-g64 --out DIR
        [--skip NAME_OR_GLOB ...] [--calibration-windows 16] [--data-dir data/shakespeare]
        -> a model directory (config.json with "quantization", model.safetensors, tokenizer,
           manifest.json); prints what was quantized and the sizes
    myllm101 eval --model DIR [--model DIR2 ...] [--json PATH] [--plot PNG] [--max-tokens 8192]
        -> a table (size, perplexity on both held-out texts, greedy agreement, prefill/decode
           tokens/s, peak memory; MiniLM: cosine and retrieval agreement) and, per model
           directory, DIR/eval.json with every number and the CPU (a shipped name: eval-NAME.json)

``add_subparsers(subparsers)`` hooks both into the main parser; ``run(argv)`` runs them alone.
Errors print one line to stderr and return exit code 2 (cli_util.guarded).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from myllm101.cli_util import guarded, run_group


def cmd_quantize(args: argparse.Namespace) -> int:
    from myllm101.quant.eval import load_for_output
    from myllm101.quant.heldout import calibration_batches
    from myllm101.quant.quantize import (
        default_skip,
        parse_scheme,
        quantize,
        quantized_bytes,
        save_quantized,
    )

    scheme = parse_scheme(args.scheme)  # a bad name fails before any model is loaded
    out = Path(args.out)
    m = load_for_output(args.model, out, args.overwrite)
    calibration = None
    if scheme.needs_calibration:
        if m.cfg.model_type == "bert":
            raise ValueError(f"--scheme {scheme.name}: GPTQ calibrates causal LMs only, got BERT")
        calibration = calibration_batches(
            m.tokenizer, m.cfg.vocab_size, args.calibration_windows, seq_len=min(256, m.cfg.block_size),
            data_dir=args.data_dir,
        )  # fmt: skip
    skip = tuple(args.skip) if args.skip is not None else default_skip(scheme.name)
    quantize(m.model, scheme.name, skip=skip, calibration=calibration, progress=True)
    tok = getattr(m.tokenizer, "bpe", m.tokenizer)  # a GGUF's: our BPE inside it
    if m.cfg.model_type == "bert":
        tok = None  # WordPiece: its vocab.txt travels as an extra file
    base = args.model if m.directory is None else str(m.directory.resolve())
    save_quantized(m.model, out, m.cfg, tok, base=base, extra_files=m.extra_files)
    sizes = quantized_bytes(m.model)
    ties = m.model.quantization.get("tied", {})
    tied = "".join(f"; {e} shares {h}'s codes" for e, h in ties.items())
    n = sizes["modules"]
    on_disk = (out / "model.safetensors").stat().st_size
    print(
        f"{args.model} -> {out}: {n} Linear modules quantized to {scheme.name} (skipped: "
        f"{', '.join(skip) or 'none'}{tied}); their weights "
        f"{sizes['quantized'] / 2**20:.1f} MB vs {sizes['float'] / 2**20:.1f} MB in float32 "
        f"({sizes['float'] / max(sizes['quantized'], 1):.2f}x smaller); model.safetensors "
        f"{on_disk / 2**20:.1f} MB"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from myllm101.device import hardware
    from myllm101.quant.eval import EvalSettings, evaluate, format_table

    settings = EvalSettings(data_dir=args.data_dir)
    for name, v, low in (("--max-tokens", args.max_tokens, 2), ("--rounds", args.rounds, 1)):
        if v is not None and v < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {v}")
    if args.max_tokens is not None:
        settings.max_tokens = args.max_tokens
    if args.rounds is not None:
        settings.rounds = args.rounds
    results = []
    for spec in args.model:
        r = evaluate(spec, settings, progress=True)
        results.append(r)
        if args.json is None:
            d = Path(spec)
            path = d / "eval.json" if d.is_dir() else Path(f"eval-{spec}.json")
            path.write_text(json.dumps(r, indent=2) + "\n")
            print(f"wrote {path}", file=sys.stderr)
    if args.json is not None:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"CPU: {hardware().summary()}")
    print(format_table(results))
    if args.plot is not None:
        from myllm101.quant.plot import plot_perplexity_vs_size

        plot_perplexity_vs_size(results, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def add_subparsers(subparsers) -> None:
    """Add ``quantize`` and ``eval`` to an ``add_subparsers()`` object."""
    from myllm101.quant.quantize import SCHEMES

    p = subparsers.add_parser(
        "quantize", help="quantize a model's Linear layers into a new directory"
    )
    p.add_argument("--model", required=True, help="smollm2, minilm, or a model/run directory")
    p.add_argument("--scheme", required=True, help=f"one of: {', '.join(SCHEMES)}")
    p.add_argument("--out", required=True, help="the new model directory")
    p.add_argument("--skip", nargs="*", default=None, metavar="NAME",
                   help="Linear names or glob patterns kept in float (default: none for int8 and "
                        "w8a8, lm_head for int4)")  # fmt: skip
    p.add_argument("--calibration-windows", type=int, default=16,
                   help="GPTQ: token windows of the train split (256 tokens each, seeded)")  # fmt: skip
    p.add_argument("--data-dir", default="data/shakespeare", help="the corpus (make data)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=guarded(cmd_quantize))

    p = subparsers.add_parser("eval", help="perplexity, agreement, speed, size of models")
    p.add_argument("--model", action="append", required=True,
                   help="a model directory, smollm2 or minilm (repeat for a table)")  # fmt: skip
    p.add_argument("--json", default=None, help="write all results here (default: DIR/eval.json)")
    p.add_argument("--plot", default=None, help="a PNG of perplexity vs size")
    p.add_argument("--max-tokens", type=int, default=None, help="of each held-out text (8192)")
    p.add_argument("--rounds", type=int, default=None, help="timing rounds (median; 3)")
    p.add_argument("--data-dir", default="data/shakespeare", help="the corpus (make data)")
    p.set_defaults(func=guarded(cmd_eval))


def run(argv: list[str] | None = None) -> int:
    """``myllm101 quantize ...`` / ``myllm101 eval ...`` on their own -> exit code."""
    return run_group(add_subparsers, argv)


if __name__ == "__main__":
    sys.exit(run())
