"""``myllm101 ui`` in a real headless Chromium, driven by Playwright's sync API.

The app serves a tiny random Llama run directory (its own BPE tokenizer) and an int8-quantized copy
of it (the Compare tab). In the page: a greedy chat reply streams in (seen growing by a
MutationObserver) and ends as the text our ``generate`` gives; the tokenizer tab shows our
tokenizer's ids; the attention tab draws its heatmap; compare shows both models' greedy replies.
Screenshots go to the test's tmp_path, and to $MYLLM101_ARTIFACTS/ui when that is set.

No browser is downloaded: Debian's chromium (/usr/bin/chromium, or $MYLLM101_CHROMIUM) is used, and
its absence is a skip with the reason (a failure in CI: tests/strict_skips.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch

from myllm101.config import LlamaConfig
from myllm101.fast.bpe import bpe_train
from myllm101.fast.llama import Llama
from myllm101.train.checkpoint import save_model_dir
from myllm101.ui import chat
from myllm101.ui import cli as ui_cli
from myllm101.ui.app import launch
from myllm101.ui.tokens import encode_ids
from tests.train_helpers import one_thread  # noqa: F401  (tiny models: one thread)

CORPUS = " ".join(f"To be or not{i % 7}, that is the question {i % 13}." for i in range(1500))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip
NEW_TOKENS = 24


def chromium_path() -> str:
    """$MYLLM101_CHROMIUM, else the system's chromium; a skip (with the reason) when neither."""
    path = os.environ.get("MYLLM101_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.skip(f"chromium not found at {path} (apt-get install chromium, or set "
                    "MYLLM101_CHROMIUM): the app's browser test cannot run")  # fmt: skip
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_screenshot(page, tmp_path: Path, name: str) -> Path:
    """A full-page PNG in tmp_path, copied to $MYLLM101_ARTIFACTS/ui when that is set."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a real page, not a blank one
    if os.environ.get("MYLLM101_ARTIFACTS"):
        out = Path(os.environ["MYLLM101_ARTIFACTS"]) / "ui"
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / name)
    return path


def flat(text: str) -> str:
    """Whitespace as the page shows it (innerText trims and may join runs of spaces)."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base url, float ChatModel, quantized ChatModel) of the app serving a tiny run directory."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = chromium_path()
    from myllm101.quant import cli as quant_cli

    root = tmp_path_factory.mktemp("ui_browser")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
                      intermediate_size=128, tie_word_embeddings=True)  # fmt: skip
    save_model_dir(root / "fp32", Llama(cfg).eval(), cfg, bpe_train(CORPUS, 300))
    assert quant_cli.run(["quantize", "--model", str(root / "fp32"), "--scheme", "int8",
                          "--out", str(root / "q8")]) == 0  # fmt: skip
    args = argparse.Namespace(model=str(root / "fp32"), compare=str(root / "q8"), index=None,
                              host="127.0.0.1", port=free_port())  # fmt: skip
    demo = launch(ui_cli.prepare(args), args.host, args.port, block=False)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            try:
                yield (browser, f"http://{args.host}:{args.port}/",
                       chat.load_chat_model(args.model), chat.load_chat_model(args.compare))  # fmt: skip
            finally:
                browser.close()
    finally:
        demo.close()


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    page.goto(url)
    page.wait_for_selector("#chat-input textarea")
    return page


def set_slider(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_chat_streams_greedy_text_tokenizer_shows_our_ids_attention_draws(served, tmp_path):
    browser, url, cm, _ = served
    page = open_page(browser, url)
    # every change to the chat's last message, as the page renders it
    page.evaluate("""() => { window.snapshots = [];
        const root = document.querySelector('#chatbot');
        new MutationObserver(() => { const m = root.querySelectorAll('.message');
            if (m.length) window.snapshots.push(m[m.length - 1].innerText); })
        .observe(root, {subtree: true, childList: true, characterData: true}); }""")
    set_slider(page, "temperature", 0)
    set_slider(page, "max-new-tokens", NEW_TOKENS)
    prompt = "To be or not"
    page.fill("#chat-input textarea", prompt)
    page.press("#chat-input textarea", "Enter")
    page.wait_for_function(
        f"() => document.querySelector('#chat-status').innerText.startsWith('{NEW_TOKENS} tokens')"
    )
    expected = flat(cm.decode(chat.greedy_reply_ids(cm, cm.encode(prompt), NEW_TOKENS)))
    shown = page.locator("#chatbot .message").last.inner_text()
    assert expected and flat(shown) == expected
    seen = [flat(s) for s in page.evaluate("window.snapshots")]
    growing = sorted({s for s in seen if s and expected.startswith(s)}, key=len)
    assert len(growing) >= 2 and growing[-1] == expected, seen  # it streamed in, piece by piece
    save_screenshot(page, tmp_path, "chat.png")

    page.get_by_role("tab", name="Tokenizer").click()
    text = "To be, or not to be: ünïcödé 42 <|endoftext|>"
    page.fill("#tok-input textarea", text)
    page.click("#tok-button")
    page.wait_for_function("() => document.querySelector('#tok-ids textarea').value.length > 0")
    ids = [int(i) for i in page.input_value("#tok-ids textarea").split(",")]
    assert ids == encode_ids(cm.tokenizer, text, cm.vocab_size)
    assert page.locator("#tok-html span.tok").count() == len(ids)
    assert "same ids: yes" in page.inner_text("#tok-timing")
    save_screenshot(page, tmp_path, "tokenizer.png")

    page.get_by_role("tab", name="Attention").click()
    set_slider(page, "attn-layer", 1)
    page.click("#attn-button")
    page.wait_for_selector("#attn-plot img")
    n = len(encode_ids(cm.tokenizer, page.input_value("#attn-input textarea"), cm.vocab_size))
    assert page.inner_text("#attn-note").startswith(f"{n} tokens")
    assert page.locator("#attn-plot img").evaluate("img => img.naturalWidth") > 200
    save_screenshot(page, tmp_path, "attention.png")
    page.close()


def test_compare_tab_streams_both_models_side_by_side(served, tmp_path):
    browser, url, cm, q8 = served
    assert q8.quantization["scheme"] == "int8"
    page = open_page(browser, url)
    page.get_by_role("tab", name="Compare").click()
    set_slider(page, "cmp-max-new-tokens", NEW_TOKENS)
    page.fill("#cmp-input textarea", "that is the")
    page.click("#cmp-button")
    for side, m in (("left", cm), ("right", q8)):
        want = m.decode(chat.greedy_reply_ids(m, m.encode("that is the"), NEW_TOKENS))
        page.wait_for_function(
            f"() => document.querySelector('#cmp-{side}-status')"
            f".innerText.startsWith('{NEW_TOKENS} tokens')"
        )
        assert page.input_value(f"#cmp-{side} textarea") == want
    save_screenshot(page, tmp_path, "compare.png")
    page.close()
