"""A training step with glibc's default malloc against ``train/host_memory.py``'s reuse policy.

    python -m benchmarks.host_memory_ab                     # ours and the peers at 6L-384
    python -m benchmarks.host_memory_ab --pairs 2 --steps 6 --archs gpt   # quicker

malloc's settings are process-wide and cannot be undone, so each measurement is a child process
(``MYLLM101_MALLOC=system`` or ``reuse``) that builds one model at the training benchmark's peer
shape (6 layers, width 384, vocab 8192, T=256, B=8, fp32, fused AdamW), takes 3 warm-up steps and
then times ``--steps`` more. The two policies' children alternate, ``--pairs`` times per model, so
a drift of this VM's speed reaches both alike. Reported per model and policy: the median step over
all its children's steps, minor page faults per step and peak resident memory; the ratio is
system's median / reuse's (> 1: reuse is faster). A second table puts each model as it ships
side by side: ours under ``reuse`` (the trainer sets it), the peers (a nanoGPT-style GPT,
transformers' GPT-2 and LLaMA: the training benchmark's) under glibc's default, which their own
training scripts leave alone; issue 14's own peer measurements ran each implementation in its own
process like this. Rounds go over every model in turn, so a drift reaches all models alike too.
Writes benchmarks/results/HOST_MEMORY.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "HOST_MEMORY.md"
# name -> (family, implementation): ours and the training benchmark's peers (test_training.py)
ARCHS = {
    "gpt": ("gpt", "ours"),
    "llama": ("llama", "ours"),
    "nanogpt-peer": ("gpt", "nanogpt-peer"),
    "hf-gpt2": ("gpt", "transformers"),
    "hf-llama": ("llama", "transformers"),
}

CHILD = """
import json, resource, sys, time
from myllm101.train.host_memory import reuse_freed_memory
said = reuse_freed_memory()  # before the benchmark module (which applies it too) allocates
from benchmarks.test_training import PEER_SIZES, _config, _peer_step
family, impl, steps, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
s = PEER_SIZES[size]
step = _peer_step(family, impl, _config(family, s), s, compiled=False).step  # 1 warm-up step
for _ in range(2):
    step()
times, f0 = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(steps):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
use = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"said": said, "times": times, "faults": (use.ru_minflt - f0) / steps,
                  "rss_mb": use.ru_maxrss / 1024}))
"""


def child(arch: str, policy: str, steps: int, size: str) -> dict:
    env = {**os.environ, "MYLLM101_MALLOC": policy}
    out = subprocess.run([sys.executable, "-c", CHILD, *ARCHS[arch], str(steps), size], cwd=ROOT,
                         env=env, capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(
    archs: list[str], pairs: int, steps: int, size: str = "6L-384"
) -> dict[str, dict[str, list[dict]]]:
    """{arch: {policy: [each child's result]}}: round i runs every model under both policies, the
    policies' order alternating with i."""
    from tqdm import tqdm

    runs = {a: {"system": [], "reuse": []} for a in archs}
    jobs = [(a, p) for i in range(pairs) for a in archs
            for p in (("system", "reuse") if i % 2 == 0 else ("reuse", "system"))]  # fmt: skip
    for arch, policy in tqdm(jobs, desc="children", unit="run"):
        runs[arch][policy].append(child(arch, policy, steps, size))
    return runs


def medians(runs: dict[str, dict[str, list[dict]]]) -> dict[str, dict[str, float]]:
    """{arch: {policy: the median step over every child's steps}}."""
    return {a: {p: statistics.median(t for r in rs for t in r["times"]) for p, rs in by.items()}
            for a, by in runs.items()}  # fmt: skip


def markdown(runs: dict[str, dict[str, list[dict]]], machine: str, when: str, shape: str) -> str:
    lines = [
        "# Host memory: glibc's default malloc vs reuse (train/host_memory.py)",
        "",
        f"Run {when}. Machine: {machine}. Produced by `python -m benchmarks.host_memory_ab` (see "
        f"its docstring): a training step at {shape}, fp32, each policy in its own child "
        "processes, alternating.",
        "",
        "| model | malloc | median step ms | ratio | page faults / step | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    med = medians(runs)
    for arch, by in runs.items():
        for policy, rs in by.items():
            said = rs[0]["said"]
            lines.append(
                f"| {arch} | {said} | {1e3 * med[arch][policy]:.1f} | "
                f"{med[arch]['system'] / med[arch][policy]:.2f}x | "
                f"{statistics.median(r['faults'] for r in rs):,.0f} | "
                f"{max(r['rss_mb'] for r in rs):,.0f} |"
            )
    n = sum(len(rs) for by in runs.values() for rs in by.values())
    lines += ["", f"{n} child processes; ratio = system's median / the row's (> 1: faster).", ""]
    return "\n".join(lines + as_shipped(runs))


def as_shipped(runs: dict[str, dict[str, list[dict]]]) -> list[str]:
    """Each model as it runs out of the box: ours under ``reuse`` (what ``myllm101 train`` sets),
    the peers under glibc's default, which their own scripts leave alone."""
    med = medians(runs)
    out = []
    for ours, (family, _) in ARCHS.items():
        peers = [a for a, (f, impl) in ARCHS.items() if f == family and impl != "ours"]
        peers = [a for a in peers if a in med]
        if ours not in med or ARCHS[ours][1] != "ours" or not peers:
            continue
        base = med[ours]["reuse"]
        if not out:
            out = [
                "## As shipped",
                "",
                "Ours under `reuse` (what `myllm101 train` sets), each peer under glibc's "
                "default (what its own training script leaves); ratio = ours' time / the row's "
                "(< 1: ours is faster), the training benchmark's convention.",
                "",
                "| model | malloc | median step ms | ratio |",
                "|---|---|---:|---:|",
            ]
        out.append(f"| {ours} | reuse | {1e3 * base:.1f} | 1.00x |")
        out += [f"| {p} | system | {1e3 * med[p]['system']:.1f} | "
                f"{base / med[p]['system']:.2f}x |" for p in peers]  # fmt: skip
    return out + [""] if out else []


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    ap.add_argument("--pairs", type=int, default=3, help="children per policy and model")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per child")
    ap.add_argument("--size", default="6L-384", help="a PEER_SIZES key of test_training.py")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    from benchmarks.test_training import PEER_SIZES, _shape
    from myllm101.device import hardware

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True).stdout.strip() or "unknown"  # fmt: skip
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, text=True,
                           capture_output=True).stdout.strip()  # fmt: skip
    when = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC at commit {commit}" + (
        " plus uncommitted changes" if dirty else ""
    )
    shape = f"the {args.size} shape ({_shape('gpt', PEER_SIZES[args.size])}; LLaMA kv=2)"
    runs = measure(args.archs, args.pairs, args.steps, args.size)
    text = markdown(runs, hardware().summary(), when, shape)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
