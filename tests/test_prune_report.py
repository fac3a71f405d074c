"""benchmarks/prune_report.py and prune_table.py without running a model: the per-base tables,
the recovery table, the two targets (met, missed, not measured) from made-up eval results, the
older one-list raw format, and the table's row names."""

from __future__ import annotations

import json

from benchmarks import prune_report
from benchmarks.prune_table import QUANTIZED, row_names, variants


def _result(model: str, ppl: float, method=None, sparsity=None, rec=None, prefill=None) -> dict:
    pruning = None
    if method:
        pruning = {"method": method, "sparsity": sparsity, "block_sparsity": 0.5,
                   "params_before": 10**6, "params_after": 10**6, "recovery": rec}  # fmt: skip
    scheme = "fp32" if not method else f"{method} {sparsity:g}" + (" (recovered)" if rec else "")
    r = {"model": model, "scheme": scheme, "pruning": pruning, "cpu": "test CPU",
         "size": {"model_bytes": 4 * 2**20},
         "settings": {"max_tokens": 64, "window": 32, "stride": 16, "rounds": 3},
         "perplexity": {"shakespeare-test": {"ppl": ppl}, "python-stdlib": {"ppl": 2 * ppl}}}  # fmt: skip
    if prefill is not None:
        r["speed"] = {"prefill_tokens_per_s": prefill, "decode_tokens_per_s": 10.0}
    return r


def _table(prefill: bool, wanda_ppl: float) -> list[dict]:
    full = {"method": "full", "steps": 4, "lr": 2e-5, "first_loss": 5.0, "last_loss": 4.0,
            "loss_before": 5.5, "loss_after": 4.5}  # fmt: skip
    lora = {**full, "method": "lora", "rank": 8, "loss_unmasked": 4.2}
    s = 100.0 if prefill else None
    return [
        _result("base", 10.0, prefill=s),
        _result("runs/pruned/x/magnitude-50", 30.0, "magnitude", 0.5, prefill=s),
        _result("runs/pruned/x/wanda-50", wanda_ppl, "wanda", 0.5, prefill=s),
        _result("runs/pruned/x/wanda-50-rec", 12.0, "wanda", 0.5, full, prefill=s),
        _result("runs/pruned/x/wanda-50-lora", 13.0, "wanda", 0.5, lora, prefill=s),
        _result(
            "runs/pruned/x/structured-25",
            40.0,
            "heads+neurons",
            0.25,
            prefill=130.0 if prefill else None,
        ),  # fmt: skip
    ]


def test_one_section_per_base_with_recovery_rows_and_targets():
    raw = {"smollm2": _table(True, 20.0), "shakespeare": _table(False, 35.0)}
    md = prune_report.markdown(raw)
    smol, fresh = md.split("## a never-quantized LLaMA")
    assert "## SmolLM2-135M" in smol
    # 20 / 10 - 1 = +100% < 30 / 10 - 1 = +200%: met; prefill 130 / 100 = 1.30x >= 1.2: met
    assert "Wanda's perplexity change at 50% < magnitude's: **met** (+100.0% vs +200.0%" in smol
    assert "prefill >= 1.2x: **met** (1.30x)" in smol
    assert "| wanda 0.5 | +100.0% | +20.0% | +30.0% |" in smol  # pruned, full, LoRA
    assert "lora r=8, 4 steps: loss 5.50 -> 4.50 (4.20 before re-masking)" in smol
    # the never-quantized table: Wanda worse than magnitude -> missed; no speed -> not measured
    assert "**missed** (+250.0% vs +200.0%" in fresh
    assert "structured prefill speed-up: **not measured** (this run measured no speed" in fresh
    assert "no speed measured in this run" in fresh and "](prune-shakespeare.png)" in fresh


def test_slow_structured_prefill_is_missed_and_a_missing_row_is_not_measured():
    rows = _table(True, 20.0)
    rows[-1]["speed"]["prefill_tokens_per_s"] = 110.0  # 1.10x < 1.2x
    assert any("**missed** (1.10x)" in t for t in prune_report.targets(
        prune_report.pruning_rows(rows)))  # fmt: skip
    told = prune_report.targets(prune_report.pruning_rows(rows[:1]))
    assert all("**not measured** (row" in t for t in told)


def test_main_reads_the_older_list_format_and_writes_the_pngs(tmp_path):
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps(_table(True, 20.0)))
    prune_report.main([str(raw), "--out", str(tmp_path)])
    assert "## SmolLM2-135M" in (tmp_path / "PRUNE.md").read_text()
    assert (tmp_path / "prune.png").stat().st_size > 1000


def test_table_rows_cover_every_method_before_and_after_recovery():
    names = row_names(20)
    for method in ("magnitude-25", "magnitude-50", "wanda-25", "wanda-50", "2of4",
                   "structured-25"):  # fmt: skip
        assert method in names and f"{method}-rec" in names
    assert "wanda-50-lora" in names and all(f"{q}-int8" in names for q in QUANTIZED)
    opts = variants(7)
    assert opts["wanda-50-lora"][-6:-1] == ["--recover-steps", "7", "--recover-method", "lora",
                                          "--recover-lr"]  # fmt: skip
    assert "--recover-steps" not in opts["wanda-50"]


def test_committed_prune_md_is_what_its_committed_raw_file_renders(tmp_path):
    """benchmarks/results/PRUNE.md is prune_report's rendering of the committed raw file, as the
    other reports are (tests/test_reports.py): no number edited by hand, none stale."""
    results = prune_report.RESULTS
    prune_report.main([str(results / "prune_eval.raw.json"), "--out", str(tmp_path)])
    assert (tmp_path / "PRUNE.md").read_text() == (results / "PRUNE.md").read_text()


def test_the_structured_target_is_judged_on_the_alternating_timing(monkeypatch):
    from benchmarks import prune_table

    results = _table(True, 20.0)  # structured-25 at 1.30x in the in-turn timing
    calls = []

    def fake(specs, rounds):
        calls.append((specs, rounds))
        return {"base": 0.5, "runs/pruned/x/structured-25": 0.5 / 1.1}

    monkeypatch.setattr(prune_table, "alternating_prefill", fake)
    prune_table.add_alternating(results, 7)
    assert calls == [(["base", "runs/pruned/x/structured-25"], 7)]  # the base and structured only
    timed = [r for r in results if "prefill_alternating" in r]
    assert [r["model"] for r in timed] == ["runs/pruned/x/structured-25"]
    assert abs(timed[0]["prefill_alternating"]["ratio"] - 1.1) < 1e-12
    md = prune_report.markdown({"smollm2": results})
    assert "prefill >= 1.2x: **missed** (1.10x: 455 ms against 500, median of 7 rounds" in md
    assert "1.30x in the table, timed in turn" in md
