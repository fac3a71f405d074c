"""The training benchmark must not rot: run its smoke rows with the matmul peak, build the report.

No timing asserts: only that every row ran, the report has its ratios, and the one property that
does not depend on the machine: gradient checkpointing holds less activation memory.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import ratio_report

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_training_benchmarks_run_and_report(tmp_path):
    out = tmp_path / "training.json"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "benchmarks/test_training.py", "-k", "smoke or matmul", "--benchmark-only",
           f"--benchmark-json={out}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ratio_report.main(
        [str(out), "--name", "TRAINING", "--title", "Training (smoke)", "--out", str(tmp_path)]
    )
    assert (tmp_path / "TRAINING.md").is_file()
    assert (tmp_path / "training.png").stat().st_size > 1000

    groups = ratio_report.load_groups(json.loads(out.read_text()))
    assert set(groups) == {"matmul peak", "train gpt smoke", "train llama smoke"}
    ratio_report.add_ratios(groups, ratio_report.peaks(groups))
    impls = {name: {r["impl"] for r in rows} for name, rows in groups.items()}
    assert impls["train gpt smoke"] == {"fp32", "bf16", "fp32+ckpt", "reference-numpy"}
    assert impls["train llama smoke"] == {"fp32", "bf16", "fp32+ckpt"}  # no compile at smoke
    for name, rows in groups.items():
        if name == "matmul peak":
            continue
        assert sum(bool(r.get("baseline")) for r in rows) == 1, name
        for r in rows:
            assert r["ratio"] is not None and r["mfu"] is not None, (name, r["impl"])
            assert r["peak_mb"] is not None and r["activation_mb"] > 0, (name, r["impl"])
        act = {r["impl"]: r["activation_mb"] for r in rows}
        assert act["fp32+ckpt"] < act["fp32"], (name, act)

    text = (tmp_path / "TRAINING.md").read_text()
    assert "## train gpt smoke" in text and "fp32 (baseline)" in text and "x |" in text
    assert "target: checkpointing activation memory" in text
