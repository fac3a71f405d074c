"""The retrieval benchmark (rag/evalset.py) and ``myllm101 rag eval`` (rag/eval.py)."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from myllm101.rag import cli
from myllm101.rag.eval import METRICS, query_scores, random_scores
from myllm101.rag.evalset import (
    SHAKESPEARE_DIR,
    answer_found,
    build_benchmark,
    normalize,
    relevant_rows,
    split_plays,
    strip_name,
)

needs_data = pytest.mark.skipif(
    not (SHAKESPEARE_DIR / "test.txt").is_file(), reason="data/shakespeare missing: run make data"
)


@given(n=st.integers(1, 7), data=st.data())
def test_random_baseline_equals_the_average_over_all_orders(n, data):
    """The closed form against every permutation of n chunks (exact enumeration)."""
    r = data.draw(st.integers(0, n))
    relevant = set(range(r))
    perms = list(itertools.permutations(range(n)))
    brute = {m: np.mean([query_scores(list(p), relevant)[m] for p in perms]) for m in METRICS}
    got = random_scores(n, r)
    for m in METRICS:
        assert got[m] == pytest.approx(brute[m], rel=1e-12, abs=1e-12), m


def test_query_scores():
    assert query_scores([4, 2, 9], {9}) == {"recall@1": 0, "recall@5": 1, "recall@10": 1,
                                            "mrr": pytest.approx(1 / 3)}  # fmt: skip
    assert query_scores([4, 2], {7}) == dict.fromkeys(METRICS, 0.0)


def test_helpers():
    assert strip_name("Return the close matches of a word.", "get_close_matches") == (
        "Return the of a word."
    )
    assert normalize("The default is 0.6.") == "the default is 0.6"
    assert answer_found(["70"], "The width defaults to 70 characters.")
    assert not answer_found(["70"], "It is 700.")
    assert answer_found(["Birnam"], "birnam wood!") and not answer_found(["x"], "")
    text = "MACBETH\n\nby William Shakespeare\n\nAct 1\nTHE TRAGEDY OF KING RICHARD THE SECOND\n\n" \
        "by William Shakespeare\n\nAct 1\n"  # fmt: skip
    plays = split_plays(text)
    assert [s for s, _ in plays] == ["macbeth", "richard_the_second"]
    assert "".join(t for _, t in plays).count("by William Shakespeare") == 2


@needs_data
def test_small_benchmark_spans_and_questions():
    bench = build_benchmark("small")
    assert len(bench.queries) >= 300
    assert {q.source for q in bench.queries} == {"python", "shakespeare"}
    texts = {d.path: d.text.encode("utf-8") for d in bench.documents}
    for q in bench.queries:
        span = texts[q.doc][q.start : q.end].decode("utf-8")
        words = re.findall(r"[\w']+", span.lower())
        if q.source == "python":
            assert re.match(r"\s*(@|def |async def )", span), span[:60]
        else:  # the query keeps >= 2/3 of its line's words, in order
            qw = q.text.split()
            assert all(w in words for w in qw) and len(qw) >= 2 * len(words) // 3
    for it in bench.questions:
        assert normalize(it.answers[0]) in normalize(texts[it.doc].decode("utf-8"))
    again = build_benchmark("small")
    assert [q.text for q in again.queries] == [q.text for q in bench.queries]  # seeded


def test_relevant_rows_prefers_chunks_holding_the_whole_span():
    from myllm101.rag.chunk import Chunk
    from myllm101.rag.evalset import Query

    chunks = [Chunk("d#0", "d", 0, 100, ""), Chunk("d#1", "d", 80, 200, ""),
              Chunk("e#0", "e", 0, 100, "")]  # fmt: skip
    assert relevant_rows(chunks, Query("q", "d", 85, 95, "x")) == {0, 1}
    assert relevant_rows(chunks, Query("q", "d", 60, 150, "x")) == {0, 1}  # none holds it whole
    assert relevant_rows(chunks, Query("q", "d", 110, 150, "x")) == {1}


@needs_data
def test_eval_small_through_the_cli(tmp_path, capsys):
    out = tmp_path / "eval"
    assert cli.run(["eval", "--size", "small", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| bm25 |" in printed and "| random |" in printed
    res = json.loads((out / "results.json").read_text())
    assert sum(res["benchmark"]["queries"].values()) >= 300
    r = res["retrieval"]
    for method in ("bm25", "dense", "hybrid", "random"):
        for source, vals in r[method].items():
            assert all(0.0 <= vals[m] <= 1.0 for m in METRICS), (method, source)
            assert vals["recall@1"] <= vals["recall@5"] <= vals["recall@10"]
            assert vals["mrr"] <= vals["recall@10"] + 1.0 / 11  # MRR <= recall@10 + 1/11
    rand = r["random"]["all"]["recall@10"]
    assert r["bm25"]["all"]["recall@10"] >= max(5 * rand, rand + 0.3)  # far above chance
    assert res["answers"] is None  # small: no generation by default
    assert (out / "recall.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| hybrid |" in (out / "RESULTS.md").read_text()
