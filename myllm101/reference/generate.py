"""Autoregressive generation in NumPy: slow, with no cache, and obviously correct.

Every step runs the reference model on the whole sequence so far and reads the logits of the last
position; nothing is remembered between steps. Prompts are generated one at a time (no padding),
and the next-token rules work on one row of logits (V,) with plain loops and sorts:

    logits = model.forward(ids[None])[0][0, -1]        # (V,): what comes after ids
    logits = apply_repetition_penalty(logits, ids, penalty)  # seen ids: positive / penalty, negative * penalty
    token  = argmax(logits)                            if temperature == 0
             draw from softmax(top_p(top_k(logits / temperature)))   otherwise

The fast generator (``fast/generate.py``, with a KV cache and batching) must produce the same
greedy tokens; its top-k / top-p / repetition-penalty filters are checked against the ones here.
"""

from __future__ import annotations

import numpy as np

from myllm101.checks import (
    check_max_new_tokens,
    check_temperature,
    check_top_k,
    check_top_p,
    expect_ndim,
    expect_positive,
)


def softmax(logits: np.ndarray) -> np.ndarray:
    """(V,) -> (V,) probabilities; -inf logits get probability 0."""
    e = np.exp(logits - np.max(logits))
    return e / e.sum()


def apply_repetition_penalty(logits: np.ndarray, previous_ids, penalty: float) -> np.ndarray:
    """HF's rule, per token id already in ``previous_ids``: a positive logit is divided by the
    penalty, a negative one multiplied (with penalty > 1 both move the token down)."""
    expect_ndim("logits", logits, 1)
    expect_positive("repetition_penalty", penalty)
    out = logits.copy()
    for token in set(int(t) for t in previous_ids):
        out[token] = out[token] / penalty if out[token] > 0 else out[token] * penalty
    return out


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep logits >= the k-th largest (ties with it stay); others -> -inf."""
    expect_ndim("logits", logits, 1)
    check_top_k(k)
    kth = np.sort(logits)[::-1][min(k, logits.size) - 1]
    return np.where(logits >= kth, logits, -np.inf)


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Walk the tokens from most to least likely, keeping each, until the kept probability
    reaches p; every token after that -> -inf (the most likely token is always kept)."""
    expect_ndim("logits", logits, 1)
    check_top_p(p)
    if p >= 1.0:  # every token: a rounded running total may reach 1 before the last one
        return logits.copy()
    probs = softmax(logits)
    keep = np.zeros(logits.shape, dtype=bool)
    total = 0.0
    for token in np.argsort(-logits, kind="stable"):
        keep[token] = True
        total += probs[token]
        if total >= p:
            break
    return np.where(keep, logits, -np.inf)


def choose_next_token(
    logits: np.ndarray,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    rng: np.random.Generator | None = None,
) -> int:
    """One row of logits (V,) -> the next token id."""
    check_temperature(temperature)
    if temperature == 0:
        return int(np.argmax(logits))
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    rng = np.random.default_rng() if rng is None else rng
    return int(rng.choice(logits.size, p=softmax(logits.astype(np.float64))))


def generate_one(
    model,
    prompt,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    stop_tokens=(),
    rng: np.random.Generator | None = None,
) -> list[int]:
    """One prompt -> prompt + up to max_new_tokens ids, recomputing the full forward each step."""
    ids = [int(t) for t in prompt]
    if not ids:
        raise ValueError("prompt: expected at least one token, got an empty prompt")
    block = model.cfg.block_size
    if len(ids) + max_new_tokens > block:
        raise ValueError(
            f"max_new_tokens: expected prompt length + max_new_tokens <= block_size={block}, "
            f"got {len(ids)} + {max_new_tokens}"
        )
    for _ in range(max_new_tokens):
        logits, _, _ = model.forward(np.array([ids]))  # (1, T, V): the whole sequence again
        last = apply_repetition_penalty(logits[0, -1], ids, repetition_penalty)  # (V,)
        ids.append(choose_next_token(last, temperature, top_k, top_p, rng))
        if ids[-1] in stop_tokens:
            break
    return ids


def generate(
    model,
    prompts,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    stop_tokens=(),
    seed: int | None = None,
) -> list[int] | list[list[int]]:
    """``model`` is a ReferenceGPT or ReferenceLlama. One prompt (list of ids) -> list[int]; a
    list of prompts -> list[list[int]], each generated on its own (the same as a batch)."""
    check_max_new_tokens(max_new_tokens)
    rng = np.random.default_rng(seed)
    model.eval()
    single = len(prompts) > 0 and np.ndim(prompts[0]) == 0
    rows = [prompts] if single else list(prompts)
    out = [
        generate_one(
            model,
            row,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            repetition_penalty,
            stop_tokens,
            rng,
        )  # fmt: skip
        for row in rows
    ]
    return out[0] if single else out
