"""``myllm101 ui``: the Gradio app in a browser (ui/app.py).

    myllm101 ui [--model smollm2|DIR] [--index IDX] [--compare DIR] [--host 127.0.0.1] [--port 7860]

--model: the chat model (SmolLM2, or a model / run / quantized directory of ours: a GPT or Llama with
its BPE tokenizer). --index: an index directory of ``myllm101 rag index`` (adds the RAG tab).
--compare: a second model directory, usually ``myllm101 quantize``'s output (adds the Compare tab:
the same prompt through both). Binds to 127.0.0.1 unless --host says otherwise; no share link, no
analytics. Errors: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from myllm101.cli_util import guarded, run_group


def check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise ValueError(f"--port: expected an int in [1, 65535], got {port}")


def prepare(args: argparse.Namespace):
    """Load the models and build the app (everything ``ui`` does before serving) -> gr.Blocks."""
    from myllm101.ui.app import build_app
    from myllm101.ui.chat import load_chat_model

    check_port(args.port)
    cm = load_chat_model(args.model)
    other = load_chat_model(args.compare) if args.compare else None
    rag, message = None, ""
    if args.index:
        from myllm101.ui.rag import open_rag

        rag, message = open_rag(args.index, cm)
    return build_app(cm, compare=other, rag=rag, rag_message=message)


def cmd_ui(args: argparse.Namespace) -> int:
    from myllm101.ui.app import launch

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = prepare(args)
    print(f"MyLLM101 UI on http://{args.host}:{args.port} (Ctrl+C stops it)")
    launch(demo, args.host, args.port)
    return 0


def add_subparsers(subparsers) -> None:
    """Add ``ui`` to an ``add_subparsers()`` object."""
    p = subparsers.add_parser("ui", help="the Gradio app: chat, tokenizer, attention, RAG, compare")
    p.add_argument("--model", default="smollm2", help="smollm2, or a model / run directory")
    p.add_argument("--index", default=None, help="a RAG index directory (adds the RAG tab)")
    p.add_argument("--compare", default=None,
                   help="a second model directory, e.g. a quantized one (adds the Compare tab)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: local only)")
    p.add_argument("--port", type=int, default=7860)
    p.set_defaults(func=guarded(cmd_ui))


def run(argv: list[str] | None = None) -> int:
    """``myllm101 ui ...`` on its own -> exit code (tests use it)."""
    return run_group(add_subparsers, argv)


if __name__ == "__main__":
    sys.exit(run())
