"""``myllm101 rag``: index a folder of .txt/.md files, ask it questions, evaluate retrieval.

    myllm101 rag index DOCS [DOCS ...] --out IDX [--update] [--max-tokens 200] [--overlap 40]
                       [--dtype auto|fp32|bf16] [--no-progress]
        builds the index (rag/store.py) atomically; --update re-reads only what changed (by
        content hash), adds new files and deletes vanished ones
    myllm101 rag ask IDX QUESTION [-k 5] [--retriever bm25|dense|hybrid|weighted|rerank]
                     [--no-generate] [--budget 1024] [--max-new-tokens 128]
                     [--dtype auto|fp32|bf16] [--json]
        prints SmolLM2's answer and its sources (file, byte offsets); --no-generate: the
        retrieved passages only
    myllm101 rag eval [--size small|full] [--out DIR] [--questions N] [--no-generate]
        the retrieval benchmark of rag/evalset.py: recall@1/5/10 and MRR of every retriever
        (a table, results.json, recall.png) and answer accuracy with / without retrieval

``add_subparsers(subparsers)`` hooks ``rag`` into the main parser; ``run(argv)`` runs it alone.
Errors (a missing or corrupt index, bad options): one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from myllm101.cli_util import guarded, run_group


def cmd_index(args: argparse.Namespace) -> int:
    from myllm101.rag.embedder import Embedder
    from myllm101.rag.store import IndexSettings, index_documents

    settings = None
    if not args.update or args.max_tokens is not None or args.overlap is not None:
        defaults = IndexSettings()
        settings = IndexSettings(
            max_tokens=defaults.max_tokens if args.max_tokens is None else args.max_tokens,
            overlap=defaults.overlap if args.overlap is None else args.overlap,
        )
    embedder = None if args.update and args.dtype == "auto" else Embedder(dtype=args.dtype)
    index, report = index_documents(args.docs, args.out, update=args.update, embedder=embedder,
                                    settings=settings, progress=not args.no_progress)  # fmt: skip
    print(
        f"{args.out}: {len(index.chunks)} chunks from {len(index.documents)} documents "
        f"({report.summary()}); embeddings {index.meta['embedding']['name']} "
        f"{index.embedding_dtype}"
    )
    return 0


def _hits_json(hits) -> list[dict]:
    return [{"rank": h.rank, "score": h.score, "id": h.chunk.id, "doc": h.chunk.doc,
             "start": h.chunk.start, "end": h.chunk.end, "text": h.chunk.text}
            for h in hits]  # fmt: skip


def cmd_ask(args: argparse.Namespace) -> int:
    from myllm101.rag.retrieve import Retriever, check_k
    from myllm101.rag.store import load_index

    check_k(args.k)
    if not args.question.strip():
        raise ValueError("QUESTION: expected a non-empty question, got an empty string")
    retriever = Retriever(load_index(args.index))
    if args.no_generate:
        hits = retriever.search(args.question, k=args.k, method=args.retriever)
        if args.json:
            print(json.dumps({"question": args.question, "hits": _hits_json(hits)}, indent=1))
            return 0
        for h in hits:
            c = h.chunk
            print(f"[{h.rank}] {c.doc} (bytes {c.start}-{c.end}) {args.retriever} {h.score:.4f}")
            print(c.text.strip())
            print()
        return 0

    from myllm101.rag.answer import Generator, answer

    generator = Generator(args.dtype)
    a = answer(args.question, retriever, generator, k=args.k, method=args.retriever,
               budget=args.budget, max_new_tokens=args.max_new_tokens)  # fmt: skip
    if args.json:
        sources = [{"n": s.n, "id": s.chunk.id, "doc": s.chunk.doc, "start": s.chunk.start,
                    "end": s.end} for s in a.prompt.sources]  # fmt: skip
        print(json.dumps({"question": args.question, "answer": a.text, "sources": sources,
                          "prompt_tokens": a.prompt.n_tokens}, indent=1))  # fmt: skip
        return 0
    print(a.text)
    print()
    print("Sources:")
    for s in a.prompt.sources:
        cut = " (cut to fit the budget)" if a.prompt.truncated else ""
        print(f"[{s.n}] {s.chunk.doc} (bytes {s.chunk.start}-{s.end}){cut}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from myllm101.rag.eval import format_report, run_eval

    if args.questions is not None and args.questions < 0:
        raise ValueError(f"--questions: expected >= 0, got {args.questions}")
    results = run_eval(size=args.size, out=args.out, questions=args.questions,
                       generate=not args.no_generate, progress=not args.no_progress)  # fmt: skip
    print(format_report(results))
    if args.out:
        print(f"\nwritten: {args.out}/results.json, RESULTS.md, recall.png")
    return 0


def add_subparsers(subparsers) -> None:
    """Add ``rag`` (with ``index``, ``ask``, ``eval``) to an ``add_subparsers()`` object."""
    from myllm101.rag.retrieve import DEFAULT_METHOD, METHODS

    rag = subparsers.add_parser("rag", help="retrieval-augmented generation over your files")
    sub = rag.add_subparsers(dest="rag_command", required=True)

    p = sub.add_parser("index", help="build or update an index of .txt/.md files")
    p.add_argument("docs", nargs="+", metavar="DOCS", help="folders or files ('-': stdin)")
    p.add_argument("--out", required=True, metavar="IDX", help="the index directory")
    p.add_argument("--update", action="store_true",
                   help="update IDX in place: re-read changed files (by content hash), add new "
                   "ones, delete vanished ones")  # fmt: skip
    p.add_argument("--max-tokens", type=int, default=None,
                   help="chunk size in WordPiece tokens (default 200)")  # fmt: skip
    p.add_argument("--overlap", type=int, default=None,
                   help="tokens shared by neighbouring chunks (default 40)")  # fmt: skip
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto",
                   help="embedding weights' dtype; auto: bf16 where native, else fp32 "
                   "(with --update: the index's own)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=guarded(cmd_index))

    p = sub.add_parser("ask", help="answer a question from an index (with sources)")
    p.add_argument("index", metavar="IDX")
    p.add_argument("question", metavar="QUESTION")
    p.add_argument("-k", type=int, default=5, help="chunks to retrieve")
    p.add_argument("--retriever", choices=METHODS, default=DEFAULT_METHOD)
    p.add_argument("--no-generate", action="store_true", help="print the retrieved passages only")
    p.add_argument("--budget", type=int, default=1024, help="prompt tokens at most")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto",
                   help="SmolLM2's weights' dtype")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=guarded(cmd_ask))

    p = sub.add_parser("eval", help="the retrieval benchmark (recall@k, MRR, answer accuracy)")
    p.add_argument("--size", choices=("small", "full"), default="small")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write results.json, RESULTS.md and recall.png here")  # fmt: skip
    p.add_argument("--questions", type=int, default=None,
                   help="QA questions to generate for (default: 0 at small, all at full)")  # fmt: skip
    p.add_argument("--no-generate", action="store_true", help="retrieval metrics only")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=guarded(cmd_eval))


def run(argv: list[str] | None = None) -> int:
    """``myllm101 rag ...`` on its own -> exit code (tests use it)."""
    return run_group(add_subparsers, argv, prefix=("rag",))


if __name__ == "__main__":
    sys.exit(run())
