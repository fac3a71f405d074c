"""The fine-tuning benchmarks must not rot: the step suite's smoke rows run and build the ratio
report; the same-time-budget script runs on a tiny model and writes its JSON, table and report
section. Structure only (rows present, finite numbers, parameter counts), never timings.
"""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import finetune_budget, ratio_report

ROOT = Path(__file__).resolve().parents[1]
HAS_PEFT = all(importlib.util.find_spec(m) is not None for m in ("peft", "transformers"))
GROUP = "finetune smoke B2 T16"


@pytest.mark.slow
def test_finetune_step_benchmarks_run_and_report(tmp_path):
    out = tmp_path / "finetune.json"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "benchmarks/test_finetune.py", "-k", "smoke", "--benchmark-only",
           f"--benchmark-json={out}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ratio_report.main(
        [str(out), "--name", "FINETUNE", "--title", "Fine-tuning (smoke)", "--out", str(tmp_path)]
    )
    groups = ratio_report.load_groups(json.loads(out.read_text()))
    assert set(groups) == {GROUP}
    ratio_report.add_ratios(groups, ratio_report.peaks(groups))
    rows = {r["impl"]: r for r in groups[GROUP]}
    want = {"full", "lora", "qlora"} | ({"peft-lora"} if HAS_PEFT else set())
    assert set(rows) == want
    assert [i for i, r in rows.items() if r.get("baseline")] == ["full"]
    for impl, r in rows.items():
        for key in ("ratio", "per_s", "peak_mb", "state_mb", "total_mb", "total_vs_full"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (impl, key)
        assert 0 < r["trainable_params"] <= r["total_params"], impl
        assert r["scored_tokens"] > 0, impl
    # what does not depend on the machine: full trains every weight, every LoRA row the same few
    full = rows["full"]
    assert full["trainable_params"] == full["total_params"]
    lora_counts = {r["trainable_params"] for i, r in rows.items() if i != "full"}
    assert len(lora_counts) == 1 and lora_counts.pop() < full["trainable_params"] / 10
    assert len({r["total_params"] for i, r in rows.items() if i != "full"}) == 1
    assert rows["qlora"]["state_mb"] < rows["lora"]["state_mb"] < full["state_mb"]  # int8, AdamW

    text = (tmp_path / "FINETUNE.md").read_text()
    assert f"## {GROUP}" in text and "| full (baseline) |" in text and "| qlora |" in text
    assert ("| peft-lora |" in text) is HAS_PEFT
    assert "target: lora's peak memory <= 40% of full's" in text
    assert (tmp_path / "finetune.png").stat().st_size > 1000


def _tiny_sft_data(directory: Path) -> Path:
    """A few short instruction/response rows per split (the smoke run needs no real data)."""
    directory.mkdir()
    names = ["Hamlet", "Ophelia", "Horatio", "Polonius"]
    for split, n in (("train", 12), ("val", 6)):
        rows = [{"instruction": f"Who speaks line {i} of the scene? Answer with a name.",
                 "response": names[i % len(names)]} for i in range(n)]  # fmt: skip
        (directory / f"sft-{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory


@pytest.mark.slow
def test_budget_script_runs_and_writes_its_section(tmp_path):
    from myllm101.hub.smollm2 import gguf_path

    try:
        if not gguf_path().is_file():
            pytest.skip(f"{gguf_path()}: not found (SmolLM2's tokenizer)")
    except ValueError as e:  # the package is not installed
        pytest.skip(str(e))
    data = _tiny_sft_data(tmp_path / "data")
    report = tmp_path / "FINETUNE.md"
    report.write_text("# Fine-tuning\n\n## finetune smollm2 B4 T128\n\nthe step table\n")
    out = tmp_path / "budget.json"
    argv = ["--smoke", "--seconds", "0.5", "--data", str(data), "--out", str(out)]
    assert finetune_budget.main([*argv, "--report", str(report)]) == 0

    result = json.loads(out.read_text())
    runs = {r["method"]: r for r in result["runs"]}
    assert list(runs) == ["full", "lora", "qlora"]
    for method, r in runs.items():
        assert r["steps"] >= 1 and r["tokens"] > 0, method
        for key in ("train_s", "tokens_per_s", "val_loss_before", "val_loss_after"):
            assert math.isfinite(r[key]) and r[key] > 0, (method, key)
    assert runs["lora"]["trainable_params"] == runs["qlora"]["trainable_params"]
    assert runs["lora"]["trainable_params"] < runs["full"]["trainable_params"]
    # the same val rows for every method: the float methods start from the same loss
    assert runs["full"]["val_loss_before"] == runs["lora"]["val_loss_before"]

    text = report.read_text()
    assert text.startswith("# Fine-tuning\n\n## finetune smollm2 B4 T128\n\nthe step table\n")
    assert text.count(finetune_budget.SECTION) == 1
    assert "| lora | 0.001 |" in text and "| full | 5e-05 |" in text
    # rendering again from the JSON replaces the section, it does not add a second one
    assert finetune_budget.main(["--render", str(out), "--report", str(report)]) == 0
    assert report.read_text() == text


def test_report_section_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "R.md"
    path.write_text("# T\n\n## A\na\n\n## Same time budget\nold\nold\n\n## B\nb\n")
    finetune_budget.update_report(path, "## Same time budget\n\nnew\n")
    assert path.read_text() == "# T\n\n## A\na\n\n## Same time budget\n\nnew\n\n## B\nb\n"
    missing = tmp_path / "new" / "F.md"
    finetune_budget.update_report(missing, "## Same time budget\n\nx\n")
    assert missing.read_text() == "# Fine-tuning\n\n## Same time budget\n\nx\n"


def test_a_run_without_finite_numbers_is_refused():
    run = {"method": "lora", "train_s": 1.0, "tokens_per_s": 2.0, "val_loss_before": 3.0,
           "val_loss_after": math.nan}  # fmt: skip
    with pytest.raises(ValueError, match="run lora: val_loss_after: expected a finite number"):
        finetune_budget.check_result({"runs": [run]})
