"""A live server in a background thread, and a tiny model to serve: for tests and benchmarks.

    with LiveServer(create_app(load_engine(tiny_model_dir(tmp)))) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")

``LiveServer`` runs uvicorn on 127.0.0.1 on a free port in a thread, waits for /health, and on
exit asks uvicorn to stop (the app's shutdown lets in-flight requests finish, then cancels).
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from pathlib import Path

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = " ".join(
    f"To be or not to be{i % 7}, that is the question {i % 13}. Who is there? {i % 5}"
    for i in range(800)
)


def tiny_model_dir(directory, seed: int = 0, block_size: int = 128, scale: float = 10.0) -> Path:
    """A randomly initialised 2-layer Llama (grouped-query, a BPE of at most 300 tokens with
    ChatML special tokens) saved as one of our model directories; returns ``directory``. Its matrices are
    ``scale`` x the usual init: at 1 a random model's greedy answer repeats one token, at 10 it
    changes from token to token (a batching bug shows sooner)."""
    import torch

    from myllm101.config import LlamaConfig
    from myllm101.fast.bpe import bpe_train
    from myllm101.fast.llama import Llama
    from myllm101.train.checkpoint import save_model_dir

    directory = Path(directory)
    tok = bpe_train(CORPUS, 300, special_tokens=SPECIALS, workers=1)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=tok.n_vocab, block_size=block_size, n_layer=2, n_head=4, n_kv_head=2,
                      n_embd=64, intermediate_size=128, tie_word_embeddings=True)  # fmt: skip
    model = Llama(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(scale)
    save_model_dir(directory, model, cfg, tok)
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1:<free port> in a daemon thread (a context manager)."""

    def __init__(self, app, port: int | None = None, timeout: float = 30.0):
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=5)  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.timeout = timeout

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server at {self.url} did not answer /health in {self.timeout}s")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __exit__(self, *exc) -> None:
        self.stop()
