"""``myllm101 embed`` and ``myllm101 generate --model smollm2``: shipped pretrained models.

    myllm101 embed --model minilm [--impl fast|reference] [--dtype auto|fp32|bf16] [TEXT ...]
        -> one JSON list of vectors (384 floats each, unit length); no TEXT: one per stdin line
    myllm101 generate --model smollm2 [--chat] [--max-new-tokens N] [--temperature 0]
                      [--adapter DIR] [--compile] PROMPT
        -> the generated text (greedy at temperature 0); --adapter: with a LoRA adapter
           (``myllm101 finetune``'s run directory or any PEFT adapter of SmolLM2) merged in;
           --compile: decode through torch.compile (fast/compiled_decode.py)

``add_subparsers(subparsers)`` hooks both into the main parser; ``run(argv)`` runs them alone
(tests use it). Errors print one line to stderr and return exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from myllm101.cli_util import guarded, run_group
from myllm101.fast.timings import Timings


def stdin_lines() -> list[str]:
    """The lines of stdin, read as bytes and decoded as strict UTF-8 (a ValueError naming the byte
    offset otherwise). Lines end at "\\n" only (a lone "\\r" stays inside its line); one "\\r"
    before the "\\n" (a CRLF line ending) is dropped; a last line needs no "\\n".
    """
    from myllm101.textio import read_text_exact

    lines = read_text_exact("-", what="embed").split("\n")
    if lines[-1] == "":  # after the final newline (or empty stdin): no line
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def cmd_embed(args: argparse.Namespace) -> int:
    from myllm101.hub.embed import embed

    texts = args.texts or stdin_lines()
    if not texts:
        raise ValueError("embed: expected TEXT arguments or lines on stdin, got none")
    if args.impl == "fast":
        from myllm101.device import choose_inference_dtype

        choice = choose_inference_dtype(args.dtype)
        print(f"dtype: {choice.value} ({choice.reason})", file=sys.stderr)
    vectors = embed(texts, model=args.model, impl=args.impl, dtype=args.dtype)
    print(json.dumps([[round(float(x), 7) for x in v] for v in vectors]))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from myllm101.device import choose_inference_dtype
    from myllm101.hub.smollm2 import generate_text

    if args.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens: expected >= 0, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise ValueError(f"--temperature: expected >= 0, got {args.temperature}")
    choice = choose_inference_dtype(args.dtype)
    timings = Timings()
    if args.adapter is not None:
        print(_generate_adapted(args, choice, timings))
        print(timings.summary(), file=sys.stderr)
        return 0
    print(f"dtype: {choice.value} ({choice.reason})", file=sys.stderr)
    text = generate_text(
        args.prompt,
        chat=args.chat,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        dtype=choice.value,
        compile_step=args.compile,
        timings=timings,
    )
    print(text)
    print(timings.summary(), file=sys.stderr)
    return 0


def _generate_adapted(args: argparse.Namespace, choice, timings: Timings) -> str:
    """SmolLM2 with the LoRA adapter ``args.adapter`` loaded (and merged): its generated text."""
    from myllm101.finetune.adapted import load_adapted_smollm2
    from myllm101.hub.smollm2 import chat_prompt, generate_ids

    model, tok, used = load_adapted_smollm2(args.adapter, choice.value)
    why = choice.reason if used == choice.value else "an int8 base keeps its float32 adapter"
    print(f"dtype: {used} ({why}); adapter: {args.adapter}", file=sys.stderr)
    text = chat_prompt([{"role": "user", "content": args.prompt}]) if args.chat else args.prompt
    ids = tok.encode(text)
    stop = (tok.eos_id,) if tok.eos_id is not None else ()
    out = generate_ids(
        model, ids, args.max_new_tokens, args.temperature, stop, args.seed, args.compile, timings
    )
    return tok.decode(out[len(ids) :], skip_special_tokens=True)


def add_subparsers(subparsers) -> None:
    """Add ``embed`` and ``generate`` to an ``add_subparsers()`` object."""
    p = subparsers.add_parser("embed", help="sentence embeddings (MiniLM) as JSON")
    p.add_argument("--model", choices=("minilm",), default="minilm")
    p.add_argument("--impl", choices=("fast", "reference"), default="fast")
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto",
                   help="weights' dtype (--impl fast); auto: bf16 where this CPU runs it "
                   "natively, else fp32 (fp32 matches sentence-transformers within 1e-5)")  # fmt: skip
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts (default: stdin lines)")
    p.set_defaults(func=guarded(cmd_embed))

    p = subparsers.add_parser("generate", help="generate text with a pretrained model or a run")
    p.add_argument("--model", required=True, metavar="NAME|DIR",
                   help="smollm2, or a model / run / Hugging Face / adapter directory")  # fmt: skip
    p.add_argument("--chat", action="store_true", help="wrap PROMPT as a user turn (ChatML)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto",
                   help="weights' dtype; auto: bf16 where this CPU/GPU runs it natively "
                   "(1.4-1.8x faster decoding here), else fp32")  # fmt: skip
    p.add_argument("--adapter", default=None, metavar="DIR",
                   help="a LoRA adapter (a finetune run directory, its best/, or PEFT's "
                   "adapter directory) loaded onto the model before generating")  # fmt: skip
    p.add_argument("--compile", action="store_true",
                   help="decode through torch.compile of the decode step (float and int8 models: "
                   "SmolLM2 fp32 2.4x, bf16 2.2x faster tokens after a one-off compile of "
                   "~70 s)")  # fmt: skip
    p.add_argument("prompt", metavar="PROMPT")
    p.set_defaults(func=guarded(cmd_generate_any))


def cmd_generate_any(args: argparse.Namespace) -> int:
    """``generate`` for any model: smollm2 here (``cmd_generate``), the rest through the API."""
    from myllm101.api.cli import generate_any

    return generate_any(args)


def run(argv: list[str] | None = None) -> int:
    """``myllm101 embed ...`` / ``myllm101 generate ...`` on their own -> exit code."""
    return run_group(add_subparsers, argv)


if __name__ == "__main__":
    sys.exit(run())
