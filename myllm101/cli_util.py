"""Shared by the subcommand modules (tokenizer, train, hub) of the ``myllm101`` command."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable


def guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn expected errors (bad input, missing files) into one stderr line and exit code 2."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return wrapper
