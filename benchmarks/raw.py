"""The small, committed form of a pytest-benchmark JSON, and the one every report is computed from.

pytest-benchmark's JSON keeps every round's time (``stats.data``) and is large (the layer suite's is
~600 KB), so it stays out of git. Each report generator first reduces it to ``NAME.raw.json`` next
to its report, then renders the report from that reduction alone: the committed report is exactly
what the committed raw file renders to, and ``python -m benchmarks.<generator> NAME.raw.json``
reproduces it. A raw file holds:

- ``datetime``, ``version`` (pytest-benchmark), ``commit_info`` (the commit measured, ``dirty`` when
  the tree had uncommitted changes) and ``machine_info`` (without the host name);
- ``columns`` and ``rows``: one row per benchmark (one line each): its name, group, the params not
  already in its extra_info, the stats median / mean / stddev / min / max (seconds) and rounds,
  then one column per ``extra_info`` key. Floats keep 8 significant digits; a key a benchmark did
  not record reads null.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

SUFFIX = ".raw.json"
STATS = ("median", "mean", "stddev", "min", "max", "rounds")
EXTRA = "extra_info."
DIGITS = 8


def _round(v):
    if isinstance(v, float) and math.isfinite(v) and v != 0.0:
        return float(f"{v:.{DIGITS}g}")
    if isinstance(v, dict):
        return {k: _round(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_round(x) for x in v]
    return v


def is_raw(data: dict) -> bool:
    return "columns" in data and "rows" in data


def summarize(data: dict, source: str) -> dict:
    """The raw summary of a pytest-benchmark JSON (returned unchanged if ``data`` is one)."""
    if is_raw(data):
        return data
    benches = data["benchmarks"]
    keys = list(dict.fromkeys(k for b in benches for k in b.get("extra_info", {})))
    rows = []
    for b in benches:
        info = b.get("extra_info", {})
        params = {k: v for k, v in (b.get("params") or {}).items() if info.get(k, ...) != v}
        stats = [b["stats"].get(k) for k in STATS]
        rows.append(_round([b["name"], b.get("group"), params or None, *stats,
                            *(info.get(k) for k in keys)]))  # fmt: skip
    machine = {k: v for k, v in data.get("machine_info", {}).items() if k != "node"}
    return {
        "source": source,
        "datetime": data.get("datetime"),
        "version": data.get("version"),
        "commit_info": data.get("commit_info", {}),
        "machine_info": machine,
        "columns": ["name", "group", "params", *STATS, *(EXTRA + k for k in keys)],
        "rows": rows,
    }


def expand(raw: dict) -> dict:
    """A raw summary back in pytest-benchmark's shape (``benchmarks`` with ``stats`` and
    ``extra_info``; nulls dropped), which is what the report code reads."""
    cols = raw["columns"]
    benches = []
    for row in raw["rows"]:
        cell = dict(zip(cols, row, strict=True))
        benches.append(
            {
                "name": cell["name"],
                "group": cell["group"],
                "params": cell["params"] or {},
                "stats": {k: cell[k] for k in STATS if cell[k] is not None},
                "extra_info": {
                    c[len(EXTRA) :]: v
                    for c, v in cell.items()
                    if c.startswith(EXTRA) and v is not None
                },
            }
        )
    return {**{k: v for k, v in raw.items() if k not in ("columns", "rows")}, "benchmarks": benches}


def dumps(raw: dict) -> str:
    """One line per header key, then one line per benchmark (small, and diffs line by line)."""
    head = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in raw.items() if k != "rows")
    rows = ",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in raw["rows"])
    return f'{{\n{head},\n "rows": [\n{rows}\n ]\n}}\n'


def load(path: Path, out_dir: Path, stem: str) -> tuple[dict, Path]:
    """Read a pytest-benchmark JSON (or a raw file), write ``out_dir/stem.raw.json`` and return
    the data the report is rendered from (the raw file expanded) with the raw file's path."""
    data = json.loads(Path(path).read_text())
    raw = summarize(data, source=Path(path).name)
    out = Path(out_dir) / f"{stem}{SUFFIX}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dumps(raw))
    return expand(json.loads(out.read_text())), out


def source_line(data: dict, raw_path: Path) -> str:
    """The report's 'Source: ...' sentence: the raw file, how many benchmarks, when and at which
    commit they ran."""
    ci = data.get("commit_info") or {}
    commit = ci.get("id", "")[:7] or "?"
    if ci.get("dirty"):
        commit += " plus uncommitted changes"
    when = (data.get("datetime") or "?")[:16].replace("T", " ")
    src = data.get("source", "?")
    return (
        f"Source: [{raw_path.name}]({raw_path.name}), {len(data['benchmarks'])} benchmarks run "
        f"{when} UTC at commit {commit} (every number below is computed from it; reduced from "
        f"pytest-benchmark's `{src}`, whose per-round times are not committed)."
    )
