"""``myllm101 serve``: the OpenAI-compatible HTTP server (serve/app.py) under uvicorn.

    myllm101 serve --model smollm2|DIR [--dtype auto|fp32|bf16] [--host 127.0.0.1] [--port 8000]
                   [--api-key KEY] [--max-batch 16] [--max-queue 64] [--max-tokens-cap N]
                   [--max-context 2048] [--threads N] [--prefill-chunk 16] [--index IDX]
                   [--grace 5]

Binds to 127.0.0.1 (this machine only) unless --host says otherwise. --api-key (or the
environment variable MYLLM101_API_KEY) makes /v1/* require ``Authorization: Bearer KEY``.
--max-context caps the tokens of one request (prompt + answer; default: the model's context, at
most 2048) and so the KV cache: max-batch slots of that many tokens. Ctrl-C stops taking
requests, lets the running ones finish for --grace seconds, then cancels the rest.
"""

from __future__ import annotations

import argparse
import os
import sys

from myllm101.cli_util import guarded, run_group

DEFAULT_PREFILL_CHUNK = 16  # serve/scheduler.py's (not imported: it needs torch)

DEFAULT_CONTEXT = 2048
KEY_ENV = "MYLLM101_API_KEY"


def default_threads() -> int:
    """torch threads for the model: every core but one (left to the HTTP side), at most torch's
    own default, at least 1. On 2 shared cores under load, 2 threads made a SmolLM2 step 7-10x
    slower than 1 (torch's thread barriers wait for a descheduled thread): see docs/serve."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(torch.get_num_threads(), (cores or 1) - 1))


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value}")


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from myllm101.serve.app import ServeSettings, create_app
    from myllm101.serve.engine import load_engine

    for name in ("max_batch", "max_tokens_cap", "max_context"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.max_queue < 0:
        raise ValueError(f"--max-queue: expected an int >= 0, got {args.max_queue}")
    if args.index is not None and not os.path.isdir(args.index):
        raise FileNotFoundError(f"--index {args.index}: not a directory")
    _positive("--threads", args.threads)
    _positive("--prefill-chunk", args.prefill_chunk)
    import torch

    torch.set_num_threads(args.threads or default_threads())
    engine = load_engine(args.model, args.dtype, args.max_context or DEFAULT_CONTEXT)
    print(f"serving {engine.model_id} ({engine.dtype}, context {engine.context}) on "
          f"http://{args.host}:{args.port}", file=sys.stderr)  # fmt: skip
    settings = ServeSettings(
        api_key=args.api_key or os.environ.get(KEY_ENV) or None,
        max_batch=args.max_batch, max_queue=args.max_queue, max_tokens_cap=args.max_tokens_cap,
        embed_dtype=args.dtype, index=args.index, grace=args.grace,
        prefill_chunk=args.prefill_chunk,
    )  # fmt: skip
    app = create_app(engine, settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=args.grace)  # fmt: skip
    return 0


def add_subparsers(subparsers) -> None:
    """Add ``serve`` to an ``add_subparsers()`` object."""
    p = subparsers.add_parser("serve", help="OpenAI-compatible HTTP server (continuous batching)")
    p.add_argument("--model", required=True, help="smollm2, or a run / model directory")
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto",
                   help="weights' dtype; auto: bf16 where native on this machine, else fp32")  # fmt: skip
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: this machine only)"
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help=f"require this bearer key (or ${KEY_ENV})")
    p.add_argument("--max-batch", type=int, default=16, help="requests decoded together")
    p.add_argument(
        "--max-queue", type=int, default=64, help="requests waiting for a slot (429 above)"
    )
    p.add_argument("--max-tokens-cap", type=int, default=None,
                   help="max_tokens above this gets 422 (default: the context)")  # fmt: skip
    p.add_argument("--max-context", type=int, default=None,
                   help=f"tokens per request, prompt + answer (default: the model's, at most "
                        f"{DEFAULT_CONTEXT})")  # fmt: skip
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for the model (default: the cores but one, at least 1: "
                        "a core for the HTTP side)")  # fmt: skip
    p.add_argument("--prefill-chunk", type=int, default=DEFAULT_PREFILL_CHUNK,
                   help="prompt tokens prefilled per scheduler turn, riding on the decoding "
                        f"step (default {DEFAULT_PREFILL_CHUNK}; larger: faster first token for "
                        "long prompts, longer stalls for the other streams)")  # fmt: skip
    p.add_argument("--index", default=None, help="a RAG index directory: enables /v1/rag/ask")
    p.add_argument("--grace", type=float, default=5.0,
                   help="seconds running requests get to finish at shutdown")  # fmt: skip
    p.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    p.set_defaults(func=guarded(cmd_serve))


def main(argv: list[str] | None = None) -> int:
    """``myllm101 serve ...`` on its own -> exit code."""
    return run_group(add_subparsers, argv, ("serve",))


if __name__ == "__main__":
    sys.exit(main())
