"""``myllm101 tokenizer ...``: train, encode, decode and show byte-level BPE tokenizers.

    myllm101 tokenizer train  --input FILE|- --vocab-size 8192 --out DIR [--pattern gpt2|gpt4]
                              [--impl fast|reference] [--special "<|endoftext|>"] [--errors ...]
    myllm101 tokenizer encode --tokenizer gpt2|cl100k_base|o200k_base|DIR [--impl ...] FILE|-
    myllm101 tokenizer decode --tokenizer ... FILE|-          (a JSON list of ids)
    myllm101 tokenizer show   --tokenizer ... "text"|-        (coloured tokens, ids, count)

Exact text in, exact ids out: input text (a file or stdin) is read as bytes and decoded as UTF-8
with every character kept (``\\r\\n``, lone ``\\r``, a BOM, NULs; see ``myllm101.textio``).
Invalid UTF-8 is an error naming the byte offset of the first bad byte, or with
``--errors replace`` (train, encode, show) U+FFFD for each bad sequence. ``decode`` writes the
decoded text to stdout as UTF-8 bytes, unchanged.

``add_subparsers(subparsers)`` hooks these into the main ``myllm101`` parser; ``run(argv)`` runs
them on their own (tests use it). Errors print one line to stderr and return exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from myllm101.cli_util import guarded, run_group
from myllm101.textio import ERRORS, InvalidUTF8Error, read_text_exact

PATTERNS = ("gpt2", "gpt4", "o200k")
# alternating background colours for `show` (ANSI SGR codes; black text stays readable on all)
BACKGROUNDS = ("\x1b[30;46m", "\x1b[30;43m", "\x1b[30;42m", "\x1b[30;45m")
RESET = "\x1b[0m"


def read_input(path: str, errors: str = "strict") -> str:
    """The exact text of ``path`` (or stdin for "-"): bytes decoded as UTF-8, ``\\r\\n``, lone
    ``\\r``, a BOM and NULs kept; invalid UTF-8 is a ValueError naming the byte offset (with a hint
    at ``--errors replace``) unless ``errors="replace"``.
    """
    try:
        return read_text_exact(path, errors=errors, what="input")
    except InvalidUTF8Error as e:
        raise ValueError(f"{e} (--errors replace decodes bad bytes as U+FFFD)") from None


def write_text_exact(text: str) -> None:
    """Write ``text`` to stdout as UTF-8 bytes, unchanged (no newline translation); a stdout
    without ``.buffer`` (a captured stream in tests) gets the text itself.
    """
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    sys.stdout.flush()  # anything already written as text goes first
    buffer.write(text.encode("utf-8"))
    buffer.flush()


class _MergeProgress:
    """A stdout stand-in that turns bpe_train's verbose 'merge k/n: ...' lines into a tqdm bar."""

    def __init__(self, bar):
        self.bar, self.buffer = bar, ""

    def write(self, s: str) -> int:
        self.buffer += s
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            if line.startswith("merge "):
                self.bar.update(1)
        return len(s)

    def flush(self) -> None:
        pass


def cmd_train(args: argparse.Namespace) -> int:
    from contextlib import redirect_stdout

    from tqdm import tqdm

    from myllm101 import bpe_patterns
    from myllm101.tokenizer.formats import save_tokenizer, tokenizer_class

    pattern = {
        "gpt2": bpe_patterns.GPT2_SPLIT_PATTERN,
        "gpt4": bpe_patterns.GPT4_SPLIT_PATTERN,
        "o200k": bpe_patterns.O200K_SPLIT_PATTERN,
    }[args.pattern]
    train = _impl_module(args.impl).bpe_train
    out = Path(args.out)
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():  # say so before training, not after
        raise ValueError(f"{out}: expected a directory for the tokenizer (--out), but {existing} "
                         "is a file")  # fmt: skip
    text = read_input(args.input, args.errors)
    specials = args.special or []
    t0 = time.perf_counter()
    total = max(0, args.vocab_size - 256 - len(specials))
    with tqdm(total=total, desc="bpe merges", unit="merge", file=sys.stderr) as bar:
        with redirect_stdout(_MergeProgress(bar)):
            tok = train(
                text, args.vocab_size, pattern=pattern, special_tokens=specials, verbose=True
            )
    seconds = time.perf_counter() - t0
    name = args.name or Path(args.out).name
    tok = tokenizer_class(args.impl)(
        tok.mergeable_ranks, tok.pattern, tok.special_tokens, name=name
    )
    path = save_tokenizer(tok, args.out)
    n_tokens = len(tok.encode_ordinary(text))
    n_bytes = len(text.encode("utf-8"))
    ratio = n_bytes / max(n_tokens, 1)
    print(
        f"trained {name!r}: vocab size {tok.n_vocab} ({len(tok.mergeable_ranks)} ranks + "
        f"{len(tok.special_tokens)} special), compression {ratio:.2f} bytes/token on "
        f"{args.input} ({n_bytes} bytes -> {n_tokens} tokens), {seconds:.1f}s -> {path}"
    )
    return 0


def _impl_module(impl: str):
    if impl == "fast":
        from myllm101.fast import bpe
    else:
        from myllm101.reference import bpe
    return bpe


def cmd_encode(args: argparse.Namespace) -> int:
    from myllm101.tokenizer.pretrained import load_any

    tok = load_any(args.tokenizer, args.impl)
    text = read_input(args.file, args.errors)
    ids = (
        tok.encode(text, allowed_special="all") if args.allow_special else tok.encode_ordinary(text)
    )
    print(json.dumps(ids))
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from myllm101.tokenizer.pretrained import load_any

    tok = load_any(args.tokenizer, args.impl)
    raw = read_input(args.file)
    try:
        ids = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"decode input: expected a JSON list of ints, got a parse error: {e}"
        ) from None
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in ids
    ):
        raise ValueError(f"decode input: expected a JSON list of ints, got {raw.strip()[:60]!r}")
    write_text_exact(tok.decode(ids))
    return 0


def token_label(tok, token_id: int) -> str:
    """A token as readable text; bytes that are not whole UTF-8 characters show as \\xNN."""
    return tok.token_bytes(token_id).decode("utf-8", errors="backslashreplace")


def render_tokens(tok, ids: list[int], color: bool = True) -> str:
    """The tokens side by side, each on an alternating background colour (or in [brackets])."""
    parts = []
    for k, i in enumerate(ids):
        label = token_label(tok, i)
        parts.append(
            f"{BACKGROUNDS[k % len(BACKGROUNDS)]}{label}{RESET}" if color else f"[{label}]"
        )
    return "".join(parts)


def cmd_show(args: argparse.Namespace) -> int:
    from myllm101.tokenizer.pretrained import load_any

    tok = load_any(args.tokenizer, args.impl)
    text = read_input("-", args.errors) if args.text == "-" else args.text
    ids = (
        tok.encode(text, allowed_special="all") if args.allow_special else tok.encode_ordinary(text)
    )
    color = not args.no_color and "NO_COLOR" not in os.environ
    print(render_tokens(tok, ids, color))
    print(f"ids: {json.dumps(ids)}")
    print(f"{len(ids)} tokens, {len(text.encode('utf-8'))} bytes ({tok.name})")
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", default="gpt2", help="gpt2, cl100k_base, o200k_base or a DIR")
    p.add_argument("--impl", choices=("fast", "reference"), default="fast")


def _add_errors(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--errors",
        choices=ERRORS,
        default="strict",
        help="invalid UTF-8 in the input: strict = an error naming the byte offset (default); "
        "replace = U+FFFD for each bad byte sequence",
    )


def add_subparsers(subparsers) -> argparse.ArgumentParser:
    """Add ``tokenizer {train,encode,decode,show}`` to an ``add_subparsers()`` object."""
    top = subparsers.add_parser("tokenizer", help="train, encode, decode and show BPE tokenizers")
    sub = top.add_subparsers(dest="tokenizer_command", required=True)

    p = sub.add_parser("train", help="learn a byte-level BPE vocabulary from a text file")
    p.add_argument("--input", required=True, help="UTF-8 text file (or - for stdin)")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--out", required=True, help="directory for myllm101_tokenizer.json")
    p.add_argument("--pattern", choices=PATTERNS, default="gpt4", help="pre-tokenization regex")
    p.add_argument("--impl", choices=("fast", "reference"), default="fast")
    p.add_argument("--special", action="append", help="a special token (repeatable)")
    p.add_argument("--name", default=None, help="tokenizer name (default: the --out folder name)")
    _add_errors(p)
    p.set_defaults(func=guarded(cmd_train))

    p = sub.add_parser("encode", help="print the ids of a text file as a JSON list")
    _add_common(p)
    p.add_argument("file", help="UTF-8 text file, or - for stdin")
    p.add_argument("--allow-special", action="store_true", help="encode special tokens as such")
    _add_errors(p)
    p.set_defaults(func=guarded(cmd_encode))

    p = sub.add_parser("decode", help="print the text of a JSON list of ids")
    _add_common(p)
    p.add_argument("file", help="file holding a JSON list of ids, or - for stdin")
    p.set_defaults(func=guarded(cmd_decode))

    p = sub.add_parser("show", help="show how a text splits into tokens")
    _add_common(p)
    p.add_argument("text", help="the text (or - for stdin)")
    p.add_argument("--allow-special", action="store_true", help="encode special tokens as such")
    p.add_argument("--no-color", action="store_true", help="brackets instead of ANSI colours")
    _add_errors(p)
    p.set_defaults(func=guarded(cmd_show))
    return top


def run(argv: list[str] | None = None) -> int:
    """``myllm101 tokenizer ...`` on its own: run(["show", "hello"]) -> exit code."""
    return run_group(add_subparsers, argv, prefix=("tokenizer",))


if __name__ == "__main__":
    sys.exit(run())
