"""Behaviour of fast/generate.py: stop tokens and strings, stream == generate, seeded sampling,
the KV cache's bookkeeping, bad input"""

import pytest
import torch

from myllm101.config import get_preset
from myllm101.fast.generate import generate, generation_steps, stream
from myllm101.fast.gpt import GPT
from myllm101.fast.kv_cache import KVCache
from myllm101.fast.llama import Llama
from myllm101.fast.timings import Timings

MODELS = {"gpt": (GPT, "gpt-tiny"), "llama": (Llama, "llama-tiny")}  # block_size 16, vocab 97


def make_model(kind: str, seed: int = 1) -> torch.nn.Module:
    cls, preset = MODELS[kind]
    torch.manual_seed(seed)
    model = cls(get_preset(preset)).eval()
    with torch.no_grad():  # away from init: peaked, varied next-token distributions
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def decode(ids: list[int]) -> str:
    """A toy detokenizer: id i -> the letter chr(ord('a') + i % 26)."""
    return "".join(chr(ord("a") + i % 26) for i in ids)


PROMPT = [3, 1, 4, 1, 5]


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_stop_token_ends_generation_and_is_kept(kind):
    model = make_model(kind)
    full = generate(model, PROMPT, 10, temperature=0)
    new = full[len(PROMPT) :]
    stop = new[3]
    first = new.index(stop)
    got = generate(model, PROMPT, 10, temperature=0, stop_tokens=[stop])
    assert got == PROMPT + new[: first + 1]
    # in a batch, only the row that emitted the stop token ends; the others run on
    other = [7, 7, 2]
    batch = generate(model, [PROMPT, other], 10, temperature=0, stop_tokens=[stop])
    assert batch[0] == got
    alone = generate(model, other, 10, temperature=0, stop_tokens=[stop])
    assert batch[1] == alone


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_stop_string_ends_generation(kind):
    model = make_model(kind)
    full = generate(model, PROMPT, 10, temperature=0)
    text = decode(full[len(PROMPT) :])
    target = text[4:6]  # two letters completed by the 6th new token (or earlier)
    got = generate(model, PROMPT, 10, temperature=0, stop_strings=[target], decode=decode)
    n = next(i for i in range(1, 11) if target in text[:i])  # first prefix holding the string
    assert got == full[: len(PROMPT) + n]
    assert target in decode(got[len(PROMPT) :]) and target not in decode(got[len(PROMPT) : -1])


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_stream_yields_what_generate_returns(kind):
    model = make_model(kind)
    kw = dict(temperature=0.9, top_k=20, top_p=0.9, seed=5)
    single = list(stream(model, PROMPT, 8, **kw))
    assert PROMPT + single == generate(model, PROMPT, 8, **kw)
    assert all(isinstance(t, int) for t in single)
    prompts = [PROMPT, [9], [2, 6, 5]]
    steps = list(stream(model, prompts, 8, stop_tokens=[single[2]], **kw))
    rows = [list(p) for p in prompts]
    for step in steps:
        for row, token in enumerate(step):
            if token is not None:
                rows[row].append(token)
    assert rows == generate(model, prompts, 8, stop_tokens=[single[2]], **kw)


def test_stream_is_lazy():
    model = make_model("gpt")
    it = stream(model, PROMPT, 8, temperature=0)
    first = next(it)
    assert first == generate(model, PROMPT, 1, temperature=0)[-1]


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_seeded_sampling_is_reproducible(kind):
    model = make_model(kind)
    prompts = [PROMPT, [8, 8]]
    a = generate(model, prompts, 10, temperature=1.5, seed=123)
    assert a == generate(model, prompts, 10, temperature=1.5, seed=123)
    others = [generate(model, prompts, 10, temperature=1.5, seed=s) for s in range(124, 128)]
    assert any(o != a for o in others)  # the seed matters (4 more seeds all equal: ~impossible)
    # the global RNG does not disturb a seeded generator
    torch.manual_seed(0)
    torch.rand(7)
    assert a == generate(model, prompts, 10, temperature=1.5, seed=123)


def test_top_k_1_is_greedy_and_cache_is_optional():
    model = make_model("llama")
    greedy = generate(model, PROMPT, 10, temperature=0)
    assert generate(model, PROMPT, 10, temperature=1.0, top_k=1, seed=0) == greedy
    assert generate(model, PROMPT, 10, temperature=0, use_cache=False) == greedy
    assert generate(model, torch.tensor(PROMPT), 10, temperature=0) == greedy


def test_tensor_batch_with_attention_mask_equals_list_of_prompts():
    model = make_model("gpt")
    prompts = [PROMPT, [6, 2]]
    ids = torch.tensor([PROMPT, [0, 0, 0, 6, 2]])
    mask = torch.tensor([[1] * 5, [0, 0, 0, 1, 1]])
    got = generate(model, ids, 6, temperature=0, attention_mask=mask)
    assert got == generate(model, prompts, 6, temperature=0)


def test_generation_restores_training_mode_and_bf16_autocast_runs():
    model = make_model("gpt").train()
    out = generate(model, PROMPT, 4, temperature=0)
    assert model.training and len(out) == len(PROMPT) + 4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        steps = list(generation_steps(model, [PROMPT, [1]], 4, temperature=0.7, seed=0))
    assert steps[0].logits.dtype == torch.float32  # bf16 logits are sampled in float32
    assert len(steps) == 4


def test_kv_cache_bookkeeping():
    model = make_model("llama")
    cfg = model.cfg
    cache = KVCache.for_model(model, batch_size=2, max_len=6)
    assert cache.shape == (cfg.n_layer, 2, cfg.n_kv_head, 6, cfg.head_dim)
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    model(ids, kv_cache=cache)
    assert cache.length == 3 and cache.k.shape == cache.shape
    with pytest.raises(ValueError, match=r"input_ids: expected a sequence length <= .*"):
        model(torch.zeros(2, 14, dtype=torch.long), kv_cache=cache)  # 3 + 14 > block_size 16
    with pytest.raises(ValueError, match=r"kv_cache: expected at most max_len=6 tokens, got 3 cached \+ 4 new"):  # fmt: skip
        model(torch.zeros(2, 4, dtype=torch.long), kv_cache=cache)
    cache.reset()
    with pytest.raises(ValueError, match=r"kv_cache: expected batch size 1 \(input_ids rows\), got 2"):  # fmt: skip
        model(torch.zeros(1, 2, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match=r"attention_mask: expected shape \(2, 2\), got \(2, 5\)"):
        model(torch.zeros(2, 2, dtype=torch.long), torch.ones(2, 5), kv_cache=cache)
    with pytest.raises(ValueError, match=r"k: expected shape \(2, \*, \*, 4\), got \(2, 2, 1, 3\)"):
        cache.update(0, torch.zeros(2, 2, 1, 3), torch.zeros(2, 2, 1, 3))
    with pytest.raises(ValueError, match=r"max_len: expected a positive value, got 0"):
        KVCache(2, 1, 1, 0, 4)


def test_position_ids_are_checked():
    llama, gpt = make_model("llama"), make_model("gpt")
    ids = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"position_ids: expected shape \(1, 3\), got \(1, 2\)"):
        llama(ids, position_ids=torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"position_ids: expected values in \[0, 16\) .*got min 0, max 16"):  # fmt: skip
        llama(ids, position_ids=torch.tensor([[0, 1, 16]]))
    with pytest.raises(ValueError, match=r"expected every id in \[0, 16\).*got id 16"):
        gpt(ids, position_ids=torch.tensor([[0, 1, 16]]))
    with pytest.raises(ValueError, match=r"position_ids: expected dtype int"):
        gpt(ids, position_ids=torch.zeros(1, 3))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompts=[]), r"prompts: expected at least one prompt, got an empty list"),
        (
            dict(prompts=[[1], []]),
            r"prompts\[1\]: expected at least one token, got an empty prompt",
        ),  # fmt: skip
        (dict(prompts=list(range(17))), r"prompt: expected at most block_size=16 tokens .*got 17"),
        (
            dict(max_new_tokens=12),
            r"max_new_tokens: expected prompt length \+ max_new_tokens <= block_size=16, got 5 \+ 12",
        ),  # fmt: skip
        (dict(max_new_tokens=0), r"max_new_tokens: expected an int >= 1, got 0"),
        (dict(temperature=-0.5), r"temperature: expected a value >= 0 \(0 = greedy\), got -0.5"),
        (dict(top_k=0), r"top_k: expected an int >= 1 or None, got 0"),
        (dict(top_k=2.0), r"top_k: expected an int >= 1 or None, got 2.0"),
        (dict(top_p=0.0), r"top_p: expected a value in \(0, 1\] or None, got 0.0"),
        (dict(top_p=1.2), r"top_p: expected a value in \(0, 1\] or None, got 1.2"),
        (dict(repetition_penalty=0.0), r"repetition_penalty: expected a positive value, got 0.0"),
        (dict(stop_strings=["x"]), r"stop_strings: expected a decode function .*got decode=None"),
        (
            dict(prompts=[[1, 2]], attention_mask=torch.ones(1, 2)),
            r"attention_mask: expected only with a \(B, T\) input_ids tensor",
        ),  # fmt: skip
        (
            dict(
                prompts=torch.ones(2, 3, dtype=torch.long),
                attention_mask=torch.tensor([[1, 1, 0], [1, 1, 1]]),
            ),
            r"attention_mask: expected left padding .*got a 0 after a 1",
        ),  # fmt: skip
        (
            dict(prompts=torch.ones(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 4)),
            r"attention_mask: expected shape \(2, 3\), got \(2, 4\)",
        ),  # fmt: skip
        (dict(prompts=torch.ones(2, 3)), r"input_ids: expected dtype int"),
        (dict(prompts=[200]), r"ids: expected every id in \[0, 97\).*got id 200"),
    ],
)
def test_bad_input_raises(kwargs, message):
    model = make_model("gpt")
    args = dict(prompts=PROMPT, max_new_tokens=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        generate(model, **args)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_timings_count_the_tokens_and_time_the_first_step_apart(kind):
    model = make_model(kind)
    t = Timings()
    out = generate(model, PROMPT, 6, temperature=0, timings=t)
    assert out == generate(model, PROMPT, 6, temperature=0)  # the clock changes nothing
    assert (t.prompt_tokens, t.steps, t.new_tokens, t.first_step_tokens) == (5, 6, 6, 1)
    assert 0 < t.first_token_s < t.total_s
    rate = t.decode_tokens_per_s()
    assert rate == pytest.approx(5 / (t.total_s - t.first_token_s))
    assert t.summary().startswith("prompt 5 tokens: first new token after ")
    assert "6 new tokens in " in t.summary() and "the 5 after the first step at " in t.summary()
    # a batch, left-padded: every row's real prompt tokens and new tokens; a row that stops early
    # (its stop token) adds fewer
    full = generate(model, [[2, 3], PROMPT], 5, temperature=0)
    stop = full[1][len(PROMPT)]  # row 1's first new token: it ends there
    t = Timings()
    rows = generate(model, [[2, 3], PROMPT], 5, temperature=0, stop_tokens=[stop], timings=t)
    assert t.prompt_tokens == 7 and t.first_step_tokens == 2
    assert t.new_tokens == sum(len(r) for r in rows) - 7 and t.steps == max(len(rows[0]) - 2, 1)


def test_timings_of_a_single_token_have_no_decode_rate():
    t = Timings(prompt_tokens=3, steps=1, new_tokens=1, first_step_tokens=1, first_token_s=0.5,
                total_s=0.5)  # fmt: skip
    assert t.decode_tokens_per_s() is None
    assert t.summary() == "prompt 3 tokens: first new token after 0.50 s; 1 new token in 0.50 s"
    t = Timings(prompt_tokens=5, total_s=0.125)  # nothing generated (a caller's own loop)
    assert t.decode_tokens_per_s() is None
    assert t.summary() == "prompt 5 tokens: no new tokens (0.12 s)"
    t = Timings(4, 3, 3, 1, first_token_s=0.25, total_s=1.25)
    assert t.decode_tokens_per_s() == 2.0
    assert t.summary().endswith("the 2 after the first step at 2.0 tokens/s")
