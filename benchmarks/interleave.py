"""Rows timed in one interleaved loop, so a drift of the machine's speed reaches every row alike.

pytest-benchmark times one test (one row of a report) at a time: even with every other row's
work run untimed before each round (``setup``), a row's rounds happen back to back, in minutes
of their own, and on this VM the speed moves by 10-20% from one stretch of minutes to the next.
Here the group's first test runs every row's function round by round, the order rotating each
round (round r starts at row r mod n), and keeps each row's durations; each row's test then
hands its own durations to pytest-benchmark (``replay``), whose statistics, JSON and reports
stay what they are for any other benchmark.

    times = interleaved({"ours": step_a, "peer": step_b}, rounds=9)  # {"ours": [s, ...], ...}
    replay(benchmark, times["ours"])                                 # in ours' test
"""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Callable, Hashable


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 0, pause: float = 0.0
) -> dict[str, list[float]]:
    """Run every function once per round, rotating the order -> {name: [seconds per round]}.
    ``warmup`` untimed rounds, in the same rotating order, come first (caches, compilation);
    ``pause`` seconds are slept, untimed, before each call (thread pools that busy-wait after
    a call, OpenBLAS's or OpenMP's, then leave the next row idle cores)."""
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + rounds):
        start = r % len(names)
        for name in names[start:] + names[:start]:
            if pause:
                time.sleep(pause)
            t0 = time.perf_counter()
            fns[name]()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


class Groups:
    """Each group's rows timed once, by whichever of its rows' tests runs first; the others reuse
    its calls and times. ``one_at_a_time`` drops the previous group's calls (and the models they
    hold) before building the next group's; its times stay.

    A call with a ``first_token`` attribute (benchmarks/first_token.py: a generation) also gets
    its rounds' decode steps timed apart from the prefill, in ``after_first[key][name]``."""

    warmup = 1  # untimed rounds before the timed ones: the -compiled rows compile there

    def __init__(self, one_at_a_time: bool = False):
        self.one_at_a_time = one_at_a_time
        self.runs: dict[Hashable, dict[str, Callable[[], object]]] = {}
        self.times: dict[Hashable, dict[str, list[float]]] = {}
        self.after_first: dict[Hashable, dict[str, list[float]]] = {}

    def timed(
        self, key: Hashable, make_runs: Callable[[], dict[str, Callable[[], object]]],
        rounds: int, pause: float = 0.0,
    ) -> tuple[dict[str, Callable[[], object]], dict[str, list[float]]]:  # fmt: skip
        """(the group's calls by row, their seconds per round): built by ``make_runs`` and timed
        by ``interleaved`` after ``warmup`` untimed rounds. A group whose calls were dropped
        (``one_at_a_time``) returns no calls (an empty dict), only its times."""
        if key not in self.times:
            if self.one_at_a_time:
                self.runs.clear()
                gc.collect()
            runs = self.runs[key] = make_runs()
            times = self.times[key] = interleaved(runs, rounds, self.warmup, pause)
            self.after_first[key] = {
                name: fn.first_token.after_first(times[name], self.warmup)
                for name, fn in runs.items()
                if hasattr(fn, "first_token")
            }
            gc.collect()  # the warm-up's garbage, now rather than inside a row's own measurements
        return self.runs.get(key, {}), self.times[key]


def replay(benchmark, durations: list[float], result: object = None) -> object:
    """Record ``durations`` (seconds, one per round, measured by ``interleaved``) as this
    benchmark's rounds and return ``result``. pytest-benchmark reads its timer just before and
    just after each round; a clock that advances by exactly the measured duration in between
    makes each round's time the measured one (the fixture's ``_timer`` is the attribute its
    pedantic mode reads; pytest-benchmark 4/5)."""
    if not durations or min(durations) <= 0:
        raise ValueError(f"replay: expected positive durations, got {durations!r}")
    clock = itertools.accumulate(itertools.chain.from_iterable((0.0, d) for d in durations))
    benchmark._timer = lambda: next(clock)
    return benchmark.pedantic(lambda: result, rounds=len(durations), iterations=1)
