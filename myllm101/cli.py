"""The ``myllm101`` command: thin argument parsing over the library.

myllm101 parity [--dtype float64|float32] [--size small|realistic]
"""

from __future__ import annotations

import argparse
import os
import sys


def cmd_parity(args: argparse.Namespace) -> int:
    """Print reference-vs-fast max errors for every component (the demo's summary table)."""
    from tqdm import tqdm

    from myllm101.compare import all_cases, parity_row

    tol = {"float64": 1e-10, "float32": 1e-5}[args.dtype]
    cases = all_cases(size=args.size, dtype=args.dtype, seed=args.seed)
    rows = [parity_row(c) for c in tqdm(cases, desc="parity", unit="case", leave=False)]
    header = f"{'component':<24} {'shape':<28} {'forward err':>12} {'backward err':>13}  ok"
    print(f"reference (NumPy) vs fast (PyTorch), {args.dtype}, {args.size} shapes")
    print("err = max |reference - fast| / max |reference|, over the output and every gradient")
    print(header)
    print("-" * len(header))
    bad = 0
    for r in rows:
        bwd = "-" if r["backward"] is None else f"{r['backward']:.2e}"
        worst = max(r["forward"], r["backward"] or 0.0)
        ok = worst <= tol
        bad += not ok
        print(
            f"{r['name']:<24} {r['shape']:<28} {r['forward']:>12.2e} {bwd:>13}  {'yes' if ok else 'NO'}"
        )
    print(f"{len(rows) - bad}/{len(rows)} components agree within {tol:g}")
    return 1 if bad else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="myllm101", description="LLMs from scratch, twice.")
    p.add_argument("--debug", action="store_true",
                   help="show an error's full traceback (same as MYLLM101_DEBUG=1)")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    par = sub.add_parser("parity", help="reference vs fast max error for every component")
    par.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    par.add_argument("--size", choices=("small", "realistic"), default="small")
    par.add_argument("--seed", type=int, default=0)
    par.set_defaults(func=cmd_parity)

    from myllm101.tokenizer import cli as tokenizer_cli

    tokenizer_cli.add_subparsers(sub)

    from myllm101.train import cli as train_cli

    train_cli.add_subparsers(sub)

    from myllm101.hub import cli as hub_cli

    hub_cli.add_subparsers(sub)

    from myllm101.quant import cli as quant_cli

    quant_cli.add_subparsers(sub)

    from myllm101.finetune import cli as finetune_cli

    finetune_cli.add_subparsers(sub)

    from myllm101.prune import cli as prune_cli

    prune_cli.add_subparsers(sub)

    from myllm101.api import cli as api_cli

    api_cli.add_subparsers(sub)

    from myllm101.rag import cli as rag_cli

    rag_cli.add_subparsers(sub)

    from myllm101.serve import cli as serve_cli

    serve_cli.add_subparsers(sub)

    from myllm101.ui import cli as ui_cli

    ui_cli.add_subparsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from myllm101.train.cli import parse_args  # `train` takes free-form --key=value overrides

    args = parse_args(build_parser(), argv)
    if args.debug:  # read by cli_util.guarded
        os.environ["MYLLM101_DEBUG"] = "1"
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
