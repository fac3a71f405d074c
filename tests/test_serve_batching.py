"""Continuous batching without HTTP: the slot cache, the batch-independent decoding step and the
scheduler (serve/slots.py, serve/decode.py, serve/scheduler.py) on a tiny random Llama.

The claim under test: a request's float32 logits, hence its greedy tokens, are the same bits
whether it decodes alone or beside other requests of other lengths in other slots (the layout of
serve/decode.py). Compared exactly (torch.equal), under 1 and 2 threads (the kernels' splits
depend on the thread count). Against fast/generate.py's single-prompt ``generate`` (a (1, C)
matrix-vector path, other float32 rounding, ~1e-6 relative) the tokens are compared as ids up to
the first step where generate's top-2 logit gap is below 1e-4: a tie that close may flip.
"""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch
import torch.nn.functional as F

from myllm101.config import GPTConfig
from myllm101.fast.generate import generate
from myllm101.fast.gpt import GPT
from myllm101.serve.decode import (
    batch_step,
    decode_rows_step,
    padded_rows,
    prefill,
    prefill_chunks,
    slots_for,
)
from myllm101.serve.engine import load_engine
from myllm101.serve.scheduler import Job, QueueFull, Scheduler, _held_back
from myllm101.serve.slots import SlotKVCache
from myllm101.serve.testing import tiny_model_dir
from tests.train_helpers import one_thread  # noqa: F401 (autouse fixture)

PROMPTS = [[5, 9, 31, 2], [7], [100, 101, 102, 103, 104, 105, 106, 107, 108], [42, 42], [3, 1, 4]]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return load_engine(str(tiny_model_dir(tmp_path_factory.mktemp("serve") / "tiny")), "fp32")


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def greedy_alone(model, prompt: list[int], steps: int, slot: int = 0) -> list[torch.Tensor]:
    """Logits of each step for ``prompt`` decoding alone in ``slot`` of a fresh cache."""
    cache = SlotKVCache.for_model(model, 8, 64)
    for s in range(slot):  # earlier slots hold something, as a server's would
        prefill(model, [1, 2, 3], cache, s)
    # the request alone: move it to slot 0 after the filler slots are freed
    logits = [prefill(model, prompt, cache, slot)]
    for s in range(slot):
        cache.free(s)
    cache.move(slot, 0)
    token = int(logits[-1].argmax())
    for _ in range(steps):
        logits.append(decode_rows_step(model, [token], cache)[0])
        token = int(logits[-1].argmax())
    return logits


def test_padded_rows_and_slots():
    assert [padded_rows(n, 16) for n in (1, 3, 4, 5, 16)] == [4, 4, 4, 8, 16]
    assert padded_rows(5, 6) == 6 and slots_for(5) == 8 and slots_for(16) == 16


def test_slot_cache_prefill_decode_move():
    cache = SlotKVCache(n_layer=1, n_slots=4, n_kv_heads=1, max_len=8, head_dim=2)
    cache.prefill_into(1)
    k = torch.arange(6.0).view(1, 1, 3, 2)
    k_all, _ = cache.layer(0).update(k, -k)
    cache.advance(3)
    assert torch.equal(k_all, k) and cache.lengths == [0, 3, 0, 0]
    cache.move(1, 0)
    assert cache.lengths == [3, 0, 0, 0] and torch.equal(cache.k[0, 0, :, :3], k[0])
    cache.decode_rows(rows=2, n_active=1)  # slot 0 writes position 3, padding slot 1 position 0
    new = torch.tensor([[[[9.0, 9.0]]], [[[7.0, 7.0]]]])  # (2, 1, 1, 2)
    k_all, _ = cache.update(0, new, new)
    cache.advance(1)
    assert k_all.shape == (2, 1, 4, 2)
    assert torch.equal(k_all[0, 0, 3], torch.tensor([9.0, 9.0]))
    assert torch.equal(cache.key_mask(), torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]]).bool())
    assert cache.lengths == [4, 0, 0, 0]  # the padding row stays empty
    with pytest.raises(ValueError, match="slot: expected 0 <= slot < 4, got 9"):
        cache.prefill_into(9)


def test_batched_logits_are_the_bits_of_one_request_alone(engine, threads):
    """Five requests of different lengths prefilled into slots 0..4, decoded together for 6
    steps; each row's logits == the same request decoding alone (exactly)."""
    model, steps = engine.model, 6
    alone = [greedy_alone(model, p, steps) for p in PROMPTS]
    cache = SlotKVCache.for_model(model, 8, 64)
    batched = [[prefill(model, p, cache, s)] for s, p in enumerate(PROMPTS)]
    tokens = [int(row[0].argmax()) for row in batched]
    for _ in range(steps):
        logits = decode_rows_step(model, tokens, cache)  # (5, V), padded to 8 rows
        for r in range(len(PROMPTS)):
            batched[r].append(logits[r])
        tokens = [int(lg.argmax()) for lg in logits]
    for r in range(len(PROMPTS)):
        for step, (a, b) in enumerate(zip(alone[r], batched[r])):
            assert torch.equal(a, b), f"prompt {r} step {step}: max diff {(a - b).abs().max()}"


@pytest.mark.parametrize("shape", [(64, 64), (64, 128), (128, 64), (64, 300), (576, 1536),
                                   (1536, 576), (576, 49152)])  # fmt: skip
def test_linear_rows_do_not_depend_on_a_multiple_of_four_rows(shape, threads):
    """The assumption batch_step rests on: with M a multiple of ROW_QUANTUM, F.linear gives a row
    the same bits whatever M is and wherever the row sits (the tiny model's and SmolLM2's
    shapes). M = 1 (a matrix-vector kernel) is the counter-example the padding avoids."""
    K, N = shape
    gen = torch.Generator().manual_seed(K + N)
    w = torch.randn(N, K, generator=gen) / K**0.5
    x = torch.randn(72, K, generator=gen)
    ref = torch.cat([F.linear(x[i : i + 4], w) for i in range(0, 72, 4)])  # M = 4 each
    for M in (8, 12, 16, 20, 36, 68, 72):
        for at in (0, 72 - M):
            got = F.linear(x[at : at + M], w)
            assert torch.equal(got, ref[at : at + M]), f"M={M} at {at}"
    one = F.linear(x[:1], w)  # the matrix-vector path: its bits may differ (why rows are padded)
    assert torch.allclose(one, ref[:1], rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def test_prefill_chunks_cut_a_prompt():
    assert prefill_chunks(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert prefill_chunks(3, None) == [(0, 3)] and prefill_chunks(8, 4) == [(0, 4), (4, 8)]
    with pytest.raises(ValueError, match="chunk: expected an int >= 1 or None, got 0"):
        prefill_chunks(3, 0)


LONG = [(7 * i + 3) % 250 + 5 for i in range(23)]  # longer than the chunks below


@pytest.mark.parametrize("chunk", [None, 4, 5, 16])
def test_chunked_prefill_matches_the_whole_prompt_forward(engine, chunk):
    """A prompt prefilled piece by piece (each piece attending to the earlier ones in its slot)
    gives the logits of one forward over the whole prompt: the same math, other GEMM shapes, so
    float32 rounding (1e-5 of the logits' scale); its greedy tokens match generate's."""
    model = engine.model
    cache = SlotKVCache.for_model(model, 8, 64)
    got = prefill(model, LONG, cache, 2, chunk)
    assert cache.lengths[2] == len(LONG)
    with torch.inference_mode():
        want = model(torch.tensor([LONG])).logits[0, -1]
    assert torch.allclose(got, want, rtol=0, atol=1e-5 * float(want.abs().max()))
    cache.move(2, 0)
    tokens = [int(got.argmax())]
    for _ in range(5):
        tokens.append(int(decode_rows_step(model, tokens[-1:], cache)[0].argmax()))
    tokens_match_generate(model, LONG, tokens)


@pytest.mark.parametrize("chunk", [4, 7])
def test_a_prompt_piece_riding_on_a_step_changes_no_bits(engine, threads, chunk):
    """The scheduler's turn: decoding rows and a prompt piece in one forward (batch_step).
    Each decoding row's logits == the same step without the piece; the prompt's logits after
    its last piece == the prompt prefilled with nothing else running (exactly)."""
    model = engine.model
    alone = SlotKVCache.for_model(model, 9, 64)
    want_prompt = prefill(model, LONG, alone, 8, chunk)
    plain, mixed = SlotKVCache.for_model(model, 9, 64), SlotKVCache.for_model(model, 9, 64)
    for cache in (plain, mixed):
        heads = [prefill(model, p, cache, s) for s, p in enumerate(PROMPTS)]
    tokens = [int(h.argmax()) for h in heads]
    got_prompt = None
    for start, end in prefill_chunks(len(LONG), chunk):
        want_rows, _ = batch_step(model, tokens, plain)
        rows, after = batch_step(model, tokens, mixed, LONG[start:end], 8, end == len(LONG))
        assert torch.equal(rows, want_rows), f"piece at {start}: decoding rows changed"
        got_prompt = after
        tokens = [int(lg.argmax()) for lg in rows]
    assert torch.equal(got_prompt, want_prompt)
    assert mixed.lengths[:5] == plain.lengths[:5] and mixed.lengths[8] == len(LONG)


def test_a_request_moved_to_another_slot_keeps_its_bits(engine):
    a = greedy_alone(engine.model, PROMPTS[0], 4, slot=0)
    b = greedy_alone(engine.model, PROMPTS[0], 4, slot=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def tokens_match_generate(model, prompt, new_ids) -> None:
    """new_ids == generate's greedy ids up to the first near-tie (top-2 gap < 1e-4)."""
    ref = generate(model, prompt, len(new_ids), temperature=0)[len(prompt) :]
    seq = list(prompt)
    for step, (want, got) in enumerate(zip(ref, new_ids)):
        with torch.inference_mode():
            logits = model(torch.tensor([seq]), logits_to_keep=1).logits[0, -1]
        top2 = logits.topk(2).values
        if float(top2[0] - top2[1]) < 1e-4:
            return  # a near-tie: float32 rounding may pick either
        assert got == want, f"step {step}: {got} != generate's {want}"
        seq.append(want)


def test_greedy_tokens_equal_generate(engine):
    model = engine.model
    for prompt in PROMPTS:
        logits = greedy_alone(model, prompt, 8)
        tokens_match_generate(model, prompt, [int(lg.argmax()) for lg in logits])


def test_gpt_goes_through_forward_with_a_key_mask():
    """A non-Llama model: the generic step (batched, masked) gives generate's logits within
    float32 tolerance (different kernels: 1e-5 relative to the logits' scale)."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=300, block_size=32, n_layer=2, n_head=2, n_embd=32)
    model = GPT(cfg).eval()
    cache = SlotKVCache.for_model(model, 4, 32)
    heads = [prefill(model, p, cache, s) for s, p in enumerate(PROMPTS[:3])]
    tokens = [int(h.argmax()) for h in heads]
    logits = decode_rows_step(model, tokens, cache)
    for r, p in enumerate(PROMPTS[:3]):
        with torch.inference_mode():
            want = model(torch.tensor([p + [tokens[r]]])).logits[0, -1]
        scale = want.abs().max()
        assert torch.allclose(logits[r], want, rtol=0, atol=1e-5 * float(scale))


def test_held_back_text():
    assert _held_back("ab<|e", ("<|end",)) == 3
    assert _held_back("abc", ("xyz",)) == 0
    assert _held_back("ab\ufffd", ()) == 1


def run_jobs(scheduler, jobs) -> list[tuple[str, str]]:
    """Submit every job at once; (text, finish_reason) of each when all are done."""
    results: list[list] = [[[], None] for _ in jobs]
    done = threading.Event()
    left = [len(jobs)]
    lock = threading.Lock()

    def callback(i):
        def on_event(kind, payload):
            if kind == "delta":
                results[i][0].append(payload)
            else:
                results[i][1] = payload
                with lock:
                    left[0] -= 1
                    if left[0] == 0:
                        done.set()

        return on_event

    with scheduler.pause():  # every job waiting: they all start in one turn
        for i, job in enumerate(jobs):
            scheduler.submit(job, callback(i))
    assert done.wait(60), "the scheduler did not finish"
    return [("".join(parts), reason) for parts, reason in results]


def test_scheduler_batches_and_matches_single_requests(engine):
    prompts = [engine.encode(t) for t in ("To be or", "Who is there", "question 7", "that", "x")]
    scheduler = Scheduler(engine, max_batch=4, max_queue=8).start()  # 5 jobs: one must wait
    try:
        singles = [run_jobs(scheduler, [Job(p, 10, temperature=0.0)])[0] for p in prompts]
        jobs = [Job(p, 10, temperature=0.0) for p in prompts]
        together = run_jobs(scheduler, jobs)
        assert scheduler.max_rows_seen == 4
        assert together == singles
        for p, job in zip(prompts, jobs):
            tokens_match_generate(engine.model, p, job.new_ids)
        # seeded sampling is reproducible under batching too
        seeded = lambda: [Job(p, 8, temperature=1.0, seed=i) for i, p in enumerate(prompts)]
        assert run_jobs(scheduler, seeded()) == run_jobs(scheduler, seeded())
    finally:
        scheduler.shutdown(grace=1.0)
    assert not scheduler.thread.is_alive()


def test_long_prompts_are_prefilled_a_piece_per_turn(engine):
    """Prompts longer than --prefill-chunk: a piece per turn, riding on the others' steps; every
    answer == the same request alone on this server, and a bad chunk size is refused."""
    with pytest.raises(ValueError, match="prefill_chunk: expected an int >= 1 or None, got 0"):
        Scheduler(engine, prefill_chunk=0)
    texts = ("To be or not to be, that is the question. Who is there?", "question 7 that is",
             "Who is there? To be", "x")  # fmt: skip
    prompts = [engine.encode(t) for t in texts]
    assert max(map(len, prompts)) > 8
    scheduler = Scheduler(engine, max_batch=4, prefill_chunk=4).start()
    try:
        singles = [run_jobs(scheduler, [Job(p, 8, temperature=0.0)])[0] for p in prompts]
        before = scheduler.prefill_chunks
        together = run_jobs(scheduler, [Job(p, 8, temperature=0.0) for p in prompts])
        assert together == singles
        assert scheduler.prefill_chunks - before == sum(-(-len(p) // 4) for p in prompts)
    finally:
        scheduler.shutdown(grace=1.0)


def test_stop_strings_are_cut_and_end_the_request(engine):
    scheduler = Scheduler(engine, max_batch=2).start()
    try:
        prompt = engine.encode("To be or")
        ((full, reason),) = run_jobs(scheduler, [Job(prompt, 12, temperature=0.0)])
        assert reason == "length" and len(full) > 4
        stop = full[2:4]
        ((cut, reason),) = run_jobs(scheduler, [Job(prompt, 12, temperature=0.0, stop=(stop,))])
        assert reason == "stop" and cut == full[: full.find(stop)]
    finally:
        scheduler.shutdown(grace=1.0)


def test_end_tokens_stop_a_request_unless_ignore_eos(engine):
    """A generated end token ends the request ("stop"); with ignore_eos (vLLM's extension, which
    the serve benchmark uses) it runs to max_tokens with the same tokens up to there."""
    prompt = engine.encode("To be or")
    scheduler = Scheduler(engine, max_batch=2).start()
    try:
        free = Job(prompt, 10, temperature=0.0)
        run_jobs(scheduler, [free])
    finally:
        scheduler.shutdown(grace=1.0)
    end = free.new_ids[3]  # made an end token: the 4th greedy token now ends the request
    ending = dataclasses.replace(engine, stop_ids=frozenset({end}))
    scheduler = Scheduler(ending, max_batch=2).start()
    try:
        stopped, ignoring = Job(prompt, 10, temperature=0.0), Job(prompt, 10, 0.0, ignore_eos=True)
        ((_, reason),) = run_jobs(scheduler, [stopped])
        assert reason == "stop" and stopped.new_ids == free.new_ids[: free.new_ids.index(end) + 1]
        ((_, reason),) = run_jobs(scheduler, [ignoring])
        assert reason == "length" and ignoring.new_ids == free.new_ids
    finally:
        scheduler.shutdown(grace=1.0)


def test_queue_full_cancel_and_shutdown(engine):
    scheduler = Scheduler(engine, max_batch=1, max_queue=1).start()
    events = []
    on_event = lambda kind, payload: events.append((kind, payload))
    prompt = engine.encode("that")
    with scheduler.pause():
        first = scheduler.submit(Job(prompt, 50, temperature=0.0), on_event)
        scheduler.submit(Job(prompt, 50, temperature=0.0), on_event)  # max_queue beyond 1 slot
        with pytest.raises(QueueFull, match="queue is full"):
            scheduler.submit(Job(prompt, 5), on_event)
        scheduler.cancel(first)
    scheduler.shutdown(grace=0.0)  # whatever is left is cancelled, the thread ends
    assert not scheduler.thread.is_alive()
    assert first.finish_reason in (None, "cancelled")
    assert events[-1] in (("done", "cancelled"), ("done", "length"))
    assert scheduler.cache.lengths == [0] * scheduler.cache.n_slots  # every slot freed


def test_a_failing_request_ends_alone(engine):
    """A prompt the model refuses (an id past its vocabulary) errors its own job only."""
    scheduler = Scheduler(engine, max_batch=2).start()
    try:
        events = []
        bad = scheduler.submit(
            Job([10**6], 3), lambda kind, payload: events.append((kind, payload))
        )
        ((text, reason),) = run_jobs(scheduler, [Job(engine.encode("that"), 4, temperature=0.0)])
        assert reason == "length" and bad.finish_reason == "error"
        assert events[0][0] == "error" and "ids: expected every id in [0," in events[0][1]
    finally:
        scheduler.shutdown(grace=1.0)


def test_cli_defaults_agree_with_the_scheduler(monkeypatch):
    """serve/cli.py restates the chunk default (it avoids importing torch) and picks threads:
    every core but one, at least 1, at most torch's own default."""
    from myllm101.serve import cli, scheduler

    assert cli.DEFAULT_PREFILL_CHUNK == scheduler.DEFAULT_PREFILL_CHUNK
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)  # torch's default: 8 cores
    for cores, want in ((1, 1), (2, 1), (4, 3), (64, 8)):
        affinity = set(range(cores))
        monkeypatch.setattr(cli.os, "sched_getaffinity", lambda pid, a=affinity: a, raising=False)
        assert cli.default_threads() == want, cores


def test_an_int8_model_with_a_tied_int8_embedding_serves_generates_tokens(tmp_path):
    """The batch step looks tokens up in the int8 table the quantized head shares (serve/decode.py
    through blocks.embed): a served int8 request gives generate's greedy tokens (near ties
    excepted, see tokens_match_generate)."""
    from myllm101.quant import quantize, save_quantized
    from myllm101.train.checkpoint import load_model

    src = tiny_model_dir(tmp_path / "tiny")
    model, tok, cfg = load_model(src)
    quantize(model, "int8")
    assert model.quantization["tied"] == {"embed_tokens": "lm_head"}
    save_quantized(model, tmp_path / "q8", cfg, tok)
    engine = load_engine(str(tmp_path / "q8"), "fp32")
    scheduler = Scheduler(engine, max_batch=4, max_queue=8).start()
    try:
        prompts = [engine.encode(t) for t in ("To be or", "Who is there")]
        jobs = [Job(p, 8, temperature=0.0) for p in prompts]
        run_jobs(scheduler, jobs)
        for p, job in zip(prompts, jobs):
            assert len(job.new_ids) == 8
            tokens_match_generate(engine.model, p, job.new_ids)
    finally:
        scheduler.shutdown(grace=1.0)
