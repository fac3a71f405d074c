"""benchmarks/interleave.py: rows timed in one rotating loop, each row's rounds replayed into
pytest-benchmark unchanged (no timing asserts: the functions here take no measurable time)."""

import pytest

from benchmarks.interleave import interleaved, replay


def test_interleaved_runs_every_row_once_a_round_in_rotating_order():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = interleaved(fns, rounds=4)
    assert calls == list("abcbcacababc")  # round r starts at row r mod 3
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(t >= 0 for v in times.values() for t in v)


def test_interleaved_warmup_rounds_come_first_and_are_not_kept():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "ab"}
    times = interleaved(fns, rounds=2, warmup=1)
    assert calls == list("abbaab")  # the warm-up round is round 0 of the rotation
    assert {k: len(v) for k, v in times.items()} == {"a": 2, "b": 2}


def test_replay_records_the_given_rounds(benchmark):
    durations = [0.5, 0.25, 0.125, 2.0]  # dyadic: the replayed clock's sums are exact
    assert replay(benchmark, durations, result="loss") == "loss"
    stats = benchmark.stats.stats
    assert stats.data == durations and stats.rounds == 4
    assert stats.median == pytest.approx(0.375) and stats.min == 0.125


@pytest.mark.parametrize("durations", [[], [0.1, 0.0]])
def test_replay_refuses_missing_or_non_positive_durations(durations):
    with pytest.raises(ValueError, match="positive durations"):
        replay(None, durations)  # refused before the fixture is touched


def test_interleaved_pauses_untimed_before_every_call(monkeypatch):
    import benchmarks.interleave as mod

    events = []
    monkeypatch.setattr(mod.time, "sleep", lambda s: events.append(("sleep", s)))
    fns = {name: (lambda name=name: events.append(name)) for name in "ab"}
    times = interleaved(fns, rounds=1, warmup=1, pause=0.25)
    pause = ("sleep", 0.25)
    assert events == [pause, "a", pause, "b", pause, "b", pause, "a"]  # warm-up, then round 1
    assert {k: len(v) for k, v in times.items()} == {"a": 1, "b": 1}


def test_groups_build_and_time_each_group_once():
    from benchmarks.interleave import Groups

    built = []

    def make(tag):
        built.append(tag)
        return {"a": lambda: None, "b": lambda: None}

    groups = Groups()
    runs, times = groups.timed("g1", lambda: make("g1"), rounds=3)
    assert set(runs) == {"a", "b"} and {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert groups.timed("g1", lambda: make("again"), rounds=3) == (runs, times)  # reused
    groups.timed("g2", lambda: make("g2"), rounds=1)
    assert built == ["g1", "g2"] and set(groups.times) == {"g1", "g2"}
    one = Groups(one_at_a_time=True)
    one.timed("g1", lambda: make("x"), rounds=1)
    one.timed("g2", lambda: make("y"), rounds=1)
    assert set(one.runs) == {"g2"}  # the previous group's calls are dropped, its times kept
    assert set(one.times) == {"g1", "g2"} and one.timed("g1", lambda: make("z"), 1)[0] == {}
    assert built == ["g1", "g2", "x", "y"]
