"""fp32 decoding speed of SmolLM2-135M-Instruct against transformers and against the memory bound.

    pytest benchmarks/test_decode.py -k "not smoke" --benchmark-only --benchmark-json=decode.json
    python -m benchmarks.ratio_report decode.json --name DECODE --title "Decode (fp32)"
    pytest benchmarks/test_decode.py -k smoke --benchmark-only      # a handful of tokens

A decoding step reads every weight once for one token, so a step can take no less than
(weight bytes) / (memory read bandwidth): the bound. Both are measured in the same run:

- "read bandwidth": ``x.sum()`` over a float32 tensor far larger than the caches (1 GiB; smoke:
  64 MiB), count = GB read, so the report's throughput column is GB/s. It runs first; the decode
  rows turn its median into the bound: bandwidth / bytes of the model's weights read per token
  (every parameter once; SmolLM2 ties its LM head to the embedding, a matrix read once per step).
- "smollm2 decode fp32": greedy generation of ``new`` tokens after a short chat prompt, batch 1,
  KV cache, float32 everywhere; count = new tokens (the time includes the prompt's prefill). Rows:
  ``transformers-fp32`` (the baseline: ``generate(do_sample=False, min_new_tokens=new)``, its
  streamer timing the first new token),
  ``ours-forward`` (every step through ``Llama.forward`` with the cache: the path before issue
  16), ``ours-fp32`` (``Llama.decode_step``: the lean step), ``ours-fp32-fused`` (the lean step
  after ``fast.fuse.fuse_for_inference``: fused q/k/v and gate/up projections),
  ``ours-fp32-prepacked`` (the fused model with every Linear prepacked for oneDNN,
  ``fast.prepack.prepack_for_inference``: float32 still, equal to float32 rounding),
  ``ours-fp32-compiled`` (the fused model decoding through ``compile_step=True``:
  torch.compile of the lean step on a static cache, Inductor freezing + GEMM autotuning,
  fast/compiled_decode.py; compiled and autotuned in the untimed warm-up, ~80 s; full size
  only). The rows are
  timed in one interleaved loop (benchmarks/interleave.py): each round runs every row's
  generation once, the order rotating, so a drift of the machine's speed reaches every row alike;
  each row's test then reports its own rounds. Each row records ``bound_tokens_per_s`` and its
  ``percent_of_bound``. Ours generate through ``fast.generate.generate``.
- "smollm2 decode steps fp32": the same calls' decode steps alone, the new - 1 tokens after the
  first: each call's time less its time to the first new token (benchmarks/first_token.py), so the
  prompt's prefill (compute-bound, and eager in the compiled row) is out; what ``myllm101 eval``
  calls decode tokens/s and llama.cpp its eval rate. The bound is a step's, so it applies here.

Target (issue 16): ours-fp32-fused, -prepacked or -compiled >= 2x transformers-fp32, and their
decode steps >= 80% of the bound.
tests/test_decode_bench_smoke.py runs the smoke rows and builds the report (no timing asserts).
"""

from __future__ import annotations

import copy
import gc
import os
import statistics
import time

import pytest
import torch

from benchmarks.first_token import hf_generation, ours_generation, replay_steps
from benchmarks.interleave import Groups, replay
from benchmarks.memory import peak_torch_mb
from benchmarks.test_hub import DECODE_CHAT, _gguf_path, _shape, load_ours, load_transformers

SIZES = {  # name -> (new tokens, bandwidth tensor MiB, rounds)
    "": (64, 1024, 7),
    "smoke": (4, 64, 1),
}
SIZE_IDS = [pytest.param(s, id=s or "full") for s in SIZES]
IMPLS = ("transformers-fp32", "ours-forward", "ours-fp32", "ours-fp32-fused", "ours-fp32-prepacked",
         "ours-fp32-compiled")  # fmt: skip
FASTEST = ["ours-fp32-fused", "ours-fp32-prepacked", "ours-fp32-compiled"]  # the target's rows
# (size, impl): the compiled row compiles for ~40-80 s, too long for a smoke run (as in test_hub;
# tests/test_compiled_decode.py tests the compiled step)
DECODE_PARAMS = [pytest.param(size, impl, id=f"{size or 'full'}-{impl}") for size in SIZES
                 for impl in IMPLS if size == "" or impl != "ours-fp32-compiled"]  # fmt: skip
BOUND_SHARE, SPEEDUP = 0.8, 2.0
TARGET = (
    "target: ours-fp32-fused / -prepacked / -compiled >= 2x transformers-fp32 decode tokens/s and "
    "their decode steps >= 80% of the memory-bandwidth bound measured in the same run"
)
PHASES = ("generate", "steps")  # the whole call / the decode steps after the first new token
GROUP_NAMES = {"generate": "smollm2 decode fp32", "steps": "smollm2 decode steps fp32"}
_BANDWIDTH: dict[str, float] = {}  # size -> GB/s, from test_read_bandwidth


def _group(name: str, size: str) -> str:
    return f"{name} {size}" if size else name


def _read_gb_s(x: torch.Tensor, rounds: int = 5) -> float:
    x.sum()  # warm-up (pages touched)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - t)
    return x.numel() * x.element_size() / statistics.median(times) / 1e9


def bandwidth(size: str) -> float:
    """GB/s: the read-bandwidth row's median when it ran, else measured here the same way."""
    if size not in _BANDWIDTH:
        _BANDWIDTH[size] = _read_gb_s(torch.ones(SIZES[size][1] * 2**20 // 4))
    return _BANDWIDTH[size]


def weight_bytes_per_token(model: torch.nn.Module) -> int:
    """Bytes of weights one decoding step reads: every parameter once (a tied LM head and
    embedding are one Parameter), except an untied embedding table, of which one row is read."""
    params = {id(p): p for p in model.parameters()}
    emb = model.embed_tokens.weight
    if emb is not model.lm_head.weight:
        params.pop(id(emb))
    return sum(p.numel() * p.element_size() for p in params.values())


@pytest.mark.parametrize("size", SIZE_IDS)
def test_read_bandwidth(benchmark, size):
    x = torch.ones(SIZES[size][1] * 2**20 // 4)  # float32
    x.sum()  # warm-up
    benchmark.group = _group("read bandwidth", size)
    benchmark.pedantic(x.sum, rounds=7, iterations=1, warmup_rounds=0)
    gb = x.numel() * 4 / 1e9
    _BANDWIDTH[size] = gb / benchmark.stats.stats.median
    benchmark.extra_info.update(
        component="read-bandwidth", size=size or "full", impl="tensor-sum", baseline=True,
        mode="x.sum(), float32, all threads", shape=f"{SIZES[size][1]} MiB",
        count=gb, unit="GB", peak_mb=None, dtype="fp32",
        note="memory read bandwidth: the decode bound's numerator (GB/s column)",
        loadavg=os.getloadavg()[0],
    )  # fmt: skip


@pytest.fixture(scope="module")
def models():
    """impl -> generate-like callable's model, plus our tokenizer (each model built once)."""
    from myllm101.fast.fuse import fuse_for_inference
    from myllm101.fast.prepack import prepack_for_inference

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local files only: never download
    path = _gguf_path()
    ours, tok = load_ours(path)
    hf, _ = load_transformers(path, tokenizer=False)
    fused = fuse_for_inference(copy.deepcopy(ours))
    prepacked = prepack_for_inference(fuse_for_inference(copy.deepcopy(ours)))
    return {"transformers-fp32": hf, "ours-fp32": ours, "ours-fp32-fused": fused,
            "ours-fp32-prepacked": prepacked, "tokenizer": tok}  # fmt: skip


def _impls(size: str) -> list[str]:
    return [i for s, i in (p.values for p in DECODE_PARAMS) if s == size]


def _runner(models, impl: str, prompt: list[int], n_new: int):
    if impl == "transformers-fp32":
        return hf_generation(models[impl], prompt, n_new)
    compiled = impl == "ours-fp32-compiled"
    model = models["ours-fp32-fused" if compiled else impl if impl in FASTEST else "ours-fp32"]
    lean = impl != "ours-forward"  # ours-forward: every step through forward with the cache
    return ours_generation(model, prompt, n_new, fast_decode=lean, compile_step=compiled)


_TOKENS: dict[str, list[int]] = {}  # size -> transformers' tokens (recorded: same tokens?)
GROUPS = Groups()  # size -> every row's generation, timed interleaved


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize(("size", "impl"), DECODE_PARAMS)
def test_smollm2_decode_fp32(benchmark, models, size, impl, phase):
    from myllm101.hub.smollm2 import chat_prompt

    n_new = SIZES[size][0]
    tok, cfg = models["tokenizer"], models["ours-fp32"].cfg
    prompt = tok.encode(chat_prompt(DECODE_CHAT))
    runs, times = GROUPS.timed(
        size, lambda: {i: _runner(models, i, prompt, n_new) for i in _impls(size)}, SIZES[size][2]
    )
    gb_s, weight_bytes = bandwidth(size), weight_bytes_per_token(models["ours-fp32"])
    bound = gb_s * 1e9 / weight_bytes  # tokens/s if only the weight reads took time
    goals = [{"impls": FASTEST, "metric": "ratio", "op": ">=", "value": SPEEDUP}]
    benchmark.group = _group(GROUP_NAMES[phase], size)
    if phase == "steps":  # the bound is a decoding step's: it applies to the steps alone
        steps = GROUPS.after_first[size][impl]
        info, what = replay_steps(benchmark, steps, n_new, "the prompt's prefill")
        goals.append({"impls": FASTEST, "metric": "per_s", "op": ">=",
                      "value": round(BOUND_SHARE * bound, 1)})  # fmt: skip
    else:
        mine = runs[impl]
        out = mine()
        if impl == "transformers-fp32":
            _TOKENS[size] = out
        assert len(out) == len(prompt) + n_new and out[: len(prompt)] == prompt
        new_text = tok.decode(out[len(prompt) :])
        info = dict(count=n_new, peak_mb=peak_torch_mb(mine), new_text=new_text,
                    same_tokens_as_baseline=out == _TOKENS.get(size))  # fmt: skip
        gc.collect()
        replay(benchmark, times[impl])
        what = f"time of generate(): the {len(prompt)}-token prompt's prefill, then {n_new} tokens"
    per_s = info["count"] / benchmark.stats.stats.median
    benchmark.extra_info.update(
        component="smollm2-decode-fp32", size=size or "full", impl=impl, phase=phase,
        mode="greedy, KV cache, batch 1, fp32", shape=_shape(cfg, prompt=len(prompt), new=n_new),
        baseline=impl == "transformers-fp32", unit="tokens", dtype="fp32", target=TARGET, **info,
        read_gb_s=round(gb_s, 2), weight_mb=round(weight_bytes / 2**20, 1),
        bound_tokens_per_s=round(bound, 1), percent_of_bound=round(100 * per_s / bound, 1),
        goals=goals,  # the same on every row of the group (the bound is this run's)
        note=f"{what}. Bound = read bandwidth {gb_s:.1f} GB/s (this run's 'read bandwidth' row) "
        f"/ {weight_bytes / 1e6:.0f} MB of fp32 weights per token = {bound:.1f} tokens/s; "
        "rows timed interleaved (each round runs every row once, the order rotating)",
        loadavg=os.getloadavg()[0],
    )  # fmt: skip
