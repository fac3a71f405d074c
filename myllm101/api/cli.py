"""``myllm101 export`` and the model-agnostic ``generate``.

    myllm101 export --model MODEL --out DIR [--format hf|myllm101] [--task mlm|cls] [--overwrite]
        MODEL: "smollm2", "minilm", or a model / run / Hugging Face / adapter directory;
        hf: a directory transformers' from_pretrained loads (hub/export.py), with the tokenizer
    generate_any(args): ``myllm101 generate --model NAME|DIR PROMPT``: "smollm2" as before
        (hub/cli.py, with --adapter), any other name or directory through pipeline("text-generation")

``add_subparsers(subparsers)`` adds ``export``; ``run(argv)`` runs it alone (tests use it).
Errors print one line to stderr and exit 2 (cli_util.guarded).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from myllm101.cli_util import guarded, run_group
from myllm101.fast.timings import Timings


def cmd_export(args: argparse.Namespace) -> int:
    from myllm101.api import loading
    from myllm101.api.auto import save_pretrained

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ValueError(f"--out {out}: already exists; pass --overwrite to replace it")
    task = "sequence-classification" if args.task == "cls" else "base"
    m = loading.load(args.model, task)
    if m.directory is not None and out.resolve() in (
        m.directory.resolve(),
        Path(args.model).resolve(),
    ):
        raise ValueError(f"--out {out}: is the input model's directory; expected another one")
    if args.task is not None and m.model.cfg.model_type != "bert":
        raise ValueError(f"--task: only for BERT models, got a {m.model.cfg.model_type} model")
    save_pretrained(m.model, out, m.tokenizer, args.format, args.task)
    tok = "with its tokenizer" if m.tokenizer is not None else "without a tokenizer (none found)"
    print(f"exported {args.model} ({m.model.cfg.model_type}) to {out} as {args.format}, {tok}")
    return 0


def generate_any(args: argparse.Namespace) -> int:
    """``generate`` for any causal LM: args.model, prompt, chat, max_new_tokens, temperature,
    seed, dtype, adapter (hub/cli.py's ``generate`` arguments)."""
    if args.model == "smollm2":
        from myllm101.hub.cli import cmd_generate

        return cmd_generate(args)
    from myllm101.api.pipeline import pipeline

    if args.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens: expected >= 0, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise ValueError(f"--temperature: expected >= 0, got {args.temperature}")
    if getattr(args, "adapter", None) is not None:
        raise ValueError(
            "--adapter: for --model smollm2 only; for another model pass the adapter directory "
            "itself as --model (its recorded base is loaded under it)"
        )
    pipe = pipeline("text-generation", model=args.model, dtype=args.dtype)
    if args.chat and not hasattr(pipe.tokenizer, "bpe"):
        raise ValueError("--chat: expected a model with a chat template (smollm2), got a plain LM")
    timings = Timings()
    out = pipe(args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
               seed=args.seed, chat=args.chat, return_full_text=False,
               compile_step=getattr(args, "compile", False), timings=timings)  # fmt: skip
    print(out[0]["generated_text"])
    print(timings.summary(), file=sys.stderr)
    return 0


def add_subparsers(subparsers) -> None:
    """Add ``export`` to an ``add_subparsers()`` object."""
    p = subparsers.add_parser("export", help="write a model as a Hugging Face (or our) directory")
    p.add_argument("--model", required=True, metavar="MODEL",
                   help="smollm2, minilm, or a model / run / Hugging Face / adapter directory")  # fmt: skip
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--format", choices=("hf", "myllm101"), default="hf")
    p.add_argument("--task", choices=("mlm", "cls"), default=None,
                   help="BERT: the class config.json names (BertForMaskedLM / "
                   "BertForSequenceClassification); default mlm")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=guarded(cmd_export))


def run(argv: list[str] | None = None) -> int:
    """``myllm101 export ...`` on its own -> exit code."""
    return run_group(add_subparsers, argv)


if __name__ == "__main__":
    sys.exit(run())
