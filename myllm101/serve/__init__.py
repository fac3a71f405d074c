"""``myllm101 serve``: an OpenAI-compatible HTTP server with continuous batching.

    engine.py     the served model: a causal LM, its tokenizer, ChatML, end tokens
    slots.py      the KV cache: one slot (row) per request, each with its own length
    decode.py     one forward per turn: every active request + a prompt piece, batch-independent bits
    scheduler.py  the continuous-batching loop (one background thread), chunked prefill
    schemas.py    request / response bodies (pydantic; the OpenAPI schema)
    errors.py     OpenAI-style JSON errors
    app.py        the FastAPI app
    cli.py        ``myllm101 serve`` (uvicorn)
    testing.py    a live server in a thread and a tiny model (tests, benchmarks)

FastAPI and uvicorn come with ``pip install 'myllm101[serve]'`` (app.py, errors.py, testing.py and
``cmd_serve`` import them; registering the subcommand does not).
"""
