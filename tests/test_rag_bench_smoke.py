"""The retrieval benchmark suite must not rot: its smoke rows (tiny corpora, every peer) run and
build the ratio report (no timing asserts)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import ratio_report

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("rank_bm25", "bm25s", "faiss")


@pytest.mark.slow
def test_rag_benchmarks_run_and_report(tmp_path):
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"not installed: {missing}")
    out = tmp_path / "rag.json"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "benchmarks/test_rag.py",
           "-k", "smoke", "--benchmark-only", f"--benchmark-json={out}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-3000:]
    ratio_report.main([str(out), "--name", "RAG", "--title", "RAG smoke", "--out", str(tmp_path)])
    groups = ratio_report.load_groups(json.loads(out.read_text()))
    assert set(groups) == {
        "bm25 build smoke",
        "bm25 query smoke",
        "dense top-k smoke",
        "dense top-k batch smoke",
    }
    for name, rows in groups.items():
        assert sum(bool(r.get("baseline")) for r in rows) == 1, name
    text = (tmp_path / "RAG.md").read_text()
    assert "rank_bm25 (baseline)" in text and "faiss-flat-ip (baseline)" in text
    assert "queries/s" in text
