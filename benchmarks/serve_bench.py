"""Loopback throughput and latency of ``myllm101 serve`` under 1, 4, 8 and 16 concurrent clients.

    python -m benchmarks.serve_bench                 # SmolLM2 fp32, ~3-5 min on 2 cores
    python -m benchmarks.serve_bench --threads 2     # torch threads (default: cores - 1)
    python -m benchmarks.serve_bench --smoke         # a tiny random Llama, a few seconds
    python -m benchmarks.serve_bench --model runs/smollm2-int8 --name SERVE-int8   # a model dir
                                     # (myllm101 quantize --model smollm2 --scheme int8 --out ...)
    python -m benchmarks.serve_bench --render benchmarks/results/SERVE.raw.json   # md + png again

The server (serve/app.py, continuous batching, --max-batch 16, --prefill-chunk its default) runs
in this process on 127.0.0.1 (serve/testing.py ``LiveServer``), torch on ``--threads`` threads
(default: serve/cli.py ``default_threads``). The clients run in ANOTHER process (spawned, one per
level), so their HTTP parsing does not compete with the server for this process's GIL: each is
a thread there streaming /v1/completions (greedy, exactly ``max_tokens`` new tokens:
``ignore_eos``, vLLM's extension, as vLLM's own serving benchmark does;
``stream_options.include_usage`` for the exact token count) ``--rounds`` times in a row, each
round with its own prompt (~14 tokens). Without ignore_eos the 1-client baseline measured answers
that end after ~4 tokens (SmolLM2 answers these prompts with "\\nA:"): a few gaps, one of them
shared with the end token, which has no text. Per level of concurrency:

    ttft        time to first token: request sent -> first chunk with text (p50, p95)
    itl         inter-token latency: the gaps between a stream's text chunks, each divided by the
                tokens it carried (p50, p95 over every gap of every stream)
    tokens/s    every completion token of the level / the level's wall time (all clients)

Targets (issue 19): tokens/s at 8 clients >= 3x the single client's, with the inter-token p95 at
8 clients under 2x the single client's. One warm-up request runs first (not counted). The machine
is shared: the numbers are indicative, and only the ratios within one run are compared.

Output: ``benchmarks/results/SERVE.raw.json`` (settings, machine, every level; committed),
``SERVE.md`` (the table, the targets) and ``SERVE.png`` (tokens/s and latency against clients).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

LEVELS = (1, 4, 8, 16)
RESULTS = Path(__file__).resolve().parent / "results"


def stream_one(http, url: str, model: str, prompt: str, max_tokens: int) -> dict:
    """One streaming completion through ``http`` (an httpx.Client, kept per client: a new one
    costs ~50 ms of setup): its first-token time, chunk gaps per token and token count."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True},
            "ignore_eos": True}  # fmt: skip
    t0 = time.perf_counter()
    times, texts, tokens = [], [], 0
    with http.stream("POST", url + "/v1/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and chunk["choices"][0]["text"]:
                times.append(time.perf_counter())
                texts.append(chunk["choices"][0]["text"])
    if not times:
        return {"ttft": None, "gaps": [], "tokens": tokens}
    # a chunk may carry several tokens (text held back, then sent at once): its gap is shared
    per_chunk = max(1, tokens - 1) / max(1, len(times) - 1) if len(times) > 1 else 1.0
    gaps = [(b - a) / per_chunk for a, b in zip(times, times[1:])]
    return {"ttft": times[0] - t0, "gaps": gaps, "tokens": tokens}


def run_level(url: str, model: str, clients: int, rounds: int, max_tokens: int) -> dict:
    results: list[list[dict]] = [[] for _ in range(clients)]
    errors: list[str] = []

    def client(i: int) -> None:
        import httpx

        with httpx.Client() as http:
            for r in range(rounds):
                prompt = f"Question {i}.{r}: what is a language model? Answer:"
                try:
                    results[i].append(stream_one(http, url, model, prompt, max_tokens))
                except Exception as e:  # noted in the JSON, not lost in a thread
                    errors.append(f"{type(e).__name__}: {e}")
                    continue
                if results[i][-1]["tokens"] != max_tokens:  # ignore_eos: every request is full
                    errors.append(f"{results[i][-1]['tokens']} tokens, not {max_tokens}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    flat = [x for row in results for x in row]
    ttft = [x["ttft"] for x in flat if x["ttft"] is not None]
    gaps = [g for x in flat for g in x["gaps"]]
    tokens = sum(x["tokens"] for x in flat)
    pct = lambda v, q: float(np.percentile(v, q)) if v else float("nan")
    return {
        "clients": clients, "requests": len(flat), "errors": errors, "tokens": tokens,
        "wall_s": wall, "tokens_per_s": tokens / wall,
        "ttft_p50_ms": 1e3 * pct(ttft, 50), "ttft_p95_ms": 1e3 * pct(ttft, 95),
        "itl_p50_ms": 1e3 * pct(gaps, 50), "itl_p95_ms": 1e3 * pct(gaps, 95),
        "load_avg": [load_before, os.getloadavg()[0]],
    }  # fmt: skip


def run_level_elsewhere(url: str, model: str, clients: int, rounds: int, max_tokens: int) -> dict:
    """``run_level`` in a spawned process (a fork would copy the server's threads and locks)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(run_level, (url, model, clients, rounds, max_tokens))


def measure(
    smoke: bool, rounds: int, max_tokens: int, levels=LEVELS, model: str = "smollm2"
) -> dict:
    import torch

    from myllm101.serve.app import ServeSettings, create_app
    from myllm101.serve.engine import load_engine
    from myllm101.serve.testing import LiveServer, tiny_model_dir

    if smoke:
        spec = str(tiny_model_dir(Path(tempfile.mkdtemp()) / "tiny", block_size=256))
    else:
        spec = model
    engine = load_engine(spec, "fp32", max_context=512)
    settings = ServeSettings(max_batch=max(levels))
    app = create_app(engine, settings)
    rows = []
    with LiveServer(app, timeout=120) as live:
        import httpx

        with httpx.Client() as http:  # not counted
            stream_one(http, live.url, engine.model_id, "Warm-up:", max_tokens)
        for clients in levels:
            rows.append(run_level_elsewhere(live.url, engine.model_id, clients, rounds, max_tokens))
            r = rows[-1]
            print(f"{clients:>2} clients: {r['tokens_per_s']:7.1f} tok/s  ttft p50 "
                  f"{r['ttft_p50_ms']:7.1f} ms  itl p50 {r['itl_p50_ms']:6.1f} p95 "
                  f"{r['itl_p95_ms']:6.1f} ms  errors {len(r['errors'])}")  # fmt: skip
    from myllm101.device import hardware

    return {
        "model": engine.model_id, "dtype": engine.dtype, "smoke": smoke, "rounds": rounds,
        "spec": None if smoke or model == "smollm2" else model,
        "max_tokens": max_tokens, "max_batch": max(levels), "torch_threads": torch.get_num_threads(),
        "prefill_chunk": settings.prefill_chunk, "clients_in": "a separate process",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "torch": torch.__version__, "hw": hardware().summary()},
        "levels": rows,
    }  # fmt: skip


def targets(data: dict) -> dict:
    by = {r["clients"]: r for r in data["levels"]}
    if 1 not in by or 8 not in by:
        return {}
    speedup = by[8]["tokens_per_s"] / by[1]["tokens_per_s"]
    itl = by[8]["itl_p95_ms"] / by[1]["itl_p95_ms"]
    return {"speedup_8": speedup, "speedup_ok": speedup >= 3.0, "itl_p95_ratio_8": itl,
            "itl_ok": itl < 2.0}  # fmt: skip


def markdown(data: dict) -> str:
    lines = [
        "# Serving: continuous batching over loopback",
        "",
        f"`python -m benchmarks.serve_bench{' --smoke' if data['smoke'] else ''}"
        f"{' --model ' + data['spec'] if data.get('spec') else ''}`: "
        f"{data['model']} ({data['dtype']}), greedy streaming /v1/completions, "
        f"{data['max_tokens']} new tokens per request, {data['rounds']} requests per client, "
        f"--max-batch {data['max_batch']}, --prefill-chunk {data.get('prefill_chunk')}, "
        f"{data['torch_threads']} torch threads on "
        f"{data['machine']['cpu_count']} CPUs; clients in "
        f"{data.get('clients_in', 'the server process')}. Baseline of every ratio: the 1-client "
        f"row of this run. The server and its clients share the machine's CPUs: the load average "
        f"below says whether anything else did.",
        "",
        f"Machine: {data['machine'].get('hw', 'not recorded')}.",
        "",
        "| clients | tokens/s | x 1 client | TTFT p50 ms | TTFT p95 ms | ITL p50 ms | ITL p95 ms "
        "| errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = data["levels"][0]["tokens_per_s"]
    for r in data["levels"]:
        lines.append(
            f"| {r['clients']} | {r['tokens_per_s']:.1f} | {r['tokens_per_s'] / base:.2f} | "
            f"{r['ttft_p50_ms']:.1f} | {r['ttft_p95_ms']:.1f} | {r['itl_p50_ms']:.1f} | "
            f"{r['itl_p95_ms']:.1f} | {len(r['errors'])} |"
        )
    loads = [x for r in data["levels"] for x in r.get("load_avg", [])]
    if loads:
        lines += [
            "",
            f"Load average during the run: {min(loads):.1f} to {max(loads):.1f} "
            f"({data['machine']['cpu_count']} CPUs; above that, other work shared them).",
        ]
    t = targets(data)
    if t:
        lines += [
            "",
            f"Targets at 8 clients: tokens/s {t['speedup_8']:.2f}x the single client's "
            f"(target >= 3x: {'met' if t['speedup_ok'] else 'NOT met'}); inter-token p95 "
            f"{t['itl_p95_ratio_8']:.2f}x the single client's (target < 2x: "
            f"{'met' if t['itl_ok'] else 'NOT met'}).",
        ]
    lines += [
        "",
        "TTFT includes the wait for a free slot and the scheduler turns that prefill the prompt "
        "(one prefill piece per turn, riding on the decoding step). ITL: gaps between text "
        "chunks divided by the tokens each carried.",
        "",
    ]
    return "\n".join(lines)


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["clients"] for r in data["levels"]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(x, [r["tokens_per_s"] for r in data["levels"]], "o-")
    a.set(xlabel="concurrent clients", ylabel="total tokens/s", title="Throughput", xticks=x)
    for key, label in (("itl_p50_ms", "ITL p50"), ("itl_p95_ms", "ITL p95"),
                       ("ttft_p50_ms", "TTFT p50")):  # fmt: skip
        b.plot(x, [r[key] for r in data["levels"]], "o-", label=label)
    b.set(xlabel="concurrent clients", ylabel="ms", title="Latency", xticks=x)
    b.legend()
    fig.suptitle(f"myllm101 serve: {data['model']} {data['dtype']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(data: dict, out_dir: Path, name: str = "SERVE") -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.raw.json").write_text(json.dumps(data, indent=1))
    (out_dir / f"{name}.md").write_text(markdown(data))
    plot(data, out_dir / f"{name}.png")
    print(f"wrote {out_dir / name}.raw.json, .md, .png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="a tiny random Llama, 1 round, 8 tokens")
    p.add_argument("--rounds", type=int, default=None, help="requests per client (default 3)")
    p.add_argument("--max-tokens", type=int, default=None, help="new tokens per request (64)")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="default: benchmarks/results (a temp dir with --smoke)")  # fmt: skip
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: serve/cli.py default_threads)")  # fmt: skip
    p.add_argument("--model", default="smollm2", help="smollm2 or a model directory (fp32 load)")
    p.add_argument("--name", default="SERVE", help="output files NAME.raw.json, .md, .png")
    p.add_argument("--render", type=Path, default=None, help="a SERVE.raw.json: md + png again")
    args = p.parse_args(argv)
    if args.render is not None:
        data = json.loads(args.render.read_text())
        write(data, args.out_dir or args.render.parent, args.render.name.split(".")[0])
        return 0
    import torch

    from myllm101.serve.cli import default_threads

    torch.set_num_threads(args.threads or default_threads())
    rounds = args.rounds or (1 if args.smoke else 3)
    max_tokens = args.max_tokens or (8 if args.smoke else 64)
    data = measure(args.smoke, rounds, max_tokens, model=args.model)
    out_dir = args.out_dir or (Path(tempfile.mkdtemp()) if args.smoke else RESULTS)
    write(data, out_dir, args.name)
    print(markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
