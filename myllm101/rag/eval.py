"""``myllm101 rag eval``: recall@1/5/10 and MRR of every retriever (BM25, dense, the two fusions,
the re-ranking: rag/retrieve.py METHODS) on the benchmark of rag/evalset.py, and answer accuracy
with and without retrieval.

    results = run_eval("small", out="runs/rag-eval")   # results.json, RESULTS.md, recall.png

Retrieval: the benchmark's documents are indexed like ``myllm101 rag index`` does (rag/store.py,
default settings), each query is run by each method for its top ``MRR_DEPTH`` (100) chunks, and
per query: recall@k = 1 if any relevant chunk (evalset.relevant_rows) is in the top k, else 0;
reciprocal rank = 1 / the rank of the first relevant chunk (0 beyond 100). Both are averaged over
the queries, overall and per source (python, shakespeare). The "random" row is the expectation of
the same numbers under a uniformly random order of the chunks, computed exactly per query from
the index size N and its r relevant chunks: recall@k = 1 - C(N - r, k) / C(N, k).

Answers (``questions`` > 0): SmolLM2-135M-Instruct answers each QA item twice, greedy: closed-book
(the question alone) and with retrieval (the default retriever, rag/retrieve.py DEFAULT_METHOD;
k=5, a 1024-token prompt budget, rag/answer.py).
Accuracy = the share of answers in which a normalised gold answer occurs as whole words
(evalset.answer_found). A small model often answers off the mark even with the passage in front
of it, so read the two accuracies side by side, not against other systems' numbers.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

KS = (1, 5, 10)
MRR_DEPTH = 100
METRICS = tuple(f"recall@{k}" for k in KS) + ("mrr",)
ANSWER_K, ANSWER_BUDGET, ANSWER_NEW_TOKENS = 5, 1024, 48


def query_scores(ranked: list[int], relevant: set[int]) -> dict[str, float]:
    """recall@k (0/1) and the reciprocal rank of one query's ranking (rows, best first)."""
    first = next((i + 1 for i, r in enumerate(ranked[:MRR_DEPTH]) if r in relevant), None)
    out = {f"recall@{k}": float(first is not None and first <= k) for k in KS}
    out["mrr"] = 0.0 if first is None else 1.0 / first
    return out


def random_scores(n: int, r: int) -> dict[str, float]:
    """The expected ``query_scores`` of a uniformly random ranking of ``n`` chunks, ``r`` of them
    relevant: P(first relevant at i) = prod_{j<i-1} (n-r-j)/(n-j) * r/(n-i+1)."""
    if r == 0:
        return dict.fromkeys(METRICS, 0.0)
    out, none_yet, mrr = {}, 1.0, 0.0  # none_yet = P(no relevant in the first i-1)
    for i in range(1, min(n - r + 1, MRR_DEPTH) + 1):
        p_first = none_yet * r / (n - i + 1)
        mrr += p_first / i
        none_yet *= (n - r - i + 1) / (n - i + 1)
        if i in KS:
            out[f"recall@{i}"] = 1.0 - none_yet
    for k in KS:  # k beyond n - r + 1: a relevant chunk is surely in the top k
        out.setdefault(f"recall@{k}", 1.0)
    out["mrr"] = mrr
    return out


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    return {m: float(np.mean([r[m] for r in rows])) if rows else 0.0 for m in METRICS}


def _by_source(per_query: list[dict], sources: list[str]) -> dict[str, dict[str, float]]:
    out = {"all": mean_scores(per_query)}
    for s in sorted(set(sources)):
        out[s] = mean_scores([q for q, src in zip(per_query, sources, strict=True) if src == s])
    return out


def evaluate_retrieval(retriever, bench, progress: bool = False) -> tuple[dict, dict]:
    """-> ({method: {source: {metric: mean}}} with "random" too, {method: seconds})."""
    from myllm101.rag.evalset import relevant_rows
    from myllm101.rag.retrieve import METHODS

    chunks = retriever.index.chunks
    relevant = [relevant_rows(chunks, q) for q in bench.queries]
    texts = [q.text for q in bench.queries]
    sources = [q.source for q in bench.queries]
    results, seconds, ranked_by = {}, {}, {}
    for method in METHODS:
        t0 = time.perf_counter()
        if method == "hybrid":  # the same as retriever.rankings(texts, 100, "hybrid"), reusing
            ranked = retriever.fuse(ranked_by["bm25"], ranked_by["dense"], MRR_DEPTH)
        elif method == "weighted":  # the same reuse
            ranked = retriever.weighted_fuse(ranked_by["bm25"], ranked_by["dense"], MRR_DEPTH)
        else:
            ranked = retriever.rankings(texts, MRR_DEPTH, method)
        ranked_by[method] = ranked
        seconds[method] = time.perf_counter() - t0
        per_query = [query_scores(rows.tolist(), rel)
                     for (rows, _), rel in zip(ranked, relevant, strict=True)]  # fmt: skip
        results[method] = _by_source(per_query, sources)
        if progress:
            print(f"  {method}: {results[method]['all']}", file=sys.stderr)
    results["random"] = _by_source([random_scores(len(chunks), len(r)) for r in relevant], sources)
    return results, seconds


def evaluate_answers(retriever, items, generator, progress: bool = False) -> dict:
    """Closed-book vs retrieval-augmented accuracy of ``generator`` on QA ``items``."""
    from myllm101.rag.answer import answer
    from myllm101.rag.evalset import answer_found
    from myllm101.rag.retrieve import DEFAULT_METHOD

    records = []
    for i, it in enumerate(items):
        closed = answer(it.question, None, generator, budget=ANSWER_BUDGET,
                        max_new_tokens=ANSWER_NEW_TOKENS)  # fmt: skip
        rag = answer(it.question, retriever, generator, k=ANSWER_K, method=DEFAULT_METHOD,
                     budget=ANSWER_BUDGET, max_new_tokens=ANSWER_NEW_TOKENS)  # fmt: skip
        records.append({
            "question": it.question, "answers": it.answers, "doc": it.doc, "source": it.source,
            "closed_book": closed.text, "closed_book_correct": answer_found(it.answers, closed.text),
            "rag": rag.text, "rag_correct": answer_found(it.answers, rag.text),
            "gold_doc_retrieved": any(s.chunk.doc == it.doc for s in rag.prompt.sources),
            "answer_in_sources": answer_found(it.answers, " ".join(s.text for s in rag.prompt.sources)),
            "sources": [f"{s.chunk.doc}:{s.chunk.start}-{s.end}" for s in rag.prompt.sources],
        })  # fmt: skip
        if progress:
            r = records[-1]
            print(f"  [{i + 1}/{len(items)}] closed {r['closed_book_correct']:d} "
                  f"rag {r['rag_correct']:d}  {it.question[:60]}", file=sys.stderr)  # fmt: skip
    n = len(records)
    return {
        "n": n,
        "closed_book_accuracy": sum(r["closed_book_correct"] for r in records) / n if n else 0.0,
        "rag_accuracy": sum(r["rag_correct"] for r in records) / n if n else 0.0,
        "gold_doc_retrieved": sum(r["gold_doc_retrieved"] for r in records) / n if n else 0.0,
        "answer_in_sources": sum(r["answer_in_sources"] for r in records) / n if n else 0.0,
        "settings": {
            "k": ANSWER_K,
            "retriever": DEFAULT_METHOD,
            "budget": ANSWER_BUDGET,
            "max_new_tokens": ANSWER_NEW_TOKENS,
            "temperature": 0.0,
        },
        "items": records,
    }


def run_eval(size: str = "small", out=None, questions: int | None = None, generate: bool = True,
             progress: bool = False, seed: int = 0, embedder=None) -> dict:  # fmt: skip
    """Build the benchmark, index it, score the three retrievers (and answers); write
    results.json, RESULTS.md and recall.png into ``out`` when given. ``questions``: how many QA
    items to generate for (default: none at "small", all at "full")."""
    import torch

    from myllm101.rag.embedder import Embedder
    from myllm101.rag.evalset import build_benchmark
    from myllm101.rag.retrieve import Retriever
    from myllm101.rag.store import build_index

    t0 = time.perf_counter()
    bench = build_benchmark(size, seed=seed)
    t_bench = time.perf_counter() - t0
    embedder = embedder or Embedder()
    t0 = time.perf_counter()
    index = build_index(bench.documents, embedder, progress=progress)
    t_index = time.perf_counter() - t0
    retriever = Retriever(index, embedder, candidates=MRR_DEPTH)
    retrieval, seconds = evaluate_retrieval(retriever, bench, progress)
    n_q = (0 if size == "small" else len(bench.questions)) if questions is None else questions
    answers = None
    if generate and n_q > 0:
        from myllm101.rag.answer import Generator

        t0 = time.perf_counter()
        answers = evaluate_answers(retriever, bench.questions[:n_q], Generator(), progress)
        seconds["answers"] = time.perf_counter() - t0
    results = {
        "size": size,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
        },
        "benchmark": bench.info,
        "index": {
            "chunks": len(index.chunks),
            "embedding": index.meta["embedding"]["name"],
            "dtype": index.embedding_dtype,
            **index.meta["settings"],
        },
        "retrieval": retrieval,
        "answers": answers,
        "seconds": {"benchmark": t_bench, "index": t_index, **seconds},
    }
    if out is not None:
        write_results(results, Path(out))
    return results


def format_report(results: dict) -> str:
    """The results as Markdown: a retrieval table per source, then answer accuracy."""
    r, info = results["retrieval"], results["benchmark"]
    lines = [
        f"RAG eval ({results['size']}): {sum(info['queries'].values())} queries "
        f"({info['queries']['python']} python, {info['queries']['shakespeare']} shakespeare) over "
        f"{results['index']['chunks']} chunks of {info['documents']} documents "
        f"({info['bytes'] / 1e6:.2f} MB); embeddings {results['index']['embedding']} "
        f"{results['index']['dtype']}",
        "",
    ]
    for source in r["bm25"]:
        lines += [f"| {source} | " + " | ".join(METRICS) + " |",
                  "|---|" + "---:|" * len(METRICS)]  # fmt: skip
        for method in [m for m in r if m != "random"] + ["random"]:
            vals = r[method][source]
            lines.append(f"| {method} | " + " | ".join(f"{vals[m]:.3f}" for m in METRICS) + " |")
        lines.append("")
    a = results.get("answers")
    if a:
        lines += [
            f"Answer accuracy on {a['n']} questions (SmolLM2-135M-Instruct, greedy, "
            f"{a['settings']['max_new_tokens']} new tokens): closed-book "
            f"{a['closed_book_accuracy']:.3f}, with retrieval ({a['settings'].get('retriever', 'hybrid')}, "
            f"k={a['settings']['k']}) "
            f"{a['rag_accuracy']:.3f}; the gold document was among the sources for "
            f"{a['gold_doc_retrieved']:.3f} of them, the answer itself (in a source's text) for "
            f"{a.get('answer_in_sources', float('nan')):.3f}.",
            "",
        ]
    secs = ", ".join(f"{k} {v:.1f}s" for k, v in results["seconds"].items())
    lines.append(f"time: {secs}")
    return "\n".join(lines)


def plot_recall(results: dict, path: Path) -> None:
    """Grouped bars: recall@k and MRR per method, one panel per source."""
    from myllm101.plots import subplots

    r = results["retrieval"]
    sources = list(r["bm25"])
    methods = [m for m in r if m != "random"] + ["random"]
    fig, axes = subplots(1, len(sources), figsize=(4.5 * len(sources), 3.9), sharey=True)
    axes = np.atleast_1d(axes)
    x = np.arange(len(METRICS))
    width = 0.8 / len(methods)
    for ax, source in zip(axes, sources, strict=True):
        for j, m in enumerate(methods):
            ax.bar(x + (j - (len(methods) - 1) / 2) * width, [r[m][source][k] for k in METRICS],
                   width, label=m)  # fmt: skip
        ax.set_xticks(x, METRICS)
        ax.set_title(f"{source} ({results['size']})")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("mean over queries")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(methods), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))  # room for the legend below the panels
    fig.savefig(path, dpi=120)


def write_results(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (out / "RESULTS.md").write_text(format_report(results) + "\n", encoding="utf-8")
    plot_recall(results, out / "recall.png")
