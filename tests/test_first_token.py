"""benchmarks/first_token.py: a generation's decode steps timed apart from its prefill (no timing
asserts: the times come from a counting fake timer)."""

import itertools

import pytest
import torch

from benchmarks.first_token import FirstToken, hf_generation, ours_generation
from benchmarks.interleave import Groups
from myllm101.config import LlamaConfig
from myllm101.fast.generate import generate
from myllm101.fast.llama import Llama


def counting_clock() -> FirstToken:
    ticks = itertools.count()
    return FirstToken(timer=lambda: float(next(ticks)))


def test_streamer_notes_the_second_put_only():
    clock = counting_clock()
    clock.start()  # t = 0
    clock.put(torch.tensor([[1, 2, 3]]))  # the prompt: no time
    clock.put(torch.tensor([4]))  # the first new token: t = 1
    clock.put(torch.tensor([5]))
    clock.end()
    clock.start()  # t = 2
    clock.put(torch.tensor([[1]]))
    clock.put(torch.tensor([7]))  # t = 3
    assert clock.seconds == [1.0, 1.0]


def test_after_first_subtracts_the_timed_calls_firsts():
    clock = FirstToken()
    clock.seconds = [5.0, 0.25, 0.5]  # a warm-up call, then two timed ones
    assert clock.after_first([1.0, 2.0], warmup=1) == [0.75, 1.5]
    with pytest.raises(ValueError, match="3 timed calls after 1 warm-up, but the clock saw 3"):
        clock.after_first([1.0, 2.0, 3.0], warmup=1)
    with pytest.raises(ValueError, match="ended before its first token"):
        clock.after_first([0.25], warmup=1)


def tiny_llama() -> Llama:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                      intermediate_size=64)  # fmt: skip
    return Llama(cfg).eval()


@pytest.mark.parametrize("fast_decode", [True, False])
def test_ours_generation_equals_generate_and_times_each_call(fast_decode):
    model, prompt = tiny_llama(), [3, 5, 7, 9]
    run = ours_generation(model, prompt, 6, fast_decode=fast_decode)
    expected = generate(model, prompt, 6, temperature=0, fast_decode=fast_decode)
    assert run() == expected and run() == expected and len(expected) == 10
    assert len(run.first_token.seconds) == 2 and min(run.first_token.seconds) > 0  # from Timings


class FakeHF:
    """transformers' generate as far as the streamer goes: the prompt, then each new token."""

    def __init__(self):
        self.kwargs = {}

    def generate(self, ids, streamer=None, max_new_tokens=0, **kwargs):
        self.kwargs = dict(kwargs, max_new_tokens=max_new_tokens)
        streamer.put(ids)
        new = torch.arange(max_new_tokens)
        for token in new:
            streamer.put(token[None])
        streamer.end()
        return torch.cat([ids, new[None]], dim=1)


def test_hf_generation_streams_into_its_clock_greedily():
    model = FakeHF()
    run = hf_generation(model, [7, 8], 3)
    assert run() == [7, 8, 0, 1, 2]
    assert len(run.first_token.seconds) == 1
    assert model.kwargs["do_sample"] is False and model.kwargs["min_new_tokens"] == 3
    assert model.kwargs["attention_mask"].tolist() == [[1, 1]]


def test_groups_time_the_decode_steps_of_generations():
    model = tiny_llama()
    groups = Groups()
    runs, times = groups.timed(
        "g", lambda: {"ours": ours_generation(model, [1, 2], 4), "plain": lambda: None}, rounds=2
    )
    steps = groups.after_first["g"]
    assert set(steps) == {"ours"} and len(steps["ours"]) == 2  # "plain" has no first_token
    assert all(0 < s < t for s, t in zip(steps["ours"], times["ours"]))
    assert len(runs["ours"].first_token.seconds) == Groups.warmup + 2


def test_replay_steps_records_the_steps_and_counts_all_but_the_first_token(benchmark):
    from benchmarks.first_token import replay_steps

    info, what = replay_steps(benchmark, [0.5, 0.25, 1.0], n_new=8, prefill="the prefill")
    assert info == {"count": 7, "peak_mb": None}
    assert benchmark.stats.stats.data == [0.5, 0.25, 1.0]
    assert (
        what.startswith("the 7 decode steps after the first new token") and "(the prefill)" in what
    )
