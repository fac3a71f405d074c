"""One fine-tuning step on SmolLM2-135M (fp32, CPU): every weight, LoRA, LoRA over an int8 base,
and ``peft`` + transformers doing the same LoRA step, all in one run.

    pytest benchmarks/test_finetune.py -k "not smoke" --benchmark-only --benchmark-json=finetune.json
    python -m benchmarks.ratio_report finetune.json --name FINETUNE --title "Fine-tuning"
    pytest benchmarks/test_finetune.py -k smoke --benchmark-only     # a tiny random LLaMA, seconds
    python -m benchmarks.finetune_budget --report benchmarks/results/FINETUNE.md   # same time budget

One group, "finetune smollm2 B4 T128": a batch of B=4 real SFT examples of data/finetune/
sft-train.jsonl (the first four, in file order, that fit T=128 tokens; ``finetune.cli.sft_batches``
encodes them with SmolLM2's chat template, loss on the response only), right-padded to exactly
T=128 (padding: attention mask 0, label -100), so every row processes the same 512 positions. On
2 cores a full fine-tuning step takes a few seconds at this shape. Its rows
(``extra_info["impl"]``):

- ``full`` (the baseline): ``prepare_model(model, "sft", "full")``, every weight trains;
- ``lora``: ``prepare_model(..., "lora", targets=q_proj, v_proj, r=8, alpha=16, dropout=0.05)``,
  PEFT's default targets for LLaMA, with prepare_model's default ``recompute="auto"``: the frozen
  MLPs' hidden activations are recomputed in backward (fast/blocks.py ``set_recompute``), as
  ``myllm101 finetune --method lora`` does;
- ``qlora``: ``prepare_model(..., "qlora", ...)``: every Linear but the (tied) head becomes a
  frozen weight-only int8 layer, then the same LoRA;
- ``peft-lora``: transformers' ``LlamaForCausalLM`` holding the same weights (from the same GGUF,
  as benchmarks/test_hub.py builds it) wrapped by ``peft.get_peft_model`` with a ``LoraConfig`` of
  the same r, alpha, dropout and targets; called with ``use_cache=False`` (a training step keeps
  no KV cache; ours keeps none either).

One round is one whole step: ``zero_grad(set_to_none=True)``, forward with ``labels`` ->
``.loss``, ``backward``, optimizer step. Our rows call the model with ``scored_only=True``, as
``myllm101 finetune`` does (the LM head and loss on the scored positions only: 15 of the 512
here; fast/blocks.py ``scored_lm_loss``); transformers has no such option, so peft's row computes
the head at every position. Every row uses the SAME optimizer, built the same way:
``fast.optim.make_adamw(param_groups(model, 0.0), lr, weight_decay=0.0)`` over the trainable
parameters only (torch's fused AdamW where available), lr as ``myllm101 finetune`` defaults it
(5e-5 full, 1e-3 the LoRA rows); no gradient clipping. The rows are timed in one interleaved
loop (benchmarks/interleave.py): each round steps every row once, the order rotating, so a drift
of the machine's speed reaches every row alike; the four
models stay alive in one process (~4 GB).

Memory, in ``extra_info`` (measured once per row when the group is built, after a warm-up step
that allocated the AdamW state, with no gradients held):

- ``peak_mb``: the extra memory one whole step allocates (``benchmarks.memory``): activations,
  gradients, the optimizer's temporaries;
- ``state_mb``: what the row holds between steps: its weights and buffers (a tied tensor once;
  int8 bytes for the qlora base) plus the AdamW moments;
- ``total_mb`` = state_mb + peak_mb: the memory fine-tuning needs at its peak;
- ``peak_vs_full`` / ``total_vs_full``: those two as fractions of the ``full`` row's;
- ``trainable_params`` / ``total_params`` (``finetune.adapters.count_parameters``: an int8 weight
  counts as the weight it stands for), ``scored_tokens`` (labels that are not -100).

Targets (issue 15): LoRA's peak memory <= 40% of full fine-tuning's (``total_vs_full``; the step
alone in ``peak_vs_full``), and our LoRA step time <= 1.0x peft's (the ``lora`` and ``peft-lora``
rows' times). The rows carry both as goals (``GOALS``: ratio_report's ``extra:total_vs_full``
and ``time_vs:peft-lora`` metrics), so the report says met or missed; each row's mode also says
how many parameters train and its total MB as a fraction of full's.

The "smoke" rows run the same code on a tiny random LLaMA (2 layers, width 32, vocab 97, B=2,
T=16, a seeded synthetic batch: half the labels -100, one row padded) in their own group,
"finetune smoke B2 T16"; its peft row exists only where ``peft`` is importable.
tests/test_finetune_bench_smoke.py runs them and builds the report (no timing asserts).
"""

from __future__ import annotations

import copy
import gc
import importlib.util
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.interleave import interleaved, replay
from benchmarks.memory import MB, peak_torch_mb
from myllm101.config import LlamaConfig
from myllm101.data.collate import IGNORE_INDEX
from myllm101.fast.llama import Llama
from myllm101.fast.optim import make_adamw, param_groups
from myllm101.finetune.adapters import count_parameters
from myllm101.finetune.cli import DEFAULT_LR
from myllm101.finetune.run import prepare_model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "finetune"
R, ALPHA, DROPOUT, TARGETS = 8, 16.0, 0.05, ("q_proj", "v_proj")
OURS = ("full", "lora", "qlora")
HAS_PEFT = all(importlib.util.find_spec(m) is not None for m in ("peft", "transformers"))
LORA_PEAK_GOAL, PEFT_TIME_GOAL = 0.40, 1.0
TARGET = (
    f"target: lora's peak memory <= {LORA_PEAK_GOAL:.0%} of full's (total_vs_full); lora's step "
    f"time <= {PEFT_TIME_GOAL:.1f}x peft-lora's"
)
# the target's two checks (benchmarks/ratio_report.py reads them from extra_info["goals"])
GOALS = [
    {"impls": ["lora"], "metric": "extra:total_vs_full", "op": "<=", "value": LORA_PEAK_GOAL},
    {"impls": ["lora"], "metric": "time_vs:peft-lora", "op": "<=", "value": PEFT_TIME_GOAL},
]
NOTE = (
    "rows timed interleaved (each round steps every row once, the order rotating); every row "
    "steps the same AdamW (fast.optim.make_adamw) over its trainable parameters (lr 5e-5 full, "
    f"1e-3 LoRA), no clipping; LoRA r={R}, alpha={ALPHA:g}, dropout={DROPOUT} on q_proj, v_proj; "
    "peak MB = one step's extra memory (no gradients held before it); the mode's MB = that + "
    "the weights + the AdamW state; ours compute the LM head and loss on the scored positions "
    "only (scored_only=True, as `myllm101 finetune`), peft's at every position; lora and qlora "
    "recompute the frozen MLPs' activations in backward (finetune's default recompute=auto)"
)
MODES = {
    "full": "train step, every weight",
    "lora": "train step, LoRA (ours)",
    "qlora": "train step, LoRA over an int8 base (ours)",
    "peft-lora": "train step, LoRA (peft + transformers)",
}


@dataclass(frozen=True)
class Size:
    B: int
    T: int
    rounds: int


SIZES = {"smollm2": Size(B=4, T=128, rounds=7), "smoke": Size(B=2, T=16, rounds=3)}


def _impls(size: str) -> tuple[str, ...]:
    # the full-size peft row always exists (it skips, with its reason, without peft); the smoke
    # group has it only where peft is importable
    return OURS + ("peft-lora",) if size != "smoke" or HAS_PEFT else OURS


PARAMS = [
    pytest.param(size, impl, id=f"finetune-{size}-{impl}")
    for size in SIZES
    for impl in _impls(size)
]


def group_name(size: str) -> str:
    s = SIZES[size]
    return f"finetune {size} B{s.B} T{s.T}"


# ---- models and the batch ----------------------------------------------------------------------


def tiny_models() -> tuple[nn.Module, nn.Module | None]:
    """(our tiny random LLaMA, transformers' LlamaForCausalLM with the same weights, or None
    without transformers). Built from transformers' model when it is there (hub/convert.py)."""
    torch.manual_seed(0)
    if not HAS_PEFT:
        cfg = LlamaConfig(vocab_size=97, block_size=16, n_layer=2, n_head=4, n_kv_head=2,
                          n_embd=32, intermediate_size=64, tie_word_embeddings=True)  # fmt: skip
        return Llama(cfg), None
    import transformers  # a peer for comparison, never imported by myllm101

    from myllm101.hub.convert import from_hf_state_dict
    from myllm101.hub.smollm2 import build_loaded

    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
        tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, attn_implementation="sdpa",
    ))  # fmt: skip
    cfg, sd = from_hf_state_dict(hf.config.to_dict(), hf.state_dict())
    return build_loaded(Llama, cfg, sd), hf


def tiny_batch(vocab: int, s: Size) -> dict[str, torch.Tensor]:
    """Seeded ids; the first half of every row unscored (a prompt), the last row's last 3
    positions padding (mask 0, label -100)."""
    ids = torch.from_numpy(np.random.default_rng(0).integers(1, vocab, (s.B, s.T)))
    mask = torch.ones_like(ids)
    mask[-1, -3:] = 0
    ids[mask == 0] = 0
    labels = ids.clone()
    labels[:, : s.T // 2] = IGNORE_INDEX
    labels[mask == 0] = IGNORE_INDEX
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pad_to(batch: dict[str, torch.Tensor], T: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a collated (B, t) batch to (B, T): pad_id, attention mask 0, label -100."""
    extra = T - batch["input_ids"].shape[1]
    if extra < 0:
        raise ValueError(f"batch: expected at most T={T} positions, got {batch['input_ids'].shape}")
    fill = {"input_ids": pad_id, "attention_mask": 0, "labels": IGNORE_INDEX}
    return {k: F.pad(v, (0, extra), value=fill[k]) for k, v in batch.items()}


def sft_train_path() -> Path:
    """data/finetune/sft-train.jsonl, or a skip saying how to make it."""
    path = DATA / "sft-train.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not found: run `python -m myllm101.finetune.tasks data/finetune`")
    return path


def sft_batch(tokenizer, s: Size) -> dict[str, torch.Tensor]:
    """The first B examples of sft-train.jsonl (file order) that fit T tokens, padded to T."""
    from myllm101.finetune.cli import ChatTokenizer, read_rows, sft_batches
    from myllm101.finetune.sft import special_id

    path = sft_train_path()
    if hasattr(tokenizer, "encode_ordinary"):  # our plain BPE: allow its special tokens
        tokenizer = ChatTokenizer(tokenizer)
    rows = read_rows(path, None, 0)[: 16 * s.B]
    batches, _ = sft_batches(rows, tokenizer, s.T, s.B, str(path))
    if len(batches[0]["input_ids"]) != s.B:
        raise ValueError(f"{path}: expected {s.B} examples of <= {s.T} tokens in its first rows")
    return pad_to(batches[0], s.T, special_id(tokenizer, "<|im_end|>"))


def smollm2_models() -> tuple[nn.Module, object, nn.Module | None]:
    """(our SmolLM2-135M fp32, its tokenizer, transformers' model of the same GGUF or None)."""
    from benchmarks.test_hub import _gguf_path  # skips, saying why, without the GGUF
    from myllm101.quant.eval import load_any

    path = _gguf_path()

    loaded = load_any("smollm2")
    hf = None
    if HAS_PEFT:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local files only: never download
        from benchmarks.test_hub import load_transformers

        hf, _ = load_transformers(path, tokenizer=False)
    return loaded.model, loaded.tokenizer, hf


# ---- one row: a prepared model and its step -----------------------------------------------------


@dataclass
class Row:
    step: Callable[[], torch.Tensor]  # one optimizer step -> the loss
    zero_grad: Callable[[], None]
    trainable: int
    total: int
    state_mb: float = math.nan  # weights + buffers + optimizer state, between steps
    peak_mb: float = math.nan  # one step's extra memory
    times: list[float] | None = None  # seconds per timed round (interleaved with the others)


def held_mb(model: nn.Module, opt: torch.optim.Optimizer) -> float:
    """Bytes of the model's tensors (each storage once: tied weights, shared bases) plus the
    optimizer's state tensors, in MB."""
    seen, total = set(), 0
    tensors = [*model.parameters(), *model.buffers()]
    tensors += [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
    for t in tensors:
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total / MB


def make_row(impl: str, model: nn.Module, batch: dict[str, torch.Tensor]) -> Row:
    """Prepare ``model`` (in place) for ``impl`` and build its step; one warm-up step runs."""
    if impl == "peft-lora":
        import peft

        config = peft.LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=DROPOUT,
                                 target_modules=list(TARGETS), task_type="CAUSAL_LM")  # fmt: skip
        model = peft.get_peft_model(model, config)
        kwargs = {**batch, "use_cache": False}
    else:
        model = prepare_model(model, "sft", impl, targets=TARGETS, r=R, alpha=ALPHA,
                              dropout=DROPOUT)  # fmt: skip
        kwargs = dict(batch, scored_only=True)  # as finetune.run.batch_loss
    model.train()
    lr = DEFAULT_LR["lora" if impl == "peft-lora" else impl]
    opt = make_adamw(param_groups(model, 0.0), lr=lr, weight_decay=0.0)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = model(**kwargs).loss
        loss.backward()
        opt.step()
        return loss.detach()

    def zero_grad() -> None:
        opt.zero_grad(set_to_none=True)

    trainable, total = count_parameters(model)
    row = Row(step, zero_grad, trainable, total)
    step()  # warm-up: allocates the AdamW state
    row.state_mb = held_mb(model, opt)
    return row


_GROUP: dict[str, tuple[dict[str, Row], dict[str, torch.Tensor], str]] = {}


def build_group(size: str) -> tuple[dict[str, Row], dict[str, torch.Tensor], str]:
    """(impl -> Row, the batch, the shape text) for one size, built and measured once: its rows
    share it; another size's models are dropped first."""
    if size in _GROUP:
        return _GROUP[size]
    _GROUP.clear()
    gc.collect()
    s = SIZES[size]
    if size == "smoke":
        ours, hf = tiny_models()
        batch = tiny_batch(ours.cfg.vocab_size, s)
    else:
        sft_train_path()  # before loading anything
        ours, tok, hf = smollm2_models()
        batch = sft_batch(tok, s)
    c = ours.cfg
    models = {"full": ours, "lora": copy.deepcopy(ours), "qlora": copy.deepcopy(ours)}
    if hf is not None:
        models["peft-lora"] = hf
    rows = {impl: make_row(impl, m, batch) for impl, m in models.items()}
    del models, ours, hf
    gc.collect()
    for row in rows.values():  # each measured alone, no gradients held, AdamW state allocated
        row.zero_grad()
        row.peak_mb = peak_torch_mb(row.step)
        row.zero_grad()
    gc.collect()
    times = interleaved({impl: row.step for impl, row in rows.items()}, s.rounds)
    for impl, row in rows.items():
        row.times = times[impl]
    shape = (
        f"B={s.B} T={s.T} L={c.n_layer} C={c.n_embd} H={c.n_head}/{c.n_kv_head} "
        f"V={c.vocab_size}; LoRA r={R} alpha={ALPHA:g} dropout={DROPOUT} on {','.join(TARGETS)}"
    )
    _GROUP[size] = (rows, batch, shape)
    return _GROUP[size]


def mode_text(impl: str, row: Row, total_vs_full: float) -> str:
    """The report's mode column: what trains and the whole memory, which ratio_report's own
    columns (time, tokens/s, the step's peak MB) leave out."""
    return (
        f"{MODES[impl]}: {row.trainable:,} of {row.total:,} params train; weights + AdamW + "
        f"step {row.state_mb + row.peak_mb:,.1f} MB ({total_vs_full:.0%} of full's)"
    )


@pytest.mark.parametrize("size,impl", PARAMS)
def test_finetune_step(benchmark, size, impl):
    if impl == "peft-lora" and not HAS_PEFT:
        pytest.skip("peft / transformers are not installed (the 'hf' extra): no peft-lora row")
    s = SIZES[size]
    rows, batch, shape = build_group(size)
    mine = rows[impl]
    full = rows["full"]
    total_mb = mine.state_mb + mine.peak_mb
    total_vs_full = total_mb / (full.state_mb + full.peak_mb)
    benchmark.group = group_name(size)
    benchmark.extra_info.update(
        component="finetune", size=size, impl=impl, mode=mode_text(impl, mine, total_vs_full),
        shape=shape, baseline=impl == "full", dtype="fp32", count=s.B * s.T, unit="tokens",
        scored_tokens=int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()),
        trainable_params=mine.trainable, total_params=mine.total,
        peak_mb=mine.peak_mb, state_mb=mine.state_mb, total_mb=total_mb,
        peak_vs_full=mine.peak_mb / full.peak_mb, total_vs_full=total_vs_full,
        note=NOTE, target=TARGET, loadavg=os.getloadavg()[0], goals=GOALS,
    )  # fmt: skip
    loss = replay(benchmark, mine.times, result=mine.step())
    assert torch.isfinite(loss)
