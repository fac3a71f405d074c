"""benchmarks/serve_bench.py --smoke: the whole pipeline (live server, 1/4/8/16 streaming clients,
JSON, markdown, PNG) on a tiny random Llama, measuring nothing that is asserted on."""

from __future__ import annotations

import json

from benchmarks import serve_bench


def test_serve_bench_smoke_writes_json_table_and_png(tmp_path, capsys):
    assert serve_bench.main(["--smoke", "--out-dir", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "SERVE.raw.json").read_text())
    assert [r["clients"] for r in data["levels"]] == list(serve_bench.LEVELS)
    for r in data["levels"]:
        assert r["errors"] == [] and r["requests"] == r["clients"]
        assert r["tokens"] == 8 * r["clients"]  # max_tokens 8 each: ignore_eos, no early end
    table = (tmp_path / "SERVE.md").read_text()
    assert table.count("\n| ") == 1 + len(serve_bench.LEVELS)  # header + one row per level
    assert "Targets at 8 clients" in table
    assert (tmp_path / "SERVE.png").stat().st_size > 1000
    # --render rebuilds the same table from the JSON
    (tmp_path / "SERVE.md").unlink()
    assert serve_bench.main(["--render", str(tmp_path / "SERVE.raw.json")]) == 0
    assert (tmp_path / "SERVE.md").read_text() == table
