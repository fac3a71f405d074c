"""Continuous batching: one loop, in one background thread, decodes every active request together.

    scheduler = Scheduler(engine, max_batch=16, max_queue=64, prefill_chunk=64).start()
    job = scheduler.submit(Job(prompt_ids, max_tokens=32, temperature=0.0), on_event)
    ...                       # on_event("delta", "text") ... on_event("done", "stop" | "length")
    scheduler.cancel(job)     # a client went away: its slot is free before the next step
    scheduler.shutdown(grace=5.0)

Each turn of the loop:
1. drop cancelled requests (their slots are freed at once; the last slot moves into the hole);
2. ONE forward (serve/decode.py ``batch_step``): a decoding step for all active requests, one
   token each, and riding on it at most one prefill piece: the next ``prefill_chunk`` tokens of
   the prompt being prefilled (into a slot of its own past the decoding ones), or, if none is,
   of the first waiting request when a slot is free. After its last piece the request's first
   token is chosen and it moves into the next decoding slot (it decodes from the next turn);
3. a request that emitted an end token, hit a stop string, its max_tokens or the context leaves.

Why: a prefill that runs alone between two decoding steps makes every active stream wait for
it, and on a CPU a short prompt's prefill costs about a whole step (reading every weight once
dominates both). Before, each turn admitted every waiting request that way, so a burst of new
requests stalled the others for several prefills. Riding on the step, a piece adds only its own
arithmetic; chunking bounds that for long prompts. A prompt's pieces are cut the same way
whatever else runs (decode.py ``prefill_chunks``), and ``batch_step`` keeps every row's bits
independent of the others, so a request's greedy tokens do not depend on the load.

The HTTP side (serve/app.py, asyncio) never touches the model: it submits a Job with a callback
and receives events through it; the callback is called from this thread and must only hand the
event over (``loop.call_soon_threadsafe``).

Text: a request's new tokens are decoded as a whole after every token and the new part sent as
a "delta". Text that could still change is held back: a trailing U+FFFD (a UTF-8 character cut
between tokens) and a tail that could be the start of a stop string. A stop string ends the
request and is cut from the text (OpenAI's rule: the stop sequence is not returned).
"""

from __future__ import annotations

import collections
import contextlib
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from myllm101.fast.generate import choose_next_token
from myllm101.serve.decode import batch_step, prefill_chunks, slots_for
from myllm101.serve.engine import Engine
from myllm101.serve.slots import SlotKVCache

EventCallback = Callable[[str, object], None]
DEFAULT_PREFILL_CHUNK = 16  # prompt tokens per turn (docs/serve/README.md: measured)


class QueueFull(Exception):
    """More requests are waiting than ``max_queue`` allows (HTTP 429)."""


class ShuttingDown(Exception):
    """The scheduler takes no new requests (HTTP 503)."""


@dataclass
class Job:
    """One generation request. temperature 0 = greedy; top_p 1 = the whole distribution."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # the end tokens do not end it (stop strings and max_tokens still do)
    # filled in by the scheduler
    on_event: EventCallback | None = None
    new_ids: list[int] = field(default_factory=list)
    sent: int = 0  # characters of text already sent
    chunks: list[tuple[int, int]] = field(default_factory=list)  # prompt pieces left to prefill
    generator: torch.Generator | None = None
    cancelled: bool = False
    finish_reason: str | None = None


class Scheduler:
    """The continuous-batching loop over an Engine (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        max_batch: int = 16,
        max_queue: int = 64,
        prefill_chunk: int | None = DEFAULT_PREFILL_CHUNK,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch: expected an int >= 1, got {max_batch}")
        if max_queue < 0:
            raise ValueError(f"max_queue: expected an int >= 0, got {max_queue}")
        if prefill_chunk is not None and prefill_chunk < 1:
            raise ValueError(f"prefill_chunk: expected an int >= 1 or None, got {prefill_chunk}")
        self.engine, self.max_batch, self.max_queue = engine, max_batch, max_queue
        self.prefill_chunk = prefill_chunk
        # the decoding slots (padded rows included) and, last, the slot a prompt is prefilled in
        n_slots = slots_for(max_batch) + 1
        self.cache = SlotKVCache.for_model(engine.model, n_slots, engine.context)
        self.fill_slot = n_slots - 1  # never a decoding row: padded_rows <= slots_for(max_batch)
        self.filling: Job | None = None  # the request being prefilled, chunk by chunk
        self.active: list[Job] = []  # active[i] decodes in slot i
        self.waiting: collections.deque[Job] = collections.deque()
        self.lock = threading.Condition()
        self.thread: threading.Thread | None = None
        self.accepting = True
        self.stopping = False
        self.paused = False  # tests: hold the loop between turns (``pause``)
        self.steps = 0  # decoding steps run (tests, metrics)
        self.prefill_chunks = 0  # prompt pieces prefilled (tests, metrics)
        self.vocab_size = engine.model.cfg.vocab_size
        self.max_rows_seen = 0  # the largest batch a step has decoded

    # ---- the HTTP side ------------------------------------------------------------------------

    def start(self) -> Scheduler:
        self.thread = threading.Thread(target=self._loop, name="myllm101-scheduler", daemon=True)
        self.thread.start()
        return self

    def submit(self, job: Job, on_event: EventCallback) -> Job:
        """Queue ``job``; raises QueueFull (429) or ShuttingDown (503)."""
        job.on_event = on_event
        if job.seed is not None:
            job.generator = torch.Generator().manual_seed(job.seed)
        elif job.temperature > 0:
            job.generator = torch.Generator().manual_seed(random.getrandbits(63))
        with self.lock:
            if not self.accepting:
                raise ShuttingDown("the server is shutting down")
            free = max(0, self.max_batch - self._busy())  # these join at the next turns
            if len(self.waiting) >= self.max_queue + free:
                raise QueueFull(
                    f"the queue is full ({len(self.waiting)} requests waiting, at most "
                    f"{self.max_queue} beyond the free slots); retry later"
                )
            self.waiting.append(job)
            self.lock.notify()
        return job

    def cancel(self, job: Job) -> None:
        """Stop ``job`` (its client went away): it leaves before the next step."""
        with self.lock:
            job.cancelled = True
            self.lock.notify()

    def shutdown(self, grace: float = 5.0) -> None:
        """Take no new requests, let active ones finish for up to ``grace`` seconds, then end
        the rest (finish_reason "cancelled") and stop the thread."""
        with self.lock:
            self.accepting = False
            self.lock.notify()
            self.lock.wait_for(
                lambda: not self.active and not self.waiting and self.filling is None,
                timeout=grace,
            )
            self.stopping = True
            self.lock.notify()
        if self.thread is not None:
            self.thread.join(timeout=grace + 30)

    @contextlib.contextmanager
    def pause(self):
        """Hold the loop between turns while inside (tests: a deterministic queue)."""
        with self.lock:
            self.paused = True
        try:
            yield self
        finally:
            with self.lock:
                self.paused = False
                self.lock.notify_all()

    def stats(self) -> dict:
        with self.lock:
            waiting = len(self.waiting) + (self.filling is not None)  # no token sent yet
            return {"active": len(self.active), "waiting": waiting, "steps": self.steps}

    # ---- the loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                with self.lock:
                    self.lock.wait_for(
                        lambda: (
                            self.stopping
                            or (not self.paused and (self.active or self.waiting or self.filling))
                        ),
                        timeout=1.0,
                    )
                    if self.paused and not self.stopping:
                        continue
                    if self.stopping:
                        break
                    self._drop_cancelled()
                    if self.filling is None:
                        self.filling = self._take_waiting()
                    job = self.filling
                if job is not None or self.active:
                    self._turn(job)
                with self.lock:
                    self.lock.notify_all()  # shutdown() waits for an empty batch
        except Exception as e:  # a bug or an out-of-memory: every request gets the error
            with self.lock:
                for job in self._all_jobs():
                    self._emit(job, "error", f"{type(e).__name__}: {e}")
                self.active.clear()
                self.waiting.clear()
                self.filling = None
                self.accepting = False
            raise
        finally:
            with self.lock:
                for job in self._all_jobs():
                    self._finish(job, "cancelled")
                self.active.clear()
                self.waiting.clear()
                self.filling = None

    def _busy(self) -> int:
        """Slots taken: the decoding requests and the one being prefilled."""
        return len(self.active) + (self.filling is not None)

    def _all_jobs(self) -> list[Job]:
        filling = [] if self.filling is None else [self.filling]
        return [*self.active, *filling, *self.waiting]

    def _take_waiting(self) -> Job | None:
        """Under the lock: the first waiting job (cancelled ones dropped) if a slot is free."""
        while self.waiting and self._busy() < self.max_batch:
            job = self.waiting.popleft()
            if not job.cancelled:
                job.chunks = prefill_chunks(len(job.prompt_ids), self.prefill_chunk)
                return job
        return None

    def _drop_cancelled(self) -> None:
        for i in reversed(range(len(self.active))):
            if self.active[i].cancelled:
                self._remove(i)
        if self.filling is not None and self.filling.cancelled:
            self.cache.free(self.fill_slot)
            self.filling = None

    def _remove(self, i: int) -> None:
        """Free slot i; the last active request moves into it (slots stay packed)."""
        last = len(self.active) - 1
        if i != last:
            self.cache.move(last, i)
            self.active[i] = self.active[last]
        self.cache.free(last)
        self.active.pop()

    def _turn(self, filling: Job | None) -> None:
        """One decoding step for every active job and, riding on it, the next piece of
        ``filling``'s prompt (serve/decode.py ``batch_step``); after its last piece the job's
        first token is chosen and it moves into the next decoding slot."""
        piece, last = None, False
        if filling is not None:
            start, end = filling.chunks.pop(0)
            piece, last = filling.prompt_ids[start:end], not filling.chunks
            if start == 0:
                self.cache.free(self.fill_slot)
            bad = [i for i in piece if not 0 <= i < self.vocab_size]
            if bad:  # this prompt's problem (the HTTP side checked it): this job only
                self._fail_filling(
                    filling, f"ValueError: ids: expected every id in [0, {self.vocab_size}), "
                    f"got {bad[0]}"
                )  # fmt: skip
                piece, last = None, False
        tokens = [job.new_ids[-1] for job in self.active]
        if not tokens and piece is None:
            return
        logits, first = batch_step(
            self.engine.model, tokens, self.cache, piece, self.fill_slot, last
        )
        if tokens:
            self.steps += 1
            self.max_rows_seen = max(self.max_rows_seen, len(tokens))
        if piece is not None:
            self.prefill_chunks += 1
        done = [i for i, job in enumerate(self.active) if self._take_token(job, logits[i : i + 1])]
        for i in reversed(done):
            self._remove(i)
        if last:
            with self.lock:  # stats() and shutdown() read these
                slot = len(self.active)
                self.cache.move(self.fill_slot, slot)
                self.active.append(filling)
                self.filling = None
            if self._take_token(filling, first[None]):
                self._remove(slot)

    def _fail_filling(self, job: Job, message: str) -> None:
        with self.lock:
            self.cache.free(self.fill_slot)
            self.filling = None
        job.finish_reason = "error"
        self._emit(job, "error", message)

    def _take_token(self, job: Job, logits: torch.Tensor) -> bool:
        """Choose ``job``'s next token from logits (1, V), send its text; True when it is done.
        An error here (its text) ends this job only."""
        if job.cancelled:
            return True
        try:
            return self._next_token(job, logits)
        except Exception as e:
            job.finish_reason = "error"
            self._emit(job, "error", f"{type(e).__name__}: {e}")
            return True

    def _next_token(self, job: Job, logits: torch.Tensor) -> bool:
        token = int(choose_next_token(logits, job.temperature, None, job.top_p, job.generator))
        job.new_ids.append(token)
        engine = self.engine
        text = engine.decode(job.new_ids)
        reason = None
        if token in engine.stop_ids and not job.ignore_eos:
            reason = "stop"
        cut = min((text.find(s) for s in job.stop if s in text), default=-1)
        if cut >= 0:
            text, reason = text[:cut], "stop"
        if reason is None and (
            len(job.new_ids) >= job.max_tokens
            or len(job.prompt_ids) + len(job.new_ids) >= engine.context
        ):
            reason = "length"
        ready = len(text) if reason else len(text) - _held_back(text, job.stop)
        if ready > job.sent:
            self._emit(job, "delta", text[job.sent : ready])
            job.sent = ready
        if reason:
            self._finish(job, reason)
        return reason is not None

    def _finish(self, job: Job, reason: str) -> None:
        if job.finish_reason is None:
            job.finish_reason = reason
            self._emit(job, "done", reason)

    @staticmethod
    def _emit(job: Job, kind: str, payload) -> None:
        try:
            job.on_event(kind, payload)
        except Exception:  # the client's loop is gone: nothing to tell
            job.cancelled = True


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Characters at the end of ``text`` that may still change: U+FFFD (half a UTF-8 character)
    and the longest tail that begins a stop string. "ab<|e", ("<|end",) -> 3."""
    n = len(text) - len(text.rstrip("\ufffd"))
    tail = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                tail = max(tail, k)
                break
    return max(n, tail)
