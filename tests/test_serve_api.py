"""``myllm101 serve`` over HTTP: the official ``openai`` client against a live uvicorn server
(serve/testing.py ``LiveServer``: 127.0.0.1, a free port, started in a thread, ready on /health)
serving a tiny random Llama run directory; one slow test on the real SmolLM2.

Answers are compared as token-for-token equal texts: the server's batched greedy answers are
the bits of its single-request ones (serve/decode.py; tests/test_serve_batching.py checks the
logits themselves).
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import numpy as np
import openai
import pytest

from myllm101.serve import cli as serve_cli
from myllm101.serve.app import ServeSettings, create_app
from myllm101.serve.engine import load_engine
from myllm101.serve.testing import LiveServer, tiny_model_dir
from tests.train_helpers import one_thread  # noqa: F401 (autouse fixture)

KEY = "test-key"
CAP = 32


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("serve_api") / "tiny")


@pytest.fixture(scope="module")
def engine(model_dir):
    return load_engine(str(model_dir), "fp32")


@pytest.fixture(scope="module")
def server(engine):
    settings = ServeSettings(api_key=KEY, max_batch=16, max_tokens_cap=CAP, embed_dtype="fp32")
    app = create_app(engine, settings)
    with LiveServer(app) as live:
        live.app = app
        yield live


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def chat_text(client, content: str, **kw) -> str:
    r = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": content}], temperature=0, **kw
    )
    return r.choices[0].message.content


def stream_text(client, content: str, **kw) -> tuple[str, str]:
    """(assembled text, finish_reason) of a streaming chat."""
    parts, finish = [], None
    stream = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": content}], temperature=0,
        stream=True, **kw,
    )  # fmt: skip
    for i, chunk in enumerate(stream):
        choice = chunk.choices[0]
        assert chunk.object == "chat.completion.chunk"
        if i == 0:
            assert choice.delta.role == "assistant"
        parts.append(choice.delta.content or "")
        finish = choice.finish_reason or finish
    return "".join(parts), finish


# ---- the endpoints ------------------------------------------------------------------------------


def test_health_and_models(server, client):
    health = httpx.get(server.url + "/health").json()  # no key needed
    assert health["status"] == "ok" and health["model"] == "tiny"
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "tiny" and "minilm" in ids


def test_completion_and_usage(client, engine):
    r = client.completions.create(model="tiny", prompt="To be or", max_tokens=9, temperature=0)
    choice = r.choices[0]
    assert r.object == "text_completion" and choice.finish_reason == "length"
    assert r.usage.prompt_tokens == len(engine.encode("To be or"))
    assert r.usage.completion_tokens == 9 and r.usage.total_tokens == r.usage.prompt_tokens + 9
    again = client.completions.create(
        model="tiny", prompt=["To be or"], max_tokens=9, temperature=0
    )
    assert again.choices[0].text == choice.text  # a list of one prompt is the same request
    default = client.completions.create(model="tiny", prompt="To be or", temperature=0)
    assert default.usage.completion_tokens == 16 or default.choices[0].finish_reason == "stop"


def test_completion_stream_assembles(client):
    want = client.completions.create(model="tiny", prompt="Who is", max_tokens=12, temperature=0)
    stream = client.completions.create(
        model="tiny", prompt="Who is", max_tokens=12, temperature=0, stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == want.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"
    with_usage = list(client.completions.create(
        model="tiny", prompt="Who is", max_tokens=12, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ))  # fmt: skip
    assert with_usage[-1].choices == [] and with_usage[-1].usage == want.usage
    assert [c.choices for c in with_usage[:-1]] == [c.choices for c in chunks]


def test_chat_and_streaming_chat_agree(client):
    for content in ("Who is there?", "that is the question", "To be"):
        text = chat_text(client, content, max_tokens=20)
        streamed, finish = stream_text(client, content, max_tokens=20)
        assert streamed == text and finish in ("stop", "length")


def test_raw_stream_ends_with_done(server):
    body = {"model": "tiny", "prompt": "x", "max_tokens": 3, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:  # fmt: skip
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] == "length"


def test_stop_and_seed(client):
    full = client.completions.create(model="tiny", prompt="that", max_tokens=16, temperature=0)
    text = full.choices[0].text
    stop = text[3:5]
    cut = client.completions.create(
        model="tiny", prompt="that", max_tokens=16, temperature=0, stop=[stop]
    )
    assert cut.choices[0].text == text[: text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    seeded = [
        client.completions.create(
            model="tiny", prompt="that", max_tokens=16, temperature=1.0, top_p=0.9, seed=7
        )
        .choices[0]
        .text  # fmt: skip
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1]


def test_embeddings_equal_the_embed_command(client, capsys):
    from myllm101.hub import cli as hub_cli

    texts = ["To be, or not to be", "a short one", "Who's there?"]
    assert hub_cli.run(["embed", "--dtype", "fp32", *texts]) == 0
    want = np.array(json.loads(capsys.readouterr().out))  # rounded to 7 decimals
    got_b64 = client.embeddings.create(model="minilm", input=texts)  # the client asks base64
    got = np.array([d.embedding for d in got_b64.data])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    floats = client.embeddings.create(model="minilm", input=texts[0], encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, want[0], rtol=0, atol=1e-6)
    assert got_b64.usage.prompt_tokens > len(texts)


# ---- errors ---------------------------------------------------------------------------------------


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def post(server, path: str, body, key: str | None = KEY, raw: bytes | None = None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if raw is not None:
        headers["Content-Type"] = "application/json"
        return httpx.post(server.url + path, content=raw, headers=headers)
    return httpx.post(server.url + path, json=body, headers=headers)


def test_bad_json_and_bad_parameters_are_400(server):
    r = post(server, "/v1/chat/completions", None, raw=b'{"model": "tiny", "messages": [')
    assert r.status_code == 400 and error_of(r)["code"] == "invalid_json"
    r = post(server, "/v1/chat/completions", {"model": "tiny"})
    assert r.status_code == 400 and error_of(r)["param"] == "messages"
    bad = {"model": "tiny", "prompt": "x", "temperature": 5}
    r = post(server, "/v1/completions", bad)
    err = error_of(r)
    assert r.status_code == 400 and err["param"] == "temperature" and "got 5" in err["message"]
    assert err["type"] == "invalid_request_error"
    r = post(server, "/v1/completions", {"model": "tiny", "prompt": ["a", "b"]})
    assert r.status_code == 400 and "list of one string" in error_of(r)["message"]
    r = post(server, "/v1/completions", {"model": "tiny", "prompt": "x", "n": 2})
    assert r.status_code == 400 and error_of(r)["param"] == "n"


def test_openai_client_sees_the_errors(client, server):
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="tiny", prompt="x", temperature=3)
    with pytest.raises(openai.NotFoundError, match="model 'gpt-4' not found") as e:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 404 and e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.UnprocessableEntityError, match=f"at most {CAP}.*got 64") as e:
        client.completions.create(model="tiny", prompt="x", max_tokens=64)
    assert e.value.body["param"] == "max_tokens"
    wrong = openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="wrong API key"):
        wrong.models.list()
    with pytest.raises(openai.NotFoundError, match="embedding model 'tiny' not found"):
        client.embeddings.create(model="tiny", input="x")


def test_missing_key_is_401_before_the_body_is_read(server):
    r = post(server, "/v1/completions", None, key=None, raw=b"not json")
    err = error_of(r)
    assert r.status_code == 401 and err["code"] == "invalid_api_key" and "missing" in err["message"]
    assert httpx.get(server.url + "/v1/models").status_code == 401


def test_prompt_longer_than_the_context_is_400(client, engine):
    long = "To be or not to be, that is the question. " * 40
    assert len(engine.encode(long)) > engine.context
    with pytest.raises(openai.BadRequestError, match="context is 128 tokens") as e:
        client.completions.create(model="tiny", prompt=long, max_tokens=4)
    assert e.value.body["code"] == "context_length_exceeded"
    fits = "To be"  # fits, but not with max_tokens = CAP more
    while len(engine.encode(fits + " or not")) < engine.context - 8:
        fits += " or not"
    n = len(engine.encode(fits))
    assert engine.context - CAP < n < engine.context
    with pytest.raises(openai.BadRequestError, match=f"prompt \\({n} tokens\\) plus max_tokens"):
        client.completions.create(model="tiny", prompt=fits, max_tokens=CAP)


def test_unknown_path_is_a_json_404(server):
    r = httpx.get(server.url + "/v1/nothing", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"


def test_rag_without_an_index_is_404(server):
    r = post(server, "/v1/rag/ask", {"question": "who?"})
    assert r.status_code == 404 and error_of(r)["code"] == "no_index"


def test_queue_full_is_429(engine):
    app = create_app(engine, ServeSettings(max_batch=1, max_queue=0))
    scheduler = app.state.scheduler
    with LiveServer(app) as live:
        c = openai.OpenAI(base_url=live.url + "/v1", api_key="x", max_retries=0)
        first = {}
        with scheduler.pause():  # the first request waits for the one slot ...
            t = threading.Thread(target=lambda: first.update(r=c.completions.create(
                model="tiny", prompt="x", max_tokens=3, temperature=0)))  # fmt: skip
            t.start()
            while scheduler.stats()["waiting"] < 1:
                time.sleep(0.01)
            with pytest.raises(openai.RateLimitError, match="queue is full") as e:
                c.completions.create(model="tiny", prompt="y", max_tokens=3)  # ... this one: 429
            assert e.value.body["type"] == "rate_limit_error"
        t.join(30)
        assert first["r"].choices[0].finish_reason == "length"


# ---- client disconnects, shutdown, concurrency ---------------------------------------------------


def test_disconnect_frees_the_slot(server, client, monkeypatch):
    """A streaming client that goes away: its job is cancelled and its slot freed well before
    its max_tokens (each step is slowed to 20 ms so it cannot simply finish first)."""
    import myllm101.serve.scheduler as sched

    real = sched.batch_step
    monkeypatch.setattr(sched, "batch_step", lambda *a: (time.sleep(0.02), real(*a))[1])
    scheduler = server.app.state.scheduler
    stream = client.completions.create(model="tiny", prompt="that", max_tokens=CAP,
                                       temperature=0, stream=True)  # fmt: skip
    next(iter(stream))  # one chunk: the job is decoding
    job = scheduler.active[0]
    stream.close()
    deadline = time.monotonic() + 10
    while scheduler.stats()["active"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert scheduler.stats()["active"] == 0
    assert job.cancelled and len(job.new_ids) < CAP


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def stream_completion(client, prompt: str, max_tokens: int) -> str:
    """The assembled text of a streaming greedy completion."""
    stream = client.completions.create(model="tiny", prompt=prompt, max_tokens=max_tokens,
                                       temperature=0, stream=True)  # fmt: skip
    return "".join(chunk.choices[0].text for chunk in stream if chunk.choices)


def test_16_concurrent_streams_equal_their_single_answers(server, client):
    """16 streaming clients at once, 5 rounds: no errors, each answer equal to the same request
    alone, a full batch of 16 decoded together (prompts join one per turn, riding on the step:
    short completions prompts and 24-token answers, so all 16 overlap), and memory stable (RSS after 2 warm-up rounds
    vs after 3 more: within 64 MB, a generous bound for allocator noise; a leak of a KV cache
    slot per request would be ~16 x 128 x 2 x 2 x 32 x 4 B per round at least and grow)."""
    prompts = [f"question {i} is" for i in range(16)]
    single = [stream_completion(client, p, 24) for p in prompts]
    scheduler = server.app.state.scheduler

    def round_() -> list[str]:
        out: list = [None] * 16

        def one(i):
            try:
                out[i] = stream_completion(client, prompts[i], 24)
            except Exception as e:  # collected, not lost in a thread
                out[i] = e

        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        with scheduler.pause():  # all 16 wait, then start in one turn: a full batch
            for t in threads:
                t.start()
            deadline = time.monotonic() + 30
            while scheduler.stats()["waiting"] < 16 and time.monotonic() < deadline:
                time.sleep(0.01)
        for t in threads:
            t.join(60)
        return out

    for _ in range(2):
        assert round_() == single
    before = rss_mb()
    for _ in range(3):
        assert round_() == single
    assert scheduler.max_rows_seen == 16
    assert rss_mb() - before < 64


def test_graceful_shutdown_finishes_in_flight_requests(engine):
    app = create_app(engine, ServeSettings(grace=5.0))
    scheduler = app.state.scheduler
    live = LiveServer(app).__enter__()
    c = openai.OpenAI(base_url=live.url + "/v1", api_key="x", max_retries=0)
    result = {}
    with scheduler.pause():
        t = threading.Thread(target=lambda: result.update(r=c.completions.create(
            model="tiny", prompt="x", max_tokens=5, temperature=0)))  # fmt: skip
        t.start()
        while scheduler.stats()["waiting"] < 1:
            time.sleep(0.01)
        live.server.should_exit = True  # Ctrl-C: stop accepting, wait for open requests
        time.sleep(0.3)
    t.join(30)
    live.thread.join(30)
    assert result["r"].choices[0].finish_reason == "length"
    assert not live.thread.is_alive() and not scheduler.thread.is_alive()


# ---- the command ----------------------------------------------------------------------------------


def test_serve_command_defaults_and_errors(model_dir, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    serve_cli.add_subparsers(parser.add_subparsers())
    args = parser.parse_args(["serve", "--model", "smollm2"])
    assert args.host == "127.0.0.1" and args.port == 8000 and args.max_batch == 16
    assert serve_cli.main(["--model", str(model_dir), "--max-batch", "0"]) == 2
    assert "--max-batch: expected an int >= 1, got 0" in capsys.readouterr().err
    assert serve_cli.main(["--model", str(model_dir / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.slow
def test_smollm2_chat_batched_equals_alone_and_generate():
    """The real model, fp32: 4 concurrent greedy chats equal their single answers, and the
    single answer equals hub/smollm2.py's generate_text (token ids through fast/generate.py)."""
    from myllm101.hub.smollm2 import generate_text

    engine = load_engine("smollm2", "fp32", max_context=512)
    with LiveServer(create_app(engine, ServeSettings(max_batch=4))) as live:
        c = openai.OpenAI(base_url=live.url + "/v1", api_key="x", max_retries=0)
        model = engine.model_id
        questions = ["What is the capital of France?", "Name a primary colour.",
                     "What is 2 + 2?", "Say hello."]  # fmt: skip
        ask = lambda q: c.chat.completions.create(
            model=model, messages=[{"role": "user", "content": q}], temperature=0, max_tokens=24
        ).choices[0].message.content  # fmt: skip
        alone = [ask(q) for q in questions]
        out: list = [None] * 4
        threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, ask(questions[i])))
                   for i in range(4)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert out == alone
        assert alone[0] == generate_text(questions[0], chat=True, max_new_tokens=24, dtype="fp32")


def test_rag_ask_with_an_index(tmp_path):
    """/v1/rag/ask over a two-document index (rag/store.py): an answer and its sources, the
    source about the question's subject first."""
    store = pytest.importorskip("myllm101.rag.store")
    from myllm101.rag.embedder import Embedder

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "castle.txt").write_text("Macbeth killed King Duncan in his castle at Inverness.")
    (docs / "sea.txt").write_text("The tides of the sea follow the moon around the earth.")
    store.index_documents(docs, tmp_path / "idx", embedder=Embedder(dtype="fp32"))
    engine = load_engine(str(tiny_model_dir(tmp_path / "tiny", block_size=512)), "fp32")
    app = create_app(engine, ServeSettings(index=str(tmp_path / "idx")))
    with LiveServer(app) as live:
        r = httpx.post(live.url + "/v1/rag/ask", json={"question": "Who killed Duncan?", "k": 2,
                                                       "max_tokens": 8, "method": "bm25"}, timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["answer"], str) and body["sources"]
    assert body["sources"][0]["path"].endswith("castle.txt")
    assert "Duncan" in body["sources"][0]["text"]
