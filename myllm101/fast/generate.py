"""Autoregressive generation with a pre-allocated KV cache, for the fast GPT-2 and LLaMA models.

Each step feeds only the newest token; its keys/values are appended to the cache and its query
attends to every cached one, so a step costs O(T) attention instead of a full O(T^2) re-forward:

    prefill:  logits = model(prompt, kv_cache=cache)             # cache holds T0 tokens
    decode:   logits = model(last_token, kv_cache=cache)         # cache grows by one per step

Speed: the cache is allocated once at prompt + max_new_tokens and written in place (``update``
copies into slices of it; the buffers never move). The prefill asks for the last position's
logits only (``logits_to_keep=1``: the LM head is the largest GEMM); each decode step goes
through ``model.decode_step`` (fast/llama.py, fast/gpt.py), the same logits without
the per-layer checks and dispatch of ``forward``; ``fast/fuse.py`` fuses the projections too.

Next-token choice, in Hugging Face's order: repetition penalty on the raw logits (a token seen in
the row before is made less likely: a positive logit divided by the penalty, a negative one
multiplied), then temperature (0 = greedy argmax), top-k, top-p (nucleus), and a draw from the
softmax with a seedable ``torch.Generator``.

Batches of prompts of different lengths are left-padded, so every row's newest token sits in the
same last column. The attention mask hides the padding keys, and each row's positions count only
its real tokens (``position_ids = cumsum(mask) - 1``), so a padded row computes exactly what it
would alone: batched generation == one prompt at a time.

    generate(model, [5, 7, 9], max_new_tokens=20, temperature=0)       -> [5, 7, 9, ...]  (23 ids)
    generate(model, [[5, 7, 9], [4]], 20, top_k=50, seed=0)            -> [[5, 7, 9, ...], [4, ...]]
    for token in stream(model, [5, 7, 9], 20): print(token)            # one id per step

``generate(..., timings=Timings())`` also clocks the call: the time to the first new token (the
prompt's prefill) apart from the decode steps after it, whose tokens/s is what memory bandwidth
bounds (``Timings.summary``: the line ``myllm101 generate`` prints on stderr).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from myllm101.checks import (
    check_max_new_tokens,
    check_temperature,
    check_top_k,
    check_top_p,
    expect_int,
    expect_ndim,
    expect_positive,
    expect_shape,
)
from myllm101.fast.compiled_decode import StaticCache, cache_slots, compiled_decoder
from myllm101.fast.kv_cache import KVCache
from myllm101.fast.timings import Timings

# ---------------------------------------------------------------------------------------------
# logits processing: each takes and returns logits (B, V)


def apply_repetition_penalty(
    logits: torch.Tensor,
    previous_ids: torch.Tensor,
    penalty: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """HF's rule for every token id already in the row: logit / penalty if the logit is positive,
    logit * penalty if negative (penalty > 1 makes repeats less likely either way).

    logits: (B, V), previous_ids: (B, S), mask: (B, S) bool, False = padding (not counted).
    """
    expect_ndim("logits", logits, 2)
    expect_int("previous_ids", previous_ids)
    expect_shape("previous_ids", previous_ids, (logits.shape[0], None))
    expect_positive("repetition_penalty", penalty)
    if penalty == 1.0:
        return logits
    B, V = logits.shape
    counted = torch.ones_like(previous_ids) if mask is None else mask.long()
    seen = torch.zeros(B, V, dtype=torch.long, device=logits.device)
    seen = seen.scatter_add_(1, previous_ids.long(), counted) > 0  # (B, V)
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (and any tied with the k-th), the rest -> -inf."""
    expect_ndim("logits", logits, 2)
    check_top_k(k)
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: keep the most likely tokens until their total probability reaches p (at least
    one), the rest -> -inf. A token is dropped when the tokens ranked above it already sum to p."""
    expect_ndim("logits", logits, 2)
    check_top_p(p)
    if p >= 1.0:  # the whole distribution (a float32 cumsum may reach 1 before the last token)
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)  # (B, V)
    # bf16/fp16 logits are summed in float32; float32 and float64 ones in their own precision
    wide = torch.promote_types(sorted_logits.dtype, torch.float32)
    probs = torch.softmax(sorted_logits.to(wide), dim=-1)
    mass_above = torch.cumsum(probs, dim=-1) - probs  # (B, V): probability ranked strictly above
    drop_sorted = mass_above >= p
    # the top token always stays: its mass above is 0 in exact math, but the cumsum kernel may
    # leave a few ulps there, which a tiny p (1e-300) would drop, and then every token
    drop_sorted[:, 0] = False
    drop = torch.zeros_like(drop_sorted).scatter_(1, order, drop_sorted)  # back to vocab order
    return logits.masked_fill(drop, float("-inf"))


def choose_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits (B, V) -> token ids (B,): argmax when temperature == 0, else a softmax draw."""
    check_temperature(temperature)
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# prompts


def _as_id_list(prompt, where: str) -> list[int]:
    if isinstance(prompt, torch.Tensor):
        expect_int(where, prompt)
        expect_ndim(where, prompt, 1)
        prompt = prompt.tolist()
    ids = [int(t) for t in prompt]
    if not ids:
        raise ValueError(f"{where}: expected at least one token, got an empty prompt")
    return ids


def prepare_prompts(
    prompts, attention_mask: torch.Tensor | None = None, pad_token_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One prompt (list of ids / 1-D tensor), a list of prompts, or a (B, T) tensor (left-padded
    when ``attention_mask`` is given) -> (ids (B, T) long, mask (B, T) bool, single).

    Shorter prompts are padded on the left with ``pad_token_id``: [[5, 7, 9], [4]] ->
    ids [[5, 7, 9], [0, 0, 4]], mask [[1, 1, 1], [0, 0, 1]].
    """
    if isinstance(prompts, torch.Tensor) and prompts.dim() == 2:
        expect_int("input_ids", prompts)
        B, T = prompts.shape
        if B == 0 or T == 0:
            raise ValueError(
                f"input_ids: expected a non-empty (B, T) batch, got {tuple(prompts.shape)}"
            )
        if attention_mask is None:
            return prompts.long(), torch.ones(B, T, dtype=torch.bool, device=prompts.device), False
        expect_shape("attention_mask", attention_mask, (B, T))
        mask = attention_mask.bool()
        if (mask[:, 1:] < mask[:, :-1]).any():  # a 1 followed by a 0: right padding
            raise ValueError(
                "attention_mask: expected left padding (0s then 1s in each row), got a 0 after a 1"
            )
        if not mask[:, -1].all():
            raise ValueError(
                "attention_mask: expected at least one real token per row, got an empty row"
            )
        return prompts.long(), mask, False
    if attention_mask is not None:
        raise ValueError(
            "attention_mask: expected only with a (B, T) input_ids tensor, got a list of prompts"
        )
    single = isinstance(prompts, torch.Tensor) or (
        len(prompts) > 0 and not isinstance(prompts[0], (Sequence, torch.Tensor))
    )
    if single:
        rows = [_as_id_list(prompts, "prompt")]
    else:
        if len(prompts) == 0:
            raise ValueError("prompts: expected at least one prompt, got an empty list")
        rows = [_as_id_list(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, T - len(r) :] = torch.tensor(r)
        mask[i, T - len(r) :] = True
    return ids, mask, single


# ---------------------------------------------------------------------------------------------
# the decoding loop


@dataclass
class Step:
    """One decoding step for the whole batch."""

    tokens: torch.Tensor  # (B,) the chosen ids (meaningless where ``active`` is False)
    logits: torch.Tensor  # (B, V) the model's next-token logits, before any processing
    active: torch.Tensor  # (B,) bool: the row was still generating and ``tokens`` is its next id
    finished: torch.Tensor  # (B,) bool: the row is done after this step (stop token/string)


def _check_generation_args(
    model, ids, max_new_tokens, temperature, top_k, top_p, repetition_penalty, stop_strings, decode
):
    check_max_new_tokens(max_new_tokens)
    check_temperature(temperature)
    if top_k is not None:
        check_top_k(top_k)
    if top_p is not None:
        check_top_p(top_p)
    expect_positive("repetition_penalty", repetition_penalty)
    if stop_strings and decode is None:
        raise ValueError("stop_strings: expected a decode function (ids -> str), got decode=None")
    block = model.cfg.block_size
    if ids.shape[1] > block:
        raise ValueError(
            f"prompt: expected at most block_size={block} tokens (the model's context), "
            f"got {ids.shape[1]}"
        )
    if ids.shape[1] + max_new_tokens > block:
        raise ValueError(
            f"max_new_tokens: expected prompt length + max_new_tokens <= block_size={block}, "
            f"got {ids.shape[1]} + {max_new_tokens}"
        )


def generation_steps(
    model: nn.Module,
    prompts,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    stop_tokens: Iterable[int] = (),
    stop_strings: Iterable[str] = (),
    decode: Callable[[list[int]], str] | None = None,
    seed: int | None = None,
    attention_mask: torch.Tensor | None = None,
    use_cache: bool = True,
    pad_token_id: int = 0,
    fast_decode: bool = True,
    compile_step: bool = False,
) -> Iterator[Step]:
    """The loop behind ``generate`` and ``stream``: yields a ``Step`` per new token (see generate
    for the arguments). Stops early once every row has finished."""
    device = next(model.parameters()).device
    ids, mask, _ = prepare_prompts(prompts, attention_mask, pad_token_id)
    stop_strings = tuple(stop_strings)
    _check_generation_args(
        model,
        ids,
        max_new_tokens,
        temperature,
        top_k,
        top_p,
        repetition_penalty,
        stop_strings,
        decode,
    )
    return _decode_loop(
        model, ids.to(device), mask.to(device), max_new_tokens, temperature, top_k, top_p,
        repetition_penalty, set(int(t) for t in stop_tokens), stop_strings, decode, seed, use_cache,
        fast_decode, compiled_decoder(model) if compile_step and use_cache else None,
    )  # fmt: skip


def _decode_loop(
    model, ids, mask, max_new_tokens, temperature, top_k, top_p, penalty, stop_tokens,
    stop_strings, decode, seed, use_cache, fast_decode, compiled,
) -> Iterator[Step]:  # fmt: skip
    B, T0 = ids.shape
    total = T0 + max_new_tokens
    seq = torch.zeros(B, total, dtype=torch.long, device=ids.device)  # prompt, then new tokens
    seq[:, :T0] = ids
    real = torch.ones(B, total, dtype=torch.bool, device=ids.device)  # False = left padding
    real[:, :T0] = mask
    padded = not bool(mask.all())
    # each row counts its own real tokens: the first real token is position 0 in every row
    positions = (real.long().cumsum(dim=-1) - 1).clamp(min=0)  # (B, total)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=ids.device).manual_seed(seed)
    slots = total if compiled is None else cache_slots(total, model.cfg.block_size)
    cache = KVCache.for_model(model, B, slots) if use_cache else None
    if compiled is not None:  # the static cache's mask: real tokens in filled slots only
        visible = torch.zeros(B, slots, dtype=torch.bool, device=ids.device)
        visible[:, :T0] = mask
    static = None  # compiled: the cache after the prefill, as a StaticCache
    running = torch.ones(B, dtype=torch.bool, device=ids.device)
    new_tokens: list[list[int]] = [[] for _ in range(B)]

    # a prefill needs the last position's logits only; the decode steps go through the model's
    # lean ``decode_step`` when it has one (fast/llama.py, fast/gpt.py), else its forward with the cache
    keep = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    lean = fast_decode and cache is not None and hasattr(model, "decode_step")
    was_training = model.training
    model.eval()
    try:
        for step in range(max_new_tokens):
            end = T0 + step  # tokens so far (prompt + generated)
            start = 0 if cache is None or step == 0 else end - 1  # what the model has not seen
            mask_so_far = real[:, :end] if padded else None
            new_positions = positions[:, start:end] if padded else None
            # inference mode only around the work, never across the yield (the caller's code)
            with torch.inference_mode():
                if compiled is not None and step > 0:
                    static = static or StaticCache(cache)  # the prefill's keys, one per layer
                    visible[:, end - 1] = True  # the newest token: real in every row
                    logits = compiled(seq[:, start:end], positions[:, start:end], visible, static)
                elif lean and step > 0:
                    logits = model.decode_step(seq[:, start:end], cache, new_positions, mask_so_far)
                else:
                    logits = model(
                        seq[:, start:end], attention_mask=mask_so_far,
                        position_ids=new_positions, kv_cache=cache, **keep,
                    ).logits[:, -1]  # (B, V)  # fmt: skip
                if logits.dtype not in (torch.float32, torch.float64):
                    logits = logits.float()  # sample from bf16/fp16 logits in float32
                scores = apply_repetition_penalty(logits, seq[:, :end], penalty, real[:, :end])
                tokens = choose_next_token(scores, temperature, top_k, top_p, generator)  # (B,)
                seq[:, end] = tokens
            active = running.clone()
            for row in torch.nonzero(active).flatten().tolist():
                new_tokens[row].append(int(tokens[row]))
                if new_tokens[row][-1] in stop_tokens or (
                    stop_strings and any(s in decode(new_tokens[row]) for s in stop_strings)
                ):
                    running[row] = False
            yield Step(tokens, logits, active, ~running)
            if not running.any():
                break
    finally:
        model.train(was_training)


def _accepts(model: nn.Module, argument: str) -> bool:
    """Does ``model.forward`` take ``argument`` (our GPT and Llama take logits_to_keep)?"""
    return argument in inspect.signature(model.forward).parameters


def generate(
    model: nn.Module,
    prompts,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    stop_tokens: Iterable[int] = (),
    stop_strings: Iterable[str] = (),
    decode: Callable[[list[int]], str] | None = None,
    seed: int | None = None,
    attention_mask: torch.Tensor | None = None,
    use_cache: bool = True,
    pad_token_id: int = 0,
    fast_decode: bool = True,
    compile_step: bool = False,
    timings: Timings | None = None,
) -> list[int] | list[list[int]]:
    """Continue each prompt by up to ``max_new_tokens`` tokens; returns prompt + new ids.

    prompts: one prompt (list of ids or 1-D tensor) -> list[int]; a list of prompts (any lengths)
        or a (B, T) tensor (left-padded, with ``attention_mask``) -> list[list[int]] (no padding).
    temperature: 0 = greedy argmax; top_k / top_p: keep only the k most likely tokens / the
        smallest set of them holding probability top_p; repetition_penalty: HF's (1 = off).
    stop_tokens: a row ends right after emitting one of these ids (it is kept in the output).
    stop_strings: a row ends once ``decode(its new ids)`` contains one of these strings.
    seed: draws come from a ``torch.Generator`` seeded with it (None: torch's global RNG).
    use_cache: False recomputes the whole sequence every step (same tokens, slower).
    fast_decode: with the cache, steps after the prefill go through ``model.decode_step`` when the
        model has one (fast/llama.py: the same logits, less work per step); False: through
        ``model(...)`` with the cache, like every other step (for comparison).
    compile_step: decode through ``torch.compile`` of that step on a static cache
        (fast/compiled_decode.py: float and 8-bit models; the first call compiles, ~1 min).
    timings: a ``Timings`` this call fills in (the prefill timed apart from the decode steps).
    The prompt plus max_new_tokens must fit the model's block_size.
    """
    kw = dict(
        temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
        stop_tokens=stop_tokens, stop_strings=stop_strings, decode=decode, seed=seed,
        attention_mask=attention_mask, use_cache=use_cache, pad_token_id=pad_token_id,
        fast_decode=fast_decode, compile_step=compile_step,
    )  # fmt: skip
    t0 = time.perf_counter()
    ids, mask, single = prepare_prompts(prompts, attention_mask, pad_token_id)
    rows = [ids[i][mask[i]].tolist() for i in range(ids.shape[0])]
    steps, first_s, first_n = 0, 0.0, 0
    for step in generation_steps(model, prompts, max_new_tokens, **kw):
        active = torch.nonzero(step.active).flatten().tolist()
        for row in active:
            rows[row].append(int(step.tokens[row]))
        steps += 1
        if steps == 1:
            first_s, first_n = time.perf_counter() - t0, len(active)
    if timings is not None:
        prompt_tokens = int(mask.sum())
        timings.prompt_tokens, timings.steps = prompt_tokens, steps
        timings.new_tokens = sum(len(r) for r in rows) - prompt_tokens
        timings.first_token_s, timings.first_step_tokens = first_s, first_n
        timings.total_s = time.perf_counter() - t0
    return rows[0] if single else rows


def stream(
    model: nn.Module, prompts, max_new_tokens: int, **kwargs
) -> Iterator[int] | Iterator[list[int | None]]:
    """``generate``'s tokens one step at a time, as soon as each is chosen (same arguments).

    One prompt: yields each new id (int). A batch: yields one list per step with each row's new
    id, or None for a row that has already finished.
    """
    _, _, single = prepare_prompts(prompts, kwargs.get("attention_mask"))
    for step in generation_steps(model, prompts, max_new_tokens, **kwargs):
        tokens = step.tokens.tolist()
        if single:
            yield tokens[0]
        else:
            yield [t if a else None for t, a in zip(tokens, step.active.tolist())]
