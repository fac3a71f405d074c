"""Strict mode turns a skip for a missing oracle into a failure (in CI), but not a GPU skip."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = """
import pytest
oracle = pytest.importorskip("no_such_oracle_module")  # a missing test oracle

def test_uses_the_oracle():
    assert oracle
"""
GPU_TEST = """
import pytest

def test_needs_a_gpu():
    pytest.skip("GPU: needs a CUDA device")
"""


def run(tmp_path, source: str, strict: str) -> subprocess.CompletedProcess:
    path = tmp_path / "test_case.py"
    path.write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["MYLLM101_STRICT"] = strict
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "tests.strict_skips", "-p",
           "no:cacheprovider", "--rootdir", str(tmp_path), str(path)]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("strict", ["1", "0"])
def test_missing_oracle_fails_only_in_strict_mode(tmp_path, strict):
    proc = run(tmp_path, TESTS, strict)
    out = proc.stdout + proc.stderr
    if strict == "1":  # a collection error: exit 2
        assert proc.returncode not in (0, 5), out
        assert "strict mode" in out and "no_such_oracle_module" in out
    else:  # the module is skipped, nothing runs: exit 5 (no tests collected) is pytest's answer
        assert proc.returncode in (0, 5) and "1 skipped" in out and "strict mode" not in out, out


def test_gpu_skip_stays_a_skip_in_strict_mode(tmp_path):
    proc = run(tmp_path, GPU_TEST, "1")
    assert proc.returncode == 0 and "1 skipped" in proc.stdout, proc.stdout + proc.stderr
