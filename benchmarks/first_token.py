"""Decode steps timed apart from the prefill: each generation notes when its first new token came.

A timed ``generate`` call is the prompt's prefill (one forward over the prompt, compute-bound)
followed by the decoding steps (one token each, bound by reading every weight). The bandwidth
bound applies to the steps only, and ``myllm101 eval`` reports decode tokens/s without the
prefill, so the decode benchmarks report both: the whole call, and the steps after the first new
token, ``(new - 1) tokens / (call time - time to the first new token)`` (llama.cpp's "eval" rate).
Ours reads the time to its first new token from ``generate``'s own clock (fast/timings.py).

    run = hf_generation(model, prompt, 64)   # or ours_generation(model, prompt, 64)
    times = interleaved({"hf": run, ...}, rounds=7, warmup=1)
    steps = run.first_token.after_first(times["hf"], warmup=1)  # the 63 later steps, per round
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from benchmarks.interleave import replay


class FirstToken:
    """Seconds from a generation's start to its first new token, one entry per generation.

    transformers: pass it as ``generate(..., streamer=clock)`` after ``clock.start()``; it is
    handed the prompt first, then each new token. Ours: ``fast.generate``'s own clock
    (``timings=Timings()``, fast/timings.py) hands its ``first_token_s`` over to ``seconds``.
    ``timer`` (the time source) is replaceable for tests.
    """

    def __init__(self, timer: Callable[[], float] = time.perf_counter):
        self.timer = timer
        self.seconds: list[float] = []
        self._t0 = 0.0
        self._puts = 0

    def start(self) -> None:
        self._t0, self._puts = self.timer(), 0

    def put(self, value: torch.Tensor) -> None:  # transformers' streamer protocol
        self._puts += 1
        if self._puts == 2:  # the first put is the prompt, the second the first new token
            self.seconds.append(self.timer() - self._t0)

    def end(self) -> None:  # transformers' streamer protocol
        pass

    def after_first(self, totals: list[float], warmup: int = 0) -> list[float]:
        """Per timed call: its total seconds less its time to the first new token. The calls are
        this clock's generations ``warmup`` to ``warmup + len(totals)`` (untimed warm-up calls
        come first: ``interleaved(..., warmup=warmup)`` right after the runs are built)."""
        firsts = self.seconds[warmup : warmup + len(totals)]
        if len(firsts) != len(totals):
            raise ValueError(
                f"after_first: {len(totals)} timed calls after {warmup} warm-up, but the clock "
                f"saw {len(self.seconds)} generations"
            )
        steps = [total - first for total, first in zip(totals, firsts)]
        if min(steps) <= 0:
            raise ValueError(f"after_first: a call ended before its first token: {steps!r}")
        return steps


def hf_generation(model, prompt: list[int], n_new: int) -> Callable[[], list[int]]:
    """() -> prompt + ``n_new`` greedy tokens from a transformers model (KV cache); the call's
    ``first_token`` attribute (a FirstToken) times each first new token. An explicit all-ones
    mask: without one, ``generate`` masks every prompt token equal to the pad id, and SmolLM2's
    pad id is <|im_end|>, which chat prompts hold."""
    ids = torch.tensor([prompt])
    mask = torch.ones_like(ids)
    clock = FirstToken()

    def run() -> list[int]:
        clock.start()
        with torch.inference_mode():
            out = model.generate(
                ids, attention_mask=mask, do_sample=False, max_new_tokens=n_new,
                min_new_tokens=n_new, use_cache=True, streamer=clock,
            )  # fmt: skip
        return out[0].tolist()

    run.first_token = clock
    return run


def ours_generation(
    model: torch.nn.Module, prompt: list[int], n_new: int, **kwargs
) -> Callable[[], list[int]]:
    """() -> prompt + ``n_new`` greedy tokens from our ``generate`` (kwargs: ``fast_decode``,
    ``compile_step``), which times its first new token itself (``Timings``); ``first_token`` as
    in ``hf_generation``."""
    from myllm101.fast.generate import generate
    from myllm101.fast.timings import Timings

    clock = FirstToken()

    def run() -> list[int]:
        timings = Timings()
        out = generate(model, prompt, n_new, temperature=0, timings=timings, **kwargs)
        clock.seconds.append(timings.first_token_s)
        return out

    run.first_token = clock
    return run


def replay_steps(benchmark, durations: list[float], n_new: int, prefill: str) -> tuple[dict, str]:
    """Record a row's decode-steps durations (``Groups.after_first``) as its benchmark's rounds
    -> (its extra_info: count = the ``n_new - 1`` steps, no peak of its own; its note's first
    words). ``prefill`` names what the time to the first new token holds."""
    replay(benchmark, durations)
    what = (
        f"the {n_new - 1} decode steps after the first new token: generate()'s time less the "
        f"time to its first new token ({prefill})"
    )
    return dict(count=n_new - 1, peak_mb=None), what
