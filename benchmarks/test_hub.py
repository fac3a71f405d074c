"""Real pretrained models on CPU: SmolLM2-135M-Instruct (from its shipped GGUF) and MiniLM
(all-MiniLM-L6-v2), ours against transformers / sentence-transformers in the same run.

    pytest benchmarks/test_hub.py -k "not smoke" --benchmark-only --benchmark-json=hub.json
    python -m benchmarks.ratio_report hub.json --name HUB --title "Pretrained models"
    pytest benchmarks/test_hub.py -k smoke --benchmark-only     # a handful of tokens (seconds)

Groups (``benchmarks/ratio_report.py`` conventions; the Hugging Face side is each group's
baseline):

- "smollm2 prefill": one forward pass over a 128-token prompt (no generation, no cache),
  ``transformers-fp32`` vs ``ours-fp32``, ``ours-fp32-fast`` (the same weights with q/k/v and
  gate/up fused, fast/fuse.py, and every Linear prepacked for oneDNN, fast/prepack.py: float32
  still, equal to float32 rounding) and ``ours-bf16`` (bf16 weights: ``model.to(bfloat16)``,
  not autocast); count = prompt tokens.
- "smollm2 decode": greedy generation of 64 new tokens after a short chat prompt, both with their
  KV cache (transformers' ``generate(do_sample=False, min_new_tokens=64)``, ours
  ``fast.generate.generate``); count = new tokens (the time includes the short prompt's prefill).
  Two more rows (full size only): ``ours-fp32-compiled`` and ``ours-bf16-compiled``, the fused
  model in fp32 / bf16 weights through ``generate(compile_step=True)`` (fast/compiled_decode.py;
  compiled and autotuned in the untimed warm-up, ~70 s each).
- "smollm2 decode steps": the same calls' 63 decode steps after the first new token alone, each
  call's time less its time to the first new token (benchmarks/first_token.py): the prompt's
  prefill is out, as in ``myllm101 eval``'s decode tokens/s and llama.cpp's eval rate.
- "smollm2 load": model + tokenizer from the GGUF (dequantized to float32 on both sides).
- "minilm embed": 256 sentences of 10-30 words from data/shakespeare/train.txt in corpus order
  (unsorted), batch 32, ``SentenceTransformer.encode`` on the same local directory vs our
  ``embed`` in fp32 (``ours-fp32``), with ``dtype="auto"`` (bf16 where native: ``ours-auto``),
  and fp32 batched in the given order as before length sorting (``ours-fp32-input-order``, one
  ``embed()`` call per 32 sentences); tokenization included on both sides.

transformers' model is built the way parity_tests/test_smollm2.py builds it: transformers' own
config, GGUF dequantization and q/k un-permutation, in float32. ``from_pretrained(gguf_file=...)``
does the same but needs ``accelerate`` (not installed); its GGUF default dtype is float16, which
is very slow on this CPU, hence float32 (as ``dtype=torch.float32`` would give).

The "smoke" ids run the same code on the real models with a handful of tokens (prompt 8, 4 new
tokens, 8 generated sentences) in their own "... smoke" groups (tests/test_hub_bench_smoke.py runs them);
the load group has none.
Every model is loaded once per module (fixtures), except in the load group. The rows of each
prefill, decode and embed group are timed in one interleaved loop (benchmarks/interleave.py):
each round runs every row once, the order rotating, so a drift of the machine's speed reaches
every row alike; each row's test then reports its own rounds.
"""

from __future__ import annotations

import copy
import functools
import gc
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.first_token import hf_generation, ours_generation, replay_steps
from benchmarks.interleave import Groups, replay
from benchmarks.memory import peak_torch_mb

ROOT = Path(__file__).resolve().parents[1]

PREFILL_TEXT = (
    "Transformers process a sequence of tokens in parallel: every position attends to all "
    "earlier positions through scaled dot-product attention, and a feed-forward network then "
    "transforms each position on its own. Large language models stack dozens of such blocks. "
    "During generation the keys and values of earlier tokens are kept in a cache, so that each "
    "new token costs one small forward pass instead of a pass over the whole sequence. On a CPU, "
    "this decoding step is limited by how fast the weights can be read from memory, while the "
    "processing of a long prompt is limited by the speed of matrix multiplication. Quantized "
    "formats such as GGUF store the weights in four or eight bits to save memory and bandwidth, "
    "and the loader turns them back into floating point numbers before use."
)
DECODE_CHAT = [  # a short chat prompt (24 tokens) that greedy decoding does not end within 64
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is a transformer language model?"},
]
SUBJECTS = ["A man", "The girl", "Two children", "A scientist", "My neighbour", "The old dog",
            "A team of engineers", "Someone"]  # fmt: skip
ACTIONS = ["is eating food", "is playing the violin", "reads a long book about history",
           "is riding a white horse on an enclosed ground", "writes code in Python",
           "walks through the rainy streets of the city", "repairs a bicycle",
           "explains retrieval-augmented generation to a friend"]  # fmt: skip
TAILS = ["", " while it rains", ", and everyone in the room seems happy about it",
         " because the weather is warm and sunny today, which rarely happens in November"]  # fmt: skip
SENTENCES = [
    f"{SUBJECTS[i % 8]} {ACTIONS[(3 * i + i // 8) % 8]}{TAILS[(i // 2) % 4]}." for i in range(64)
]

SIZES = {  # name -> (prefill prompt tokens, new tokens, sentences, rounds: prefill, decode, embed)
    "": (128, 64, 256, (9, 7, 7)),
    "smoke": (8, 4, 8, (2, 2, 2)),
}
SIZE_IDS = [pytest.param(s, id=s or "full") for s in SIZES]
SMOLLM2_IMPLS = ("transformers-fp32", "ours-fp32", "ours-fp32-fast", "ours-bf16")
COMPILED_IMPLS = ("ours-fp32-compiled", "ours-bf16-compiled")  # decode only, full size only
DECODE_PARAMS = [  # (size, impl): the compiled rows compile ~70 s each, too long for a smoke run
    pytest.param(size, impl, id=f"{size or 'full'}-{impl}")
    for size in SIZES
    for impl in SMOLLM2_IMPLS + (() if size else COMPILED_IMPLS)
]
PREFILL_TARGET = "target: ours >= 1.2x transformers' prefill tokens/s (fp32)"
DECODE_TARGET = (
    "target: cached decode ours-fp32 >= 2x transformers-fp32 (memory bandwidth, ~22 GB/s here, "
    "caps fp32 weights at ~43 tokens/s); ours-bf16 >= 65 tokens/s"
)


def _group(name: str, size: str) -> str:
    return f"{name} {size}" if size else name


def _gguf_path():
    pytest.importorskip("gguf")
    from myllm101.hub.smollm2 import gguf_path

    try:
        path = gguf_path()
    except ValueError as e:
        pytest.skip(str(e))
    if not path.is_file():
        pytest.skip(f"{path}: not found")
    return path


def load_ours(path):
    from myllm101.hub.smollm2 import load_gguf_llama

    return load_gguf_llama(path)  # (fast Llama fp32 in eval mode, our BPE tokenizer)


def load_transformers(path, tokenizer: bool = True):
    """(LlamaForCausalLM float32 in eval mode, tokenizer or None), as parity_tests builds it."""
    transformers = pytest.importorskip("transformers")
    from transformers.initialization import no_init_weights
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    kw = dict(gguf_file=path.name, local_files_only=True)
    tok = transformers.AutoTokenizer.from_pretrained(path.parent, **kw) if tokenizer else None
    config = transformers.AutoConfig.from_pretrained(path.parent, **kw)
    with no_init_weights():  # the weights come from the file
        model = transformers.LlamaForCausalLM(config).to(torch.float32)
    parsed = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)
    missing, unexpected = model.load_state_dict(parsed["tensors"], strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    return model.eval(), tok


@pytest.fixture(scope="module")
def smollm2():
    """impl -> model, plus our tokenizer under "tokenizer" (each model built once)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local files only: never download
    path = _gguf_path()
    ours, tok = load_ours(path)
    hf, _ = load_transformers(path, tokenizer=False)
    bf16 = copy.deepcopy(ours).to(torch.bfloat16)  # its own copy: the fp32 model stays fp32
    assert bf16.lm_head.weight is bf16.embed_tokens.weight  # still tied
    from myllm101.fast.fuse import fuse_for_inference
    from myllm101.fast.prepack import prepack_for_inference

    fast = prepack_for_inference(fuse_for_inference(copy.deepcopy(ours)))
    fused = fuse_for_inference(copy.deepcopy(ours))  # the compiled rows' (compiling packs it)
    fused_bf16 = fuse_for_inference(copy.deepcopy(bf16))
    return {"ours-fp32": ours, "ours-fp32-fast": fast, "ours-bf16": bf16,
            "ours-fp32-compiled": fused, "ours-bf16-compiled": fused_bf16,
            "transformers-fp32": hf, "tokenizer": tok}  # fmt: skip


def _shape(cfg, **lengths) -> str:
    return " ".join(f"{k}={v}" for k, v in lengths.items()) + (
        f" L={cfg.n_layer} C={cfg.n_embd} H={cfg.n_head}/{cfg.n_kv_head} V={cfg.vocab_size}"
    )


def _peak_mb(run) -> float:
    """peak_torch_mb, then a full collection: the profiler's garbage would otherwise be collected
    in the middle of a timed round (seconds)."""
    peak = peak_torch_mb(run)
    gc.collect()
    return peak


GROUPS = Groups()  # (group, size) -> its rows' calls, timed interleaved


def _prefill_ids(tok, n: int) -> list[int]:
    ids = tok.encode(PREFILL_TEXT)
    while len(ids) < n:
        ids = ids + ids
    return ids[:n]


def _prefill_run(model, impl: str, ids: torch.Tensor):
    """() -> the logits of one forward pass over ids (1, n), no cache, inference mode."""

    def run():
        with torch.inference_mode():
            if impl.startswith("transformers"):
                return model(input_ids=ids, use_cache=False).logits
            return model(ids).logits

    return run


@pytest.mark.parametrize("impl", SMOLLM2_IMPLS)
@pytest.mark.parametrize("size", SIZE_IDS)
def test_smollm2_prefill(benchmark, smollm2, size, impl):
    n_prompt, _, _, (rounds, _, _) = SIZES[size]
    ours_cfg = smollm2["ours-fp32"].cfg
    ids = torch.tensor([_prefill_ids(smollm2["tokenizer"], n_prompt)])
    runs, times = GROUPS.timed(
        ("prefill", size),
        lambda: {name: _prefill_run(smollm2[name], name, ids) for name in SMOLLM2_IMPLS},
        rounds,
    )
    run = runs[impl]
    logits = run()
    peak = _peak_mb(run)
    benchmark.group = _group("smollm2 prefill", size)
    replay(benchmark, times[impl])
    assert logits.shape == (1, n_prompt, ours_cfg.vocab_size)
    benchmark.extra_info.update(
        component="smollm2-prefill", size=size or "full", impl=impl,
        mode="forward over the prompt, batch 1, all logits, no cache",
        shape=_shape(ours_cfg, prompt=n_prompt), baseline=impl == "transformers-fp32",
        count=n_prompt, unit="tokens", peak_mb=peak, target=PREFILL_TARGET,
        dtype="bf16" if impl.endswith("bf16") else "fp32",
        note="SmolLM2-135M-Instruct, weights dequantized from Q4_1 GGUF; transformers in float32 "
        "(sdpa attention); ours-bf16 = bf16 weights (model.to), not autocast; rows timed "
        "interleaved (each round runs every row once, the order rotating)",
        loadavg=os.getloadavg()[0],
    )  # fmt: skip


# size -> transformers' tokens (a check, recorded in extra_info)
_DECODED: dict[str, list[int]] = {}


def _decode_run(model, impl: str, prompt: list[int], n_new: int):
    """() -> prompt + ``n_new`` greedy tokens (no stop tokens: always ``n_new``), the first new
    token timed (benchmarks/first_token.py)."""
    if impl.startswith("transformers"):
        return hf_generation(model, prompt, n_new)
    return ours_generation(model, prompt, n_new, compile_step=impl.endswith("-compiled"))


@pytest.mark.parametrize("phase", ("generate", "steps"))
@pytest.mark.parametrize(("size", "impl"), DECODE_PARAMS)
def test_smollm2_decode(benchmark, smollm2, size, impl, phase):
    from myllm101.hub.smollm2 import chat_prompt

    _, n_new, _, (_, rounds, _) = SIZES[size]
    tok, cfg = smollm2["tokenizer"], smollm2["ours-fp32"].cfg
    prompt = tok.encode(chat_prompt(DECODE_CHAT))
    impls = [i for s, i in (p.values for p in DECODE_PARAMS) if s == size]
    runs, times = GROUPS.timed(
        ("decode", size), lambda: {i: _decode_run(smollm2[i], i, prompt, n_new) for i in impls},
        rounds,
    )  # fmt: skip
    if phase == "steps":  # the calls' decode steps after the first new token (no prefill)
        benchmark.group = _group("smollm2 decode steps", size)
        steps = GROUPS.after_first[("decode", size)][impl]
        info, what = replay_steps(benchmark, steps, n_new, "the prompt's prefill")
    else:
        run = runs[impl]
        out = run()
        peak = _peak_mb(run)
        benchmark.group = _group("smollm2 decode", size)
        replay(benchmark, times[impl])
        assert len(out) == len(prompt) + n_new and out[: len(prompt)] == prompt
        if impl == "transformers-fp32":
            _DECODED[size] = out
        info = dict(count=n_new, peak_mb=peak, new_text=tok.decode(out[len(prompt) :]),
                    same_tokens_as_baseline=out == _DECODED.get(size))  # fmt: skip
        what = f"time of generate(): the {len(prompt)}-token prompt's prefill, then {n_new} tokens"
    benchmark.extra_info.update(
        component="smollm2-decode", size=size or "full", impl=impl, phase=phase,
        mode="greedy, KV cache, batch 1", shape=_shape(cfg, prompt=len(prompt), new=n_new),
        baseline=impl == "transformers-fp32", unit="tokens", target=DECODE_TARGET, **info,
        dtype="bf16" if "bf16" in impl else "fp32",
        note=f"{what}; transformers: model.generate(do_sample=False, min_new_tokens=max_new_tokens), "
        "its streamer timing the first new token; ours: fast.generate.generate, its Timings too; "
        "rows timed interleaved",
        loadavg=os.getloadavg()[0],
    )  # fmt: skip


# ---- MiniLM sentence embeddings ----------------------------------------------------------------

TRAIN_TXT = ROOT / "data/shakespeare/train.txt"
EMBED_TARGET = (
    "target: ours >= 1.1x sentence-transformers' sentences/s on unsorted input (batch 32)"
)
EMBED_GOALS = [dict(impls=["ours-fp32", "ours-auto"], metric="ratio", op=">=", value=1.1)]
EMBED_IMPLS = ("sentence-transformers", "ours-fp32", "ours-auto", "ours-fp32-input-order")


@functools.cache
def shakespeare_sentences(n: int, lo: int = 10, hi: int = 30) -> list[str]:
    """``n`` sentences of ``lo``..``hi`` words from train.txt, in corpus order (unsorted): the text
    is cut after ". ", "! ", "? " and at blank lines, whitespace collapsed, and ``n`` of the
    sentences of the right length are taken at evenly spaced indices (the same ones every run)."""
    if not TRAIN_TXT.exists():
        pytest.skip("data/shakespeare/train.txt missing: run `make data`")
    pieces = re.split(r"(?<=[.!?])\s+|\n\s*\n", TRAIN_TXT.read_text(encoding="utf-8"))
    fits = [" ".join(w) for w in (p.split() for p in pieces) if lo <= len(w) <= hi]
    assert len(fits) >= n, (len(fits), n)
    return [fits[i * len(fits) // n] for i in range(n)]


def embed_sentences(size: str, n: int) -> list[str]:
    """full: ``n`` Shakespeare sentences of 10-30 words; smoke: the first ``n`` generated ones."""
    return shakespeare_sentences(n) if size == "" else SENTENCES[:n]


@pytest.fixture(scope="module")
def minilm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local directory only: never download
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    st = pytest.importorskip("sentence_transformers")
    from myllm101.hub.embed import load_embedder, model_dir

    try:
        directory = model_dir("minilm")
    except ValueError as e:
        pytest.skip(str(e))
    load_embedder("minilm", "fast")  # cached: embed() uses this one
    return st.SentenceTransformer(str(directory), device="cpu")


def _token_counts(sentences: list[str], batch: int) -> tuple[int, int, int]:
    """(real tokens, tokens after padding in input-order batches, after length-sorted ones)."""
    from myllm101.hub.embed import length_sorted_batches, load_embedder

    _, tok, max_len = load_embedder("minilm", "fast")
    n = [len(tok.encode(s, max_length=max_len, truncation=True)["input_ids"]) for s in sentences]
    in_order = sum(max(n[i : i + batch]) * len(n[i : i + batch]) for i in range(0, len(n), batch))
    by_length = sum(max(n[i] for i in b) * len(b) for b in length_sorted_batches(n, batch))
    return sum(n), in_order, by_length


def _embed_run(minilm, impl: str, sentences: list[str], batch: int):
    """() -> the (n, 384) normalized embeddings of ``sentences``, one row's way."""
    from myllm101.hub.embed import embed

    if impl == "sentence-transformers":
        return lambda: minilm.encode(
            sentences, batch_size=batch, convert_to_numpy=True, normalize_embeddings=True
        )
    if impl == "ours-fp32-input-order":  # before length sorting: one embed() call per batch
        return lambda: np.concatenate([
            embed(sentences[i : i + batch], batch_size=batch, dtype="fp32")
            for i in range(0, len(sentences), batch)
        ])  # fmt: skip
    dtype = "auto" if impl == "ours-auto" else "fp32"
    return lambda: embed(sentences, model="minilm", impl="fast", batch_size=batch, dtype=dtype)


@pytest.mark.parametrize("impl", EMBED_IMPLS)
@pytest.mark.parametrize("size", SIZE_IDS)
def test_minilm_embed(benchmark, minilm, size, impl):
    from myllm101.device import choose_inference_dtype

    _, _, n, (_, _, rounds) = SIZES[size]
    sentences, batch = embed_sentences(size, n), 32
    runs, times = GROUPS.timed(
        ("embed", size), lambda: {i: _embed_run(minilm, i, sentences, batch) for i in EMBED_IMPLS},
        rounds,
    )  # fmt: skip
    run = runs[impl]
    vectors = run()
    expected = minilm.encode(sentences, batch_size=batch, normalize_embeddings=True)
    chosen = choose_inference_dtype("auto" if impl == "ours-auto" else "fp32")
    # the same embeddings: fp32 to 1e-4 in cosine; bf16 to 1e-3 (tests/test_embed_batching.py)
    assert np.sum(vectors * expected, axis=1).min() > (0.999 if chosen.value == "bf16" else 0.9999)
    peak = _peak_mb(run)
    benchmark.group = _group("minilm embed", size)
    replay(benchmark, times[impl])
    words = [len(s.split()) for s in sentences]
    real, in_order, by_length = _token_counts(sentences, batch)
    padded = in_order if impl == "ours-fp32-input-order" else by_length
    if impl == "sentence-transformers":
        padded = None  # its own batching: sorted by characters, not tokens
    how = {
        "sentence-transformers": "SentenceTransformer.encode (sorts by characters itself)",
        "ours-fp32": "embed(dtype='fp32'): batches sorted by token count",
        "ours-auto": f"embed(dtype='auto') -> {chosen.value}",
        "ours-fp32-input-order": "fp32, batches in the given order (embed() per 32 sentences)",
    }[impl]
    benchmark.extra_info.update(
        component="minilm-embed", size=size or "full", impl=impl,
        mode=how,
        shape=f"sentences={len(sentences)} words={min(words)}..{max(words)} tokens={real} "
        f"batch={batch} L=6 C=384",
        padded_tokens=padded, baseline=impl == "sentence-transformers", count=len(sentences),
        unit="sentences", peak_mb=peak, dtype=chosen.value, target=EMBED_TARGET, goals=EMBED_GOALS,
        note="all-MiniLM-L6-v2 from the same local directory: tokenize + encode + mean pool + "
        f"normalize, batch {batch}; unsorted input "
        f"({'generated sentences' if size else 'train.txt order'}); tokens after padding: "
        f"{in_order} in input-order batches, {by_length} length-sorted, {real} real; dtype auto "
        f"here: {choose_inference_dtype('auto').reason} (peak MB counts torch tensors only); "
        "rows timed interleaved",
        loadavg=os.getloadavg()[0],
    )  # fmt: skip


# ---- load time (last: the fixtures above already paid the imports) -------------------------------
# No smoke rows: a load is the same work at any size (~5 s ours, ~15 s transformers), and the
# fixtures above already run both loaders.


@pytest.mark.parametrize("impl", ["transformers-fp32", "ours-fp32"])
def test_smollm2_load(benchmark, impl):
    path = _gguf_path()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    loader = load_transformers if impl.startswith("transformers") else load_ours
    benchmark.group = "smollm2 load"
    model, tok = benchmark.pedantic(loader, args=(path,), rounds=2, iterations=1, warmup_rounds=1)
    assert tok is not None and sum(p.numel() for p in model.parameters()) > 100e6
    benchmark.extra_info.update(
        component="smollm2-load", size="full", impl=impl,
        mode="model + tokenizer from the GGUF, dequantized to float32",
        shape=f"{path.name} ({path.stat().st_size / 2**20:.0f} MB)",
        baseline=impl == "transformers-fp32", peak_mb=None,
        note="transformers: AutoTokenizer + AutoConfig + LlamaForCausalLM + load_gguf_checkpoint "
        "(what from_pretrained(gguf_file=...) does; it needs accelerate, not installed here)",
        loadavg=os.getloadavg()[0],
    )  # fmt: skip
