"""Benchmark reports: targets are judged from the numbers ("met" / "missed"), every report names the
small raw file it is computed from, and that file alone reproduces the committed report."""

import json
import re
from pathlib import Path

import pytest

from benchmarks import quant_report, ratio_report, raw, report, tokenizer_report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results"
MACHINE = {"cpu": {"count": 2, "brand_raw": "Some CPU"}, "python_version": "3.11", "node": "host"}
TARGET = "target: ours >= 1.3x theirs"  # a text GOALS has no rule for; the rows carry their own


def _bench(group, impl, median, rounds=50, **info):
    """One benchmark as pytest-benchmark writes it, per-round times included."""
    return {
        "group": group, "name": f"test_x[{group}-{impl}]", "fullname": f"b.py::test_x[{impl}]",
        "params": {"impl": impl, "seed": 0}, "param": impl, "options": {},
        "stats": {"min": median * 0.9, "max": median * 1.2, "mean": median, "stddev": median / 50,
                  "rounds": rounds, "median": median, "iqr": 0.0, "ops": 1 / median,
                  "data": [median] * rounds, "iterations": 1},
        "extra_info": {"impl": impl, "mode": "m", "shape": "s", **info},
    }  # fmt: skip


def _suite(benches):
    return {
        "machine_info": MACHINE,
        "commit_info": {"id": "0123456789abcdef", "dirty": True},
        "datetime": "2026-01-02T03:04:05+00:00",
        "version": "5.3.1",
        "benchmarks": benches,
    }


def _goal(impls, metric, op, value):
    """The structured goals a suite may record next to its target text (extra_info["goals"])."""
    return [{"impls": impls, "metric": metric, "op": op, "value": value}]


def _row(text: str, impl: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(f"| {impl} |")]
    return line


def test_a_target_row_says_met_or_missed_from_the_numbers_and_the_raw_file_is_small(tmp_path):
    g = {
        "count": 600,
        "unit": "tokens",
        "target": TARGET,
        "goals": _goal(["ours-quick", "ours-slow"], "ratio", ">=", 1.3),
    }
    h = {
        "count": 10,
        "unit": "tokens",
        "target": TARGET,
        "goals": _goal(["fast"], "per_s", ">=", 20),
    }
    benches = [
        _bench("g", "theirs", 0.30, baseline=True, **g),
        _bench("g", "ours-quick", 0.20, **g),  # 1.50x: met
        _bench("g", "ours-slow", 0.25, **g),  # 1.20x: missed
        _bench("h", "base", 1.0, baseline=True, **h),
        _bench("h", "fast", 0.5, **h),  # 20.0 tokens/s: met exactly
    ]  # fmt: skip
    src = tmp_path / "suite.json"
    src.write_text(json.dumps(_suite(benches)))
    out = tmp_path / "out"
    ratio_report.main([str(src), "--name", "SUITE", "--title", "Suite", "--out", str(out)])
    text = (out / "SUITE.md").read_text()

    assert _row(text, "ours-quick").endswith("| met: 1.50x >= 1.30x |")
    assert _row(text, "ours-slow").endswith("| missed: 1.20x < 1.30x |")
    assert "missed" not in _row(text, "ours-quick") and " met" not in _row(text, "ours-slow")
    assert _row(text, "theirs (baseline)").endswith("| - |")  # no goal applies to the baseline
    assert f"- {TARGET}: **missed by ours-slow**" in text
    assert _row(text, "fast").endswith("| met: 20.0 >= 20.0 tokens/s |")
    assert f"- {TARGET}: **met**" in text  # group h

    # the raw file: next to the report, named by it, small, no per-round data, run metadata kept
    raw_path = out / "suite.raw.json"
    assert "Source: [suite.raw.json](suite.raw.json), 5 benchmarks run 2026-01-02 03:04 UTC" in text
    assert "at commit 0123456 plus uncommitted changes" in text
    assert raw_path.stat().st_size < 4000 < src.stat().st_size
    data = json.loads(raw_path.read_text())
    assert data["commit_info"]["id"] == "0123456789abcdef" and data["source"] == "suite.json"
    assert data["machine_info"]["cpu"]["brand_raw"] == "Some CPU"
    assert "node" not in data["machine_info"]  # the host name is not committed
    assert "data" not in raw_path.read_text() and len(data["rows"]) == 5
    (row,) = [
        dict(zip(data["columns"], r, strict=True)) for r in data["rows"] if r[1] == "g" and
        r[data["columns"].index("extra_info.impl")] == "ours-slow"
    ]  # fmt: skip
    assert row["median"] == 0.25 and row["rounds"] == 50 and row["params"] == {"seed": 0}
    assert row["stddev"] == pytest.approx(0.005) and row["min"] == pytest.approx(0.225)

    # the raw file alone reproduces the report
    again = tmp_path / "again"
    ratio_report.main([str(raw_path), "--name", "SUITE", "--title", "Suite", "--out", str(again)])
    assert (again / "SUITE.md").read_text() == text
    assert (again / "suite.raw.json").read_text() == raw_path.read_text()


def test_the_suites_target_texts_are_judged_and_an_unknown_text_is_not_checked():
    ckpt = "target: checkpointing activation memory <= 1/3 at <= 30% time cost"
    kv = "target: KV cache >= 10x at 512 new tokens"
    data = _suite([
        _bench("t", "fp32", 0.40, baseline=True, activation_mb=90.0, target=ckpt),
        _bench("t", "fp32+ckpt", 0.50, activation_mb=29.0, target=ckpt),  # 0.32x, +25%: met
        _bench("u", "fp32", 0.40, baseline=True, activation_mb=90.0, target=ckpt),
        _bench("u", "fp32+ckpt", 0.60, activation_mb=20.0, target=ckpt),  # +50% time: missed
        _bench("k128", "no-cache", 1.0, baseline=True, size="128", target=kv),
        _bench("k128", "kv-cache", 0.5, size="128", target=kv),  # 2x, but the goal is at 512
        _bench("k512", "no-cache", 1.0, baseline=True, size="512", target=kv),
        _bench("k512", "kv-cache", 0.05, size="512", target=kv),  # 20x: met
        _bench("v", "a", 1.0, baseline=True, target="target: something new"),
    ])  # fmt: skip
    groups = ratio_report.load_groups(data)
    ratio_report.add_ratios(groups, {})
    text = ratio_report.markdown(groups, {}, "T", report.machine_info(data))
    sections = dict(re.findall(r"## (\S+)\n(.*?)(?=\n## |\Z)", text, re.S))
    assert "| met: activation 0.32x <= 0.33x; time +25% <= +30% |" in sections["t"]
    assert "| missed: activation 0.22x <= 0.33x; time +50% > +30% |" in sections["u"]
    assert f"{ckpt}: **missed by fp32+ckpt**" in sections["u"]
    assert "| target |" not in sections["k128"] and "not for this group" in sections["k128"]
    assert "| met: 20.00x >= 10.00x |" in sections["k512"]
    assert "something new: **not checked" in sections["v"]


def _tiny_layers():
    return _suite([
        {"group": "x small forward", "name": f"test_layer[x-{impl}]", "params": {"impl": impl},
         "stats": {"median": t, "mean": t, "stddev": 0.0, "min": t, "max": t, "rounds": 3,
                   "data": [t] * 3},
         "extra_info": {"component": "x", "size": "small", "shape": "s", "mode": "forward",
                        "impl": impl, "peak_mb": 1.0, "loadavg": 0.5}}
        for impl, t in (("reference", 0.004), ("fast", 0.001))
    ])  # fmt: skip


def test_layer_and_tokenizer_reports_name_their_raw_file(tmp_path):
    src = tmp_path / "layers.json"
    src.write_text(json.dumps(_tiny_layers()))
    report.main([str(src), "--out", str(tmp_path)])
    text = (tmp_path / "REPORT.md").read_text()
    assert "Source: [layers.raw.json](layers.raw.json), 2 benchmarks" in text
    assert "| x | s | forward | 4.000 | 1.000 | 4.00x | 1.0 | 1.0 |" in text
    tok = _suite([
        {"group": "encode", "name": f"test_encode[{impl}]", "params": {},
         "stats": {"median": t, "mean": t, "stddev": 0.0, "min": t, "max": t, "rounds": 1},
         "extra_info": {"bench": "encode", "impl": impl, "size": "smoke", "bytes": 2_000_000}}
        for impl, t in (("fast", 1.0), ("tiktoken", 0.5), ("hf", 4.0))
    ])  # fmt: skip
    src = tmp_path / "tok.json"
    src.write_text(json.dumps(tok))
    tokenizer_report.main([str(src), "--out", str(tmp_path)])
    text = (tmp_path / "TOKENIZER.md").read_text()
    assert "Source: [tokenizer.raw.json](tokenizer.raw.json), 3 benchmarks" in text
    assert "| smoke | ours (fast) | 2.00 | 1.000 | 2.00 | 0.50x | 4.00x |" in text


GENERATORS = {  # committed report -> (its raw file, the generator's arguments after the file)
    "REPORT.md": ("layers.raw.json", report.main, []),
    "TOKENIZER.md": ("tokenizer.raw.json", tokenizer_report.main, []),
    "MODELS.md": ("models.raw.json", ratio_report.main, ["--name", "MODELS", "--title", "Models"]),
    "TRAINING.md": ("training.raw.json", ratio_report.main, ["--name", "TRAINING", "--title", "Training"]),
    "INT8.md": ("int8.raw.json", ratio_report.main, ["--name", "INT8", "--title", "int8 matmul"]),
    "HUB.md": ("hub.raw.json", ratio_report.main, ["--name", "HUB", "--title", "Pretrained models"]),
    "DECODE.md": ("decode.raw.json", ratio_report.main, ["--name", "DECODE", "--title", "Decode (fp32)"]),
    "QUANT.md": ("quant.raw.json", quant_report.main, []),
    "QUANT-fresh.md": ("quant-fresh.raw.json", quant_report.main, ["--name", "QUANT-fresh"]),
    "INT4.md": ("int4.raw.json", ratio_report.main, ["--name", "INT4", "--title", "int4 linear"]),
    "RAG.md": ("rag.raw.json", ratio_report.main, ["--name", "RAG", "--title", "RAG retrieval"]),
}  # fmt: skip


@pytest.mark.parametrize("md", sorted(GENERATORS))
def test_each_committed_report_is_what_its_committed_raw_file_renders(md, tmp_path):
    raw_name, main, args = GENERATORS[md]
    committed = (RESULTS / md).read_text()
    assert f"Source: [{raw_name}]({raw_name})" in committed
    assert (RESULTS / raw_name).stat().st_size < 100_000
    assert raw.is_raw(json.loads((RESULTS / raw_name).read_text()))
    main([str(RESULTS / raw_name), *args, "--out", str(tmp_path)])
    assert (tmp_path / md).read_text() == committed, f"{md} differs from what {raw_name} renders"


def test_a_row_with_a_peak_key_divides_by_its_own_shapes_peak():
    # the square matmul does 100 GFLOP/s (fastest round 0.9 s of 90 GFLOP), the step's own GEMMs
    # 50 GFLOP/s; a row of 40 GFLOP per 1 s round is 80% of its keyed peak, 40% of the square one
    data = _suite([
        _bench("matmul peak", "fp32", 1.0, dtype="fp32", flops=9e10),
        _bench("matmul peak", "fp32 gpt x", 2.0, dtype="fp32", flops=9e10, peak_key="gpt x"),
        _bench("t", "keyed", 1.0, baseline=True, dtype="fp32", flops=4e10, peak_key="gpt x"),
        _bench("t", "plain", 1.0, dtype="fp32", flops=4e10),
        _bench("t", "unknown-key", 1.0, dtype="fp32", flops=4e10, peak_key="llama y"),
    ])  # fmt: skip
    groups = ratio_report.load_groups(data)
    peak = ratio_report.peaks(groups)
    assert peak == pytest.approx({"fp32": 1e11, "fp32 gpt x": 5e10})
    ratio_report.add_ratios(groups, peak)
    mfu = {r["impl"]: r["mfu"] for r in groups["t"]}
    assert mfu == pytest.approx({"keyed": 0.8, "plain": 0.4, "unknown-key": 0.4})


def test_quant_accuracy_rows_take_decode_steps_and_prefill_from_their_groups():
    groups = {
        "smollm2 decode": [{"impl": "ours-int8", "count": 32, "s": 0.5, "size_mb": 160.0}],
        "smollm2 decode steps": [{"impl": "ours-int8", "count": 31, "s": 0.25}],
        "smollm2 prefill": [{"impl": "ours-int8", "count": 128, "s": 0.5}],
        "read bandwidth": [{"impl": "ours-int8", "count": 1, "s": 1.0}],  # not a speed group
    }
    (row,) = quant_report.accuracy_rows(groups)["smollm2"]
    assert row["decode"] == 64 and row["steps"] == 124 and row["prefill"] == 256
    assert row["size_mb"] == 160.0
    text = quant_report.markdown({"smollm2": [row]})
    assert "| decode tok/s | decode steps tok/s | prefill tok/s |" in text
    assert "| 64.0 | 124.0 | 256.0 |" in text
