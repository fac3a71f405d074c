"""What quantization costs and buys: perplexity, agreement with the float model, speed, size, memory.

    ev = evaluate("q8")              # a model directory, or "smollm2" / "minilm"
    print(format_table([ev]))        # one row per model; ev is plain JSON (eval.json)

Perplexity over a token stream of N ids, strided windows (``window_spans``): windows of ``window``
tokens start every ``stride`` tokens; the first window scores all its targets, every later one only
the targets past the previous window's end, so each of the N - 1 targets (token 0 has no context)
is scored exactly once, with at least ``window - stride`` tokens of context (except the first
ones). ppl = exp(sum of -log p(target) / (N - 1)). ``perplexity`` also keeps the argmax at every
scored position: the float and the quantized model's argmaxes give the teacher-forced top-1
agreement.

Greedy agreement: P prompts cut from the held-out text, each continued by ``n_new`` greedy tokens
by both models (KV cache); agreement = the mean length of the common prefix / n_new (1.0 = the
same text), and ``same`` = the fraction of prompts whose continuations are identical.

Speed (batch 1, median of ``rounds``, on ``fast.fuse.fused_copy`` of the model: q/k/v and gate/up
fused where the modules allow, as a model runs fastest): prefill = one forward over a
``prefill_tokens`` prompt;
decode = (n - 1) / (time(generate n) - time(generate 1)) after a 16-token prompt, so the
prompt's prefill cancels out. Peak memory: the bytes of the model's tensors plus the most a decode
call allocates on top (torch profiler's per-op memory records, as benchmarks/memory.py measures).

MiniLM (BERT, no next-token head): cosine between the quantized and the float model's sentence
vectors, and retrieval agreement: for each query sentence, whether both models rank the same
document first, and the overlap of their top-5 documents.
"""

from __future__ import annotations

import gc
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from myllm101.fast.fuse import fused_copy
from myllm101.quant.heldout import heldout_texts, sha256_text, text_ids

SHIPPED = ("smollm2", "minilm")


# ---- loading any model -------------------------------------------------------------------------


@dataclass
class Loaded:
    model: nn.Module
    tokenizer: object
    cfg: object
    name: str  # "smollm2", "minilm" or the directory
    directory: Path | None = None  # a model directory (its files are the size on disk)
    base: str | None = None  # the float model a quantized or pruned one came from
    extra_files: list[Path] = field(default_factory=list)  # copied with a quantized save

    @property
    def quantization(self) -> dict | None:
        return getattr(self.model, "quantization", None)


def load_any(spec: str) -> Loaded:
    """ "smollm2" | "minilm" | a model or run directory -> Loaded (float32, eval mode; a fresh
    copy each call, never a cached one: ``quantize`` changes models in place)."""
    if spec == "smollm2":
        from myllm101.hub.smollm2 import gguf_path, load_gguf_llama

        model, tok = load_gguf_llama(gguf_path())
        return Loaded(model.eval(), tok, model.cfg, spec)
    if spec == "minilm":
        from myllm101.fast.bert import Bert
        from myllm101.fast.wordpiece import WordPieceTokenizer
        from myllm101.hub.convert import load_hf_checkpoint
        from myllm101.hub.embed import model_dir

        directory = model_dir("minilm")
        cfg, sd = load_hf_checkpoint(directory)
        model = Bert(cfg).eval()
        model.load_state_dict(sd)
        vocab = directory / "vocab.txt"
        return Loaded(model, WordPieceTokenizer.from_file(vocab), cfg, spec, None, None, [vocab])
    from myllm101.train.checkpoint import load_model, resolve_model_dir

    directory = resolve_model_dir(spec)
    model, tok, cfg = load_model(directory)
    vocab = directory / "vocab.txt"
    if cfg.model_type == "bert" and vocab.is_file():
        from myllm101.fast.wordpiece import WordPieceTokenizer

        tok = WordPieceTokenizer.from_file(vocab)
    q = getattr(model, "quantization", None)
    extra = [vocab] if vocab.is_file() else []
    loaded = Loaded(model, tok, cfg, str(spec), directory, None, extra)
    pruned = pruning_of(loaded)
    loaded.base = q["base"] if q else pruned["base"] if pruned else None
    return loaded


def load_for_output(spec: str, out: Path, overwrite: bool) -> Loaded:
    """``load_any(spec)`` for a command that writes a new model directory ``out`` (quantize,
    prune): refuses an existing ``out`` without ``overwrite`` (before loading) and the input's
    own directory."""
    if out.exists() and not overwrite:
        raise ValueError(f"--out {out}: already exists; pass --overwrite to replace it")
    m = load_any(spec)
    if m.directory is not None and out.resolve() == m.directory.resolve():
        raise ValueError(f"--out {out}: is the input model's directory; expected another one")
    return m


def pruning_of(m: Loaded) -> dict | None:
    """The "pruning" entry of a pruned model directory's config.json (prune/cli.py), or None."""
    if m.directory is None:
        return None
    entry = json.loads((m.directory / "config.json").read_text()).get("pruning")
    return entry if isinstance(entry, dict) else None


# ---- perplexity --------------------------------------------------------------------------------


def window_spans(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """[(begin, end, first scored target)]: window ids[begin:end] scores targets [first, end).
    10 tokens, window 4, stride 2 -> [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]. stride < window:
    a window's first token is only context, so windows must overlap for every target to count."""
    if not 1 <= stride < window:  # overlap >= 1: a window's first target needs a token before it
        raise ValueError(f"stride: expected 1 <= stride < window={window}, got {stride}")
    if n_tokens < 2:
        raise ValueError(f"ids: expected at least 2 tokens to score, got {n_tokens}")
    spans, begin, prev_end = [], 0, 0
    while True:
        end = min(begin + window, n_tokens)
        spans.append((begin, end, max(prev_end, begin + 1)))
        if end == n_tokens:
            return spans
        prev_end, begin = end, begin + stride


@dataclass
class Perplexity:
    ppl: float
    nll: float  # mean -log p over the scored targets (nats)
    tokens: int  # scored targets (N - 1)
    windows: int
    argmax: list[int]  # the model's top-1 prediction at every scored target


@torch.inference_mode()
def perplexity(
    model: nn.Module, ids, window: int = 512, stride: int = 256, progress: bool = False
) -> Perplexity:
    """Strided-window perplexity of ``model`` (logits = model(ids).logits) over ``ids``."""
    from tqdm import tqdm

    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    spans = window_spans(len(ids), window, stride)
    total, count, argmax = 0.0, 0, []
    for begin, end, first in tqdm(spans, desc="perplexity", unit="window", disable=not progress):
        logits = model(ids[None, begin:end]).logits[0]  # (end - begin, V)
        pred = logits[first - begin - 1 : end - begin - 1].float()  # predicts targets first..end-1
        total += float(F.cross_entropy(pred, ids[first:end], reduction="sum"))
        count += end - first
        argmax += pred.argmax(-1).tolist()
    nll = total / count
    return Perplexity(math.exp(nll), nll, count, len(spans), argmax)


def top1_agreement(a: Perplexity, b: Perplexity) -> float:
    """Fraction of scored positions where both models predict the same next token."""
    if len(a.argmax) != len(b.argmax):
        raise ValueError(f"argmax: expected equal lengths, got {len(a.argmax)} and {len(b.argmax)}")
    return sum(x == y for x, y in zip(a.argmax, b.argmax)) / max(len(a.argmax), 1)


# ---- generation: agreement and speed -----------------------------------------------------------


def prompts_from(ids: list[int], n_prompts: int, length: int) -> list[list[int]]:
    """``n_prompts`` prompts of ``length`` ids at evenly spaced offsets of ``ids``."""
    if len(ids) < length + n_prompts:
        raise ValueError(f"ids: expected more than {length + n_prompts} tokens, got {len(ids)}")
    step = (len(ids) - length) // n_prompts
    return [ids[i * step : i * step + length] for i in range(n_prompts)]


@torch.inference_mode()
def greedy_agreement(model: nn.Module, base: nn.Module, prompts, n_new: int) -> dict:
    """Greedy continuations of ``model`` vs ``base`` (see the module docstring)."""
    from myllm101.fast.generate import generate

    prefix, same = [], 0
    for p in prompts:
        a = generate(model, p, n_new, temperature=0)[len(p) :]
        b = generate(base, p, n_new, temperature=0)[len(p) :]
        k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        prefix.append(k / n_new)
        same += a == b
    return {"agreement": statistics.fmean(prefix), "same": same / len(prompts),
            "prompts": len(prompts), "new_tokens": n_new}  # fmt: skip


def _median_time(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.inference_mode()
def speed(model: nn.Module, ids: list[int], prefill_tokens: int = 128, decode_tokens: int = 32,
          rounds: int = 3) -> dict:  # fmt: skip
    """Prefill and decode tokens/s at batch 1 (see the module docstring)."""
    from myllm101.fast.generate import generate

    if decode_tokens < 2:
        raise ValueError(f"decode_tokens: expected >= 2, got {decode_tokens}")
    prompt = torch.tensor([ids[:prefill_tokens]])
    short = ids[:16]
    model(prompt)  # warm-up
    generate(model, short, 2, temperature=0)
    t_prefill = _median_time(lambda: model(prompt), rounds)
    t_n = _median_time(lambda: generate(model, short, decode_tokens, temperature=0), rounds)
    t_1 = _median_time(lambda: generate(model, short, 1, temperature=0), rounds)
    return {
        "prefill_tokens_per_s": prompt.shape[1] / t_prefill,
        "decode_tokens_per_s": (decode_tokens - 1) / max(t_n - t_1, 1e-9),
        "prefill_tokens": prompt.shape[1],
        "decode_tokens": decode_tokens,
        "rounds": rounds,
    }


def peak_extra_mb(fn) -> float:
    """The most torch allocates on CPU during ``fn()`` above what was allocated before (MB)."""
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    running = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        running += e.self_cpu_memory_usage
        peak = max(peak, running)
    gc.collect()
    return peak / 2**20


def tensor_mb(model: nn.Module) -> float:
    """MB of the model's parameters and buffers, each shared tensor once."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total / 2**20


# ---- sentence embeddings (MiniLM) --------------------------------------------------------------


@torch.inference_mode()
def embed_with(model: nn.Module, tokenizer, texts: list[str], max_len: int = 256,
               batch_size: int = 32):  # fmt: skip
    """Unit-length mean-pooled vectors of ``texts`` (hub/embed.py's recipe, any BERT): (N, C)."""
    from myllm101.hub.embed import length_sorted_batches, mean_pool_normalize
    from myllm101.reference.data import pad_to_longest

    toks = [tokenizer.encode(t, max_length=max_len, truncation=True)["input_ids"] for t in texts]
    out = torch.zeros(len(texts), model.cfg.n_embd)
    for batch in length_sorted_batches([len(t) for t in toks], batch_size):
        ids, mask = pad_to_longest([toks[i] for i in batch], tokenizer.pad_id)
        h = model.encode(torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy()
        out[batch] = torch.from_numpy(mean_pool_normalize(h, mask))
    return out


def sentences_from(text: str, n: int, lo: int = 8, hi: int = 40) -> list[str]:
    """``n`` sentences of ``lo``..``hi`` words of ``text`` at evenly spaced indices."""
    import re

    pieces = re.split(r"(?<=[.!?])\s+|\n\s*\n", text)
    fits = [" ".join(w) for w in (p.split() for p in pieces) if lo <= len(w) <= hi]
    if len(fits) < n:
        raise ValueError(
            f"text: expected at least {n} sentences of {lo}-{hi} words, got {len(fits)}"
        )
    return [fits[i * len(fits) // n] for i in range(n)]


def embedding_agreement(q: torch.Tensor, f: torch.Tensor, n_queries: int, k: int = 5) -> dict:
    """Cosine of each row of ``q`` to the same row of ``f`` (unit vectors), and retrieval agreement:
    the first ``n_queries`` rows query the rest (documents) under each model's vectors."""
    cos = (q * f).sum(-1)
    rank_q = (q[:n_queries] @ q[n_queries:].T).topk(k, dim=-1).indices  # (Q, k)
    rank_f = (f[:n_queries] @ f[n_queries:].T).topk(k, dim=-1).indices
    top1 = (rank_q[:, 0] == rank_f[:, 0]).float().mean()
    overlap = statistics.fmean(
        len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(rank_q, rank_f)
    )
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "retrieval_top1_agreement": float(top1), f"retrieval_top{k}_overlap": overlap,
            "queries": n_queries, "documents": len(q) - n_queries}  # fmt: skip


# ---- one model, every number -------------------------------------------------------------------


@dataclass
class EvalSettings:
    max_tokens: int = 8192  # of each held-out text
    window: int = 512
    stride: int = 256
    prompts: int = 4
    prompt_tokens: int = 32
    new_tokens: int = 32
    prefill_tokens: int = 128
    decode_tokens: int = 32
    rounds: int = 3
    sentences: int = 128  # MiniLM: the first 16 are queries, the rest documents
    data_dir: str = "data/shakespeare"


def disk_size(directory: Path | None, model: nn.Module) -> dict:
    """Bytes of model.safetensors and of every file of the directory (a shipped model: the float32
    tensor bytes, as our float checkpoint would store them)."""
    if directory is None:
        return {"model_bytes": int(tensor_mb(model) * 2**20), "dir_bytes": None, "on_disk": False}
    files = [p for p in Path(directory).iterdir() if p.is_file() and p.name != "eval.json"]
    return {"model_bytes": (Path(directory) / "model.safetensors").stat().st_size,
            "dir_bytes": sum(p.stat().st_size for p in files), "on_disk": True}  # fmt: skip


def evaluate(spec: str, settings: EvalSettings | None = None, progress: bool = False) -> dict:
    """Every number for one model (see the module docstring); JSON-ready."""
    from myllm101.device import hardware
    from myllm101.quant.quantize import quantized_bytes

    s = settings or EvalSettings()
    m = load_any(spec)
    base = load_any(m.base) if m.base else m if m.quantization is None else None
    scheme = m.quantization["scheme"] if m.quantization else "fp32"
    pruned = pruning_of(m)
    if pruned:  # "wanda 0.5", "heads+neurons 0.25 (recovered)"
        done = " (recovered)" if pruned.get("recovery") else ""
        scheme = f"{pruned['method']} {pruned['sparsity']:g}{done}"
    out = {"model": m.name, "model_type": m.cfg.model_type, "scheme": scheme, "base": m.base,
           # the indices a structured pruning removed stay in its config.json (thousands of them)
           "pruning": pruned and {k: v for k, v in pruned.items() if k != "removed"},
           "size": {**disk_size(m.directory, m.model), "linear": quantized_bytes(m.model)},
           "cpu": hardware().summary(), "settings": vars(s)}  # fmt: skip
    if m.cfg.model_type == "bert":
        out["embedding"] = _eval_embedding(m, base, s)
        return out
    vocab = m.cfg.vocab_size
    window = min(s.window, m.cfg.block_size)
    stride = min(s.stride, window // 2)
    out["perplexity"], ids_by_text = {}, {}
    for name, text in heldout_texts(s.data_dir).items():
        ids = text_ids(m.tokenizer, text, vocab)[: s.max_tokens]
        ids_by_text[name] = ids
        p = perplexity(m.model, ids, window, stride, progress)
        row = {"ppl": p.ppl, "nll": p.nll, "tokens": p.tokens, "windows": p.windows,
               "window": window, "stride": stride, "text_sha256": sha256_text(text)}  # fmt: skip
        if base is not None and base is not m:
            pb = perplexity(base.model, ids, window, stride, progress)
            row.update(base_ppl=pb.ppl, ppl_change=p.ppl / pb.ppl - 1,
                       top1_agreement=top1_agreement(p, pb))  # fmt: skip
        elif base is m:
            row.update(base_ppl=p.ppl, ppl_change=0.0, top1_agreement=1.0)
        out["perplexity"][name] = row
    ids = ids_by_text["shakespeare-test"]
    n_new = min(s.new_tokens, m.cfg.block_size - s.prompt_tokens)
    if base is m:  # the float model against itself: nothing to generate
        out["greedy"] = {"agreement": 1.0, "same": 1.0, "prompts": 0, "new_tokens": n_new}
    elif base is not None:
        prompts = prompts_from(ids, s.prompts, s.prompt_tokens)
        out["greedy"] = greedy_agreement(m.model, base.model, prompts, n_new)
    prefill = min(s.prefill_tokens, m.cfg.block_size)
    decode = max(2, min(s.decode_tokens, m.cfg.block_size - 16))
    out["speed"] = speed(fused_copy(m.model), ids, prefill, decode, s.rounds)  # as it would run
    peak = peak_extra_mb(lambda: _generate(m.model, ids[:16], decode))
    out["memory"] = {"tensors_mb": tensor_mb(m.model), "decode_extra_mb": peak,
                     "peak_mb": tensor_mb(m.model) + peak}  # fmt: skip
    return out


@torch.inference_mode()
def _generate(model, prompt, n):
    from myllm101.fast.generate import generate

    return generate(model, prompt, n, temperature=0)


def _eval_embedding(m: Loaded, base: Loaded | None, s: EvalSettings) -> dict:
    from myllm101.quant.heldout import shakespeare_test

    sentences = sentences_from(shakespeare_test(s.data_dir), s.sentences)
    t0 = time.perf_counter()
    q = embed_with(m.model, m.tokenizer, sentences)
    seconds = time.perf_counter() - t0
    f = q if base is None or base is m else embed_with(base.model, base.tokenizer, sentences)
    out = embedding_agreement(q, f, n_queries=min(16, len(sentences) // 4))
    out["sentences_per_s"] = len(sentences) / seconds
    peak = peak_extra_mb(lambda: embed_with(m.model, m.tokenizer, sentences[:32]))
    out["memory"] = {"tensors_mb": tensor_mb(m.model), "embed_extra_mb": peak}
    return out


# ---- the table ---------------------------------------------------------------------------------


def table_rows(results: list[dict]) -> list[dict]:
    """One flat row per result: the table's columns (None where a number does not apply)."""
    rows = []
    for r in results:
        ppl = r.get("perplexity", {})
        emb = r.get("embedding", {})
        sp = r.get("speed", {})
        rows.append({
            "model": r["model"], "scheme": r["scheme"],
            "size_mb": r["size"]["model_bytes"] / 2**20,
            "ppl_shakespeare": ppl.get("shakespeare-test", {}).get("ppl"),
            "ppl_stdlib": ppl.get("python-stdlib", {}).get("ppl"),
            "ppl_change": ppl.get("shakespeare-test", {}).get("ppl_change"),
            "greedy_agreement": r.get("greedy", {}).get("agreement"),
            "prefill_tok_s": sp.get("prefill_tokens_per_s"),
            "decode_tok_s": sp.get("decode_tokens_per_s"),
            "peak_mb": r.get("memory", {}).get("peak_mb"),
            "cosine": emb.get("cosine_mean"),
            "retrieval_top1": emb.get("retrieval_top1_agreement"),
        })  # fmt: skip
    return rows


COLUMNS = [("model", "model", "{}"), ("scheme", "scheme", "{}"), ("size MB", "size_mb", "{:.1f}"),
           ("ppl shakesp.", "ppl_shakespeare", "{:.3f}"), ("ppl stdlib", "ppl_stdlib", "{:.3f}"),
           ("ppl change", "ppl_change", "{:+.2%}"), ("greedy agree", "greedy_agreement", "{:.2f}"),
           ("prefill tok/s", "prefill_tok_s", "{:.0f}"), ("decode tok/s", "decode_tok_s", "{:.1f}"),
           ("peak MB", "peak_mb", "{:.0f}"), ("cosine", "cosine", "{:.5f}"),
           ("retrieval top1", "retrieval_top1", "{:.2f}")]  # fmt: skip


def format_table(results: list[dict]) -> str:
    """A markdown table of ``table_rows``; columns no row fills are left out."""
    rows = table_rows(results)
    cols = [c for c in COLUMNS if any(r[c[1]] is not None for r in rows)]
    lines = ["| " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = ["-" if r[k] is None else fmt.format(r[k]) for _, k, fmt in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
