"""The benchmark chain must not rot: run it at small shapes and build the report (no timing asserts)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_layer_benchmarks_run_and_report(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "benchmarks/test_layers.py",
        "-k",
        "small",
        "--benchmark-only",
        f"--benchmark-json={out}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["benchmarks"], "no benchmark ran"
    report.main([str(out), "--out", str(tmp_path)])
    text = (tmp_path / "REPORT.md").read_text()
    assert "| rmsnorm | B=2 T=16 C=64 | forward |" in text
    assert (tmp_path / "layers_speedup.png").stat().st_size > 1000
    # every component that has a backward appears in both modes, with both implementations timed
    rows = report.load_rows(data)
    assert all(r["ref_ms"] is not None and r["fast_ms"] is not None for r in rows)
    assert all(r["ref_mb"] is not None and r["fast_mb"] is not None for r in rows)


def test_report_rows_pair_reference_with_fast():
    fake = {
        "benchmarks": [
            {
                "stats": {"median": 0.004},
                "extra_info": {
                    "component": "x",
                    "size": "small",
                    "shape": "s",
                    "mode": "forward",
                    "impl": "reference",
                    "peak_mb": 2.0,
                },
            },
            {
                "stats": {"median": 0.001},
                "extra_info": {
                    "component": "x",
                    "size": "small",
                    "shape": "s",
                    "mode": "forward",
                    "impl": "fast",
                    "peak_mb": 1.0,
                },
            },
        ]
    }
    (row,) = report.load_rows(fake)
    assert row["speedup"] == pytest.approx(4.0)
    assert row["ref_mb"] == 2.0 and row["fast_mb"] == 1.0
    assert "| x | s | forward | 4.000 | 1.000 | 4.00x | 2.0 | 1.0 |" in report.markdown([row], {})
