"""Tokenizer speed: encoding throughput, BPE training time, pathological inputs; ours vs oracles.

    pytest benchmarks/test_tokenizer.py --benchmark-only --benchmark-json=tok.json
    python -m benchmarks.tokenizer_report tok.json      # -> benchmarks/results/TOKENIZER.md + PNG

Every case exists in a tiny "smoke" size (ids contain "smoke": ``-k smoke`` runs only those, as
tests/test_tokenizer_cli.py does) and a "full" size on the ~10 MB corpus ``data/shakespeare/bench.txt``
(``make data``; full cases skip without it). Single thread everywhere but in two training rows:
HF tokenizers' parallelism is off (``TOKENIZERS_PARALLELISM=false``, read at every call) and
tiktoken's ``encode_ordinary`` and ours are single-threaded; "hf-2t" turns HF's on for its call
(a 2-thread pool, fed 2 KB chunks: its best 2-thread setting) against "fast-2w", our trainer
counting words in 2 processes. Each benchmark records what the report needs in ``extra_info``
(bench, impl, bytes, ...); the rows issue 14's targets are about carry the target text, its goals
and the implementation it compares with (``vs``), and the report marks them met or missed.

The reference trainer (a full pass over every word per merge) would need hours for 4k-32k merges
on these corpora, so it runs a fixed 32 merges and records the time per merge; the report
extrapolates from that, marked as an estimate.
"""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # before tokenizers is imported
os.environ.setdefault("RAYON_NUM_THREADS", "2")  # the pool only the "hf-2t" rows turn on

import json  # noqa: E402
import random  # noqa: E402
from functools import cache  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from myllm101.bpe_patterns import GPT2_SPLIT_PATTERN  # noqa: E402
from myllm101.fast.bpe import bpe_train as fast_train  # noqa: E402
from myllm101.fast.bpe_merge import PairRanks  # noqa: E402
from myllm101.reference.bpe import bpe_train as reference_train  # noqa: E402
from myllm101.tokenizer import formats, hf_format  # noqa: E402
from myllm101.tokenizer.pretrained import load_pretrained  # noqa: E402

tiktoken = pytest.importorskip("tiktoken")
hf = pytest.importorskip("tokenizers")

ROOT = Path(__file__).resolve().parents[1]
BENCH_TXT = ROOT / "data/shakespeare/bench.txt"
IMPLS = ("fast", "fast-cold", "reference", "tiktoken", "hf")
REFERENCE_SLICE = 1_000_000  # the reference encoder runs on the first 1 MB only
REFERENCE_MERGES = 32  # merges the reference trainer runs; the report extrapolates per merge
WORDS = "the of and to a in that is my with you not his be your for have he as it me".split()
HF_CHUNK = 2000  # characters per text HF's 2-thread trainer is fed (its parallelism is per text)


def goal(impl: str, value: float) -> dict:
    """A goal as benchmarks/ratio_report.py reads it: ratio (vs time / row time) >= value."""
    return {"impls": [impl], "metric": "ratio", "op": ">=", "value": value}


# issue 14's targets, on the full corpus; each is checked by the report from the rows' numbers
TARGETS = {
    "encode": (
        "target: encode >= 0.8x tiktoken warm, >= 0.6x cold (GPT-2, full corpus, 1 thread)",
        "tiktoken",
        [goal("fast", 0.8), goal("fast-cold", 0.6)],
    ),
    "pathological": (
        "target: one character 1M times (one piece) within 3x of tiktoken's time (>= 0.33x)",
        "tiktoken",
        [goal("fast", 1 / 3), goal("fast-cold", 1 / 3)],
    ),
    "train": (
        "target: training >= 1.0x HF tokenizers' best 2-thread time (vocab 32k, full corpus)",
        "hf-2t",
        [goal("fast-2w", 1.0)],
    ),
}


def add_target(benchmark, bench: str, impl: str) -> None:
    text, vs, goals = TARGETS[bench]
    if impl != vs and any(impl in g["impls"] for g in goals):
        benchmark.extra_info.update(target=text, vs=vs, goals=goals)


@cache
def corpus(size: str) -> str:
    """'smoke': 20 kB (corpus or generated); '1MB' / 'full' (~10 MB): from bench.txt."""
    if size == "smoke":
        if BENCH_TXT.exists():
            return BENCH_TXT.read_text()[:20_000]
        rng = random.Random(0)
        return " ".join(rng.choice(WORDS) for _ in range(4000))[:20_000]
    if not BENCH_TXT.exists():
        pytest.skip("data/shakespeare/bench.txt missing: run `make data`")
    text = BENCH_TXT.read_text()
    return text[:1_000_000] if size == "1MB" else text


@cache
def gpt2_encoder(impl: str):
    """A callable text -> ids for GPT-2's vocabulary in each implementation."""
    ours = load_pretrained("gpt2", "reference" if impl == "reference" else "fast")
    if impl in ("fast", "reference"):
        return ours.encode_ordinary
    if impl == "fast-cold":  # every call starts with an empty piece cache: a first-time encode

        def encode_cold(text):
            ours._cache.clear()
            ours._pair_ranks = PairRanks(ours.mergeable_ranks)  # and no pair ranks looked up yet
            return ours.encode_ordinary(text)

        return encode_cold
    if impl == "tiktoken":  # built from our loaded ranks: no download, same vocabulary
        enc = tiktoken.Encoding(
            name="gpt2-bench",
            pat_str=ours.pattern,
            mergeable_ranks=formats.to_tiktoken_ranks(ours),
            special_tokens=ours.special_tokens,
        )
        return enc.encode_ordinary
    tok = hf.Tokenizer.from_str(json.dumps(hf_format.to_hf_tokenizer_json(ours)))
    return lambda text: tok.encode(text).ids


def run_once(benchmark, fn, rounds: int):
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)


# ---- encode throughput --------------------------------------------------------------------------

ENCODE = [
    pytest.param(size, impl, id=f"encode-{size}-{impl}")
    for size in ("smoke", "full")
    for impl in IMPLS
]


@pytest.mark.parametrize("size,impl", ENCODE)
def test_encode(benchmark, size, impl):
    text = corpus(size)
    if impl == "reference":
        text = text[:REFERENCE_SLICE]
    encode = gpt2_encoder(impl)
    ids = encode(text)  # warm-up, and a correctness check against tiktoken
    assert ids == gpt2_encoder("tiktoken")(text)
    benchmark.group = f"encode gpt2 {size}"
    benchmark.extra_info.update(
        bench="encode", impl=impl, size=size, bytes=len(text.encode()), tokens=len(ids)
    )
    if size == "full":
        add_target(benchmark, "encode", impl)
    run_once(benchmark, lambda: encode(text), rounds=3 if size == "full" else 5)


# ---- training -----------------------------------------------------------------------------------


def hf_train(text: str, vocab_size: int, threads: int = 1):
    """HF's BPE trainer on ``text``, its parallelism on for this call only with 2 threads, when
    the text goes in HF_CHUNK pieces (it parallelizes over texts: one big text stays serial)."""
    texts = [text]
    if threads > 1:
        texts = [text[i : i + HF_CHUNK] for i in range(0, len(text), HF_CHUNK)]
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"
    try:
        return _hf_train(texts, vocab_size)
    finally:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _hf_train(texts: list[str], vocab_size: int):
    tok = hf.Tokenizer(hf.models.BPE())
    tok.pre_tokenizer = hf.pre_tokenizers.Sequence(
        [
            hf.pre_tokenizers.Split(
                hf.Regex(hf_format.hf_pattern(GPT2_SPLIT_PATTERN)), behavior="isolated"
            ),
            hf.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = hf.trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok.get_vocab_size()


TRAIN = [
    pytest.param("smoke", 300, impl, id=f"train-smoke-300-{impl}")
    for impl in ("fast", "reference", "hf")
]
TRAIN += [
    pytest.param(size, vocab, impl, id=f"train-{size}-{vocab}-{impl}")
    for size in ("1MB", "full")
    for vocab in (4096, 16384, 32768)
    for impl in ("fast", "hf")
]
TRAIN += [
    pytest.param(size, 0, "reference", id=f"train-{size}-merges-reference")
    for size in ("1MB", "full")
]
TRAIN += [  # both cores: ours counting words in 2 processes, HF with 2 threads
    pytest.param(size, vocab, impl, id=f"train-{size}-{vocab}-{impl}")
    for size, vocab in (("smoke", 300), ("full", 32768))
    for impl in ("fast-2w", "hf-2t")
]


@pytest.mark.parametrize("size,vocab,impl", TRAIN)
def test_train(benchmark, size, vocab, impl):
    text = corpus(size)
    if impl == "reference":
        vocab = 256 + (REFERENCE_MERGES if size != "smoke" else vocab - 256)
    train = {
        "fast": lambda: len(
            fast_train(text, vocab, pattern=GPT2_SPLIT_PATTERN, workers=1).mergeable_ranks
        ),
        "fast-2w": lambda: len(
            fast_train(text, vocab, pattern=GPT2_SPLIT_PATTERN, workers=2).mergeable_ranks
        ),
        "reference": lambda: len(
            reference_train(text, vocab, pattern=GPT2_SPLIT_PATTERN).mergeable_ranks
        ),
        "hf": lambda: hf_train(text, vocab),
        "hf-2t": lambda: hf_train(text, vocab, threads=2),
    }[impl]
    benchmark.group = f"train {size}"
    target = size == "full" and vocab == 32768
    # the rows a target compares run 3 times (median): one round swings +-15% on this VM
    reached = run_once(benchmark, train, rounds=3 if target and "-" in impl else 1)
    benchmark.extra_info.update(
        bench="train", impl=impl, size=size, bytes=len(text.encode()), vocab=vocab,
        reached=reached, merges=reached - 256,
    )  # fmt: skip
    if target:
        add_target(benchmark, "train", impl)


# ---- pathological inputs ------------------------------------------------------------------------


def pathological_text(kind: str, n: int) -> str:
    """'repeat': one character n times (a single huge pre-token); 'random': n random bytes read
    as Latin-1 (many short odd pieces)."""
    if kind == "repeat":
        return "a" * n
    return random.Random(n).randbytes(n).decode("latin-1")


# the reference encoder is cubic on one long piece: 10 kB of one character already takes ~10 s
LIMITS = {"reference": {"repeat": 3_000, "random": 100_000}}
PATHO = [
    pytest.param(kind, n, impl, id=f"patho-{kind}-{n}-{impl}" + ("-smoke" if n == 1000 else ""))
    for kind in ("repeat", "random")
    for n in (1_000, 3_000, 10_000, 100_000, 1_000_000)
    for impl in IMPLS
    if n <= LIMITS.get(impl, {}).get(kind, 10**9)
]


@pytest.mark.parametrize("kind,n,impl", PATHO)
def test_pathological(benchmark, kind, n, impl):
    text = pathological_text(kind, n)
    encode = gpt2_encoder(impl)
    benchmark.group = f"pathological {kind}"
    ids = run_once(benchmark, lambda: encode(text), rounds=3 if n <= 10_000 else 1)
    assert ids == gpt2_encoder("tiktoken")(text)
    benchmark.extra_info.update(bench="pathological", impl=impl, kind=kind, chars=n,
                                bytes=len(text.encode()), tokens=len(ids))  # fmt: skip
    if kind == "repeat" and n == 1_000_000:
        add_target(benchmark, "pathological", impl)
