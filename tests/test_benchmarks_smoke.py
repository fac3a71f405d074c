"""The benchmark chain must not rot: run it at small shapes and build the report (no timing asserts)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import ratio_report, report

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
    # the small committed form the report is computed from, named in its header
    assert "Source: [layers.raw.json](layers.raw.json)" in text
    assert (tmp_path / "layers.raw.json").stat().st_size < out.stat().st_size / 3
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


@pytest.mark.slow
def test_model_benchmarks_run_and_report(tmp_path):
    """The model suite's tiny variant plus the matmul peak, then MODELS.md with ratios and MFU."""
    out = tmp_path / "models.json"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "benchmarks/test_models.py", "-k", "smoke or matmul", "--benchmark-only",
           f"--benchmark-json={out}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ratio_report.main([str(out), "--name", "MODELS", "--title", "Models", "--out", str(tmp_path)])
    groups = ratio_report.load_groups(json.loads(out.read_text()))
    assert {"matmul peak", "model gpt tiny forward", "train gpt smoke bf16"} <= set(groups)
    for name, rows in groups.items():
        if name != "matmul peak":
            assert sum(bool(r.get("baseline")) for r in rows) == 1, name
    text = (tmp_path / "MODELS.md").read_text()
    assert "## generate smoke new tokens" in text and "(baseline)" in text and "%" in text
    from myllm101.device import hardware

    hw = hardware()  # the run recorded what this CPU does natively, and the header says it
    assert f"torch CPU capability {hw.cpu_capability}" in text and hw.cpu_name in text
    assert ("(emulated on this CPU)" in text) == (not hw.native_bf16)  # its bf16 rows
    assert (tmp_path / "models.png").stat().st_size > 1000


def _bench(group, impl, median, **info):
    return {"group": group, "name": impl, "stats": {"median": median},
            "extra_info": {"impl": impl, "mode": "m", "shape": "s", **info}}  # fmt: skip


def test_ratio_report_divides_by_the_baseline_and_the_measured_peak():
    data = {
        "benchmarks": [
            _bench("matmul peak", "fp32", 0.5, dtype="fp32", flops=100e9),  # 200 GFLOP/s
            _bench("g", "slow", 0.2, baseline=True, count=1000, unit="tokens", peak_mb=3.0),
            _bench("g", "quick", 0.05, count=1000, unit="tokens", flops=5e9, dtype="fp32"),
        ]
    }
    groups = ratio_report.load_groups(data)
    peak = ratio_report.peaks(groups)
    ratio_report.add_ratios(groups, peak)
    assert peak == {"fp32": pytest.approx(200e9)}
    slow, quick = groups["g"]
    assert slow["ratio"] == pytest.approx(1.0) and quick["ratio"] == pytest.approx(4.0)
    assert quick["per_s"] == pytest.approx(20000) and quick["mfu"] == pytest.approx(0.5)
    text = ratio_report.markdown(groups, peak, "T", {"cpu": "c", "cores": 2, "python": "p"})
    assert "| quick | m | 50.00 | 4.00x | 20,000.0 | 50.0% | - |" in text
    assert "| slow (baseline) | m | 200.00 | 1.00x | 5,000.0 | - | 3.0 |" in text


@pytest.mark.parametrize("native", [True, False])
def test_report_header_names_the_cpu_and_marks_emulated_rows(native):
    hw = {"cpu_name": "Some CPU", "cpu_capability": "AVX512" if native else "AVX2",
          "native_bf16": native, "native_int8": native, "threads": 2, "torch_version": "2.x",
          "cuda_device": None, "limits": ""}  # fmt: skip
    data = {
        "machine_info": {"cpu": {"count": 2}, "python_version": "3.11", "myllm101": hw},
        "benchmarks": [
            _bench("g", "fp32", 0.2, baseline=True, dtype="fp32"),
            _bench("g", "bf16", 0.1, dtype="bf16"),
        ],
    }
    machine = report.machine_info(data)
    groups = ratio_report.load_groups(data)
    ratio_report.add_ratios(groups, {})
    text = ratio_report.markdown(groups, {}, "T", machine)
    yes = "yes" if native else "no"
    assert f"Machine: Some CPU, 2 cores; torch CPU capability {hw['cpu_capability']}" in text
    assert f"native bf16: {yes}, native int8: {yes}; 2 torch threads; torch 2.x" in text
    assert ("| bf16 (emulated on this CPU) |" in text) is not native
    assert "| fp32 (baseline) |" in text
    assert "not recorded" in report.machine_line({"cpu": "c", "cores": 2})


@pytest.mark.slow
def test_int8_benchmark_runs_and_reports(tmp_path):
    """Every int8 backend computes the exact sums it claims (asserted inside), and INT8.md says
    which one device.py picks on this CPU."""
    out = tmp_path / "int8.json"
    # the backends at M=8 and M=128, and every per-layer kernel at one decode shape (all 80 kernel
    # rows take ~20 min on 2 cores: `make bench` runs them)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "benchmarks/test_int8.py", "-k", "matmul_backends or (576x576 and -1])",
           "--benchmark-only", f"--benchmark-json={out}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ratio_report.main([str(out), "--name", "INT8", "--title", "int8", "--out", str(tmp_path)])
    text = (tmp_path / "INT8.md").read_text()
    assert "## int8 matmul M=8" in text and "| fp32 (baseline) |" in text
    assert "Source: [int8.raw.json](int8.raw.json), 14 benchmarks" in text
    assert (tmp_path / "int8.raw.json").stat().st_size < 20_000
    from myllm101.device import int8_matmul_backend

    assert f"device.py picks {int8_matmul_backend('cpu')} on this CPU" in text
