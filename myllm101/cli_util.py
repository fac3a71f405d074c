"""Shared by the subcommand modules (tokenizer, train, hub) of the ``myllm101`` command.

Errors: a command wrapped in ``guarded`` reports an expected error (bad input, a missing, corrupted
or edited file, ...) as one ``error: ...`` line on stderr and exits with code 2. Set the environment
variable ``MYLLM101_DEBUG=1`` (or pass ``myllm101 --debug ...``) to get the full traceback instead.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable

DEBUG_ENV = "MYLLM101_DEBUG"


def debug_enabled() -> bool:
    """True when ``MYLLM101_DEBUG`` is set to anything but "", "0", "false", "no" or "off"."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def expected_errors() -> tuple[type[BaseException], ...]:
    """What a bad or missing input file raises: reported in one line, not as a traceback.

    ValueError covers JSON and UTF-8 errors; OSError missing, unreadable or misplaced files
    (FileNotFoundError, PermissionError, IsADirectoryError, ...). The format libraries' own errors
    are added when they are already imported (a command that never loaded them cannot raise them).
    """
    errors: list[type[BaseException]] = [ValueError, OSError]
    if "pickle" in sys.modules:  # torch.load(weights_only=True) of a damaged file
        errors.append(sys.modules["pickle"].UnpicklingError)
    if "safetensors" in sys.modules:
        errors.append(sys.modules["safetensors"].SafetensorError)
    if "regex" in sys.modules:  # a split pattern that does not compile
        errors.append(sys.modules["regex"].error)
    return tuple(errors)


def guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn expected errors (bad input, missing or corrupted files) into one stderr line and exit
    code 2; with ``MYLLM101_DEBUG=1`` they propagate with their traceback."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except Exception as e:
            if debug_enabled() or not isinstance(e, expected_errors()):
                raise
            print(f"error: {e}", file=sys.stderr)
            return 2

    return wrapper


def run_group(
    add_subparsers: Callable, argv: list[str] | None, prefix: tuple[str, ...] = ()
) -> int:
    """Run one module's subcommands on their own (tests, ``python -m``): a parser holding just
    what ``add_subparsers`` registers, ``argv`` (default sys.argv[1:]) after ``prefix``."""
    import sys

    parser = argparse.ArgumentParser(prog="myllm101")
    add_subparsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([*prefix, *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)
