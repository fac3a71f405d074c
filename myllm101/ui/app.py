"""The Gradio app: chat, tokenizer playground, attention heatmap, and (when given) RAG and an
fp32-vs-quantized comparison, all through our own code.

    cm = load_chat_model("smollm2")
    demo = build_app(cm, compare=load_chat_model("q8"))
    launch(demo, "127.0.0.1", 7860)                     # what ``myllm101 ui`` does

Tabs (each handler is a plain function below, tested without a browser in tests/test_ui.py):
- Chat: the reply streams token by token (ui/chat.py ``stream_reply`` -> fast/generate.py
  ``stream``), with temperature (0 = greedy), top-p, max new tokens and seed.
- Tokenizer: the text as coloured tokens, their ids, and reference vs fast encode time.
- Attention: one layer / head's weights on a short input (ui/attention.py), as a heatmap.
- RAG (--index): question -> answer and its numbered sources (ui/rag.py -> myllm101.rag).
- Compare (--compare DIR): the same prompt through both models, side by side, streaming together.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from myllm101.ui.chat import ChatModel, Sampling, content_text, timed_stream
from myllm101.ui.tokens import (
    encode_ids,
    encode_timing,
    id_pieces,
    reference_twin,
    timing_markdown,
    token_rows,
    tokens_html,
)

if TYPE_CHECKING:
    import gradio as gr

MAX_ATTENTION_TOKENS = 48  # a heatmap wider than this is unreadable
DEFAULT_TOKENIZER_TEXT = (
    "Hello world! Tokenizers split text into pieces: ünïcödé, 12345, and <|im_end|>."
)


# ------------------------------------------------------------------------------------------------
# handlers (plain functions of the inputs: the app wires them, the tests call them)


def chat_turn(cm: ChatModel, message: str, history: list[dict], temperature: float, top_p: float,
              max_new_tokens: float, seed: float
              ) -> Iterator[tuple[str, list[dict], str]]:  # fmt: skip
    """Yields (textbox value, chat history, status) as the reply grows."""
    history = [{"role": m["role"], "content": content_text(m["content"])} for m in history or []]
    if not message or not message.strip():
        yield "", history, "Type a message first."
        return
    sampling = Sampling.from_controls(temperature, top_p, max_new_tokens, seed)
    ids = cm.encode(cm.prompt_text(history, message))
    turn = [*history, {"role": "user", "content": message}, {"role": "assistant", "content": ""}]
    yield "", turn, f"prompt: {len(ids)} tokens"
    for text, status in timed_stream(cm, ids, sampling):
        turn[-1] = {"role": "assistant", "content": text}
        yield "", turn, status


def tokenize_view(cm: ChatModel, text: str, reference=None) -> tuple[str, str, str]:
    """-> (coloured tokens HTML, ids as "1, 2, 3", timing Markdown) for ``text``."""
    rows = token_rows(cm.tokenizer, text, cm.vocab_size)
    ids = ", ".join(str(i) for _, i in rows)
    timing = timing_markdown(encode_timing(cm.tokenizer, text, reference))
    return tokens_html(rows), ids, timing


def attention_view(cm: ChatModel, text: str, layer: float, head: float) -> tuple[object, str]:
    """-> (matplotlib figure of layer ``layer``, head ``head`` on ``text``, a note)."""
    from myllm101.ui.attention import attention_figure, attention_weights, heatmap_labels

    ids = encode_ids(cm.tokenizer, text, cm.vocab_size)
    if not ids:
        raise ValueError("text: expected at least one token, got an empty text")
    note = ""
    if len(ids) > MAX_ATTENTION_TOKENS:
        ids, note = ids[:MAX_ATTENTION_TOKENS], f"(first {MAX_ATTENTION_TOKENS} tokens shown) "
    layer, head = int(layer), int(head)
    weights = attention_weights(cm.model, ids, layer)  # (H, T, T)
    if not 0 <= head < weights.shape[0]:
        raise ValueError(f"head: expected 0 <= head < {weights.shape[0]}, got {head}")
    labels = heatmap_labels(id_pieces(cm.tokenizer, ids))
    fig = attention_figure(weights[head], labels, f"layer {layer}, head {head}")
    return fig, f"{note}{len(ids)} tokens; each row (a query) sums to 1"


def compare_turn(left: ChatModel, right: ChatModel, message: str, max_new_tokens: float,
                 temperature: float, seed: float) -> Iterator[tuple[str, str, str, str]]:  # fmt: skip
    """Yields (left text, left status, right text, right status): both models one token each per
    step, so they stream side by side."""
    sampling = Sampling.from_controls(temperature, 1.0, max_new_tokens, seed)
    streams = [timed_stream(m, m.encode(m.prompt_text([], message)), sampling)
               for m in (left, right)]  # fmt: skip
    state = [("", ""), ("", "")]
    for a, b in itertools.zip_longest(*streams):
        state = [a or state[0], b or state[1]]
        yield state[0][0], state[0][1], state[1][0], state[1][1]


# ------------------------------------------------------------------------------------------------
# the Blocks


def shown_errors(fn: Callable) -> Callable:
    """``fn`` (a function or a generator function) with bad input (ValueError, TypeError) turned
    into ``gr.Error``: Gradio then shows the message in the page instead of a bare "Error"."""
    import functools
    import inspect

    import gradio as gr

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen(*args):
            try:
                yield from fn(*args)
            except (ValueError, TypeError) as e:
                raise gr.Error(str(e)) from e

        return gen

    @functools.wraps(fn)
    def call(*args):
        try:
            return fn(*args)
        except (ValueError, TypeError) as e:
            raise gr.Error(str(e)) from e

    return call


def build_app(cm: ChatModel, compare: ChatModel | None = None, rag=None, rag_message: str = ""
              ) -> gr.Blocks:  # fmt: skip
    """The gr.Blocks of the app. ``rag``: a ui/rag.py RagTab (the tab answers), or None with
    ``rag_message`` set (the tab explains why it cannot), or None and "" (no tab)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    reference = reference_twin(cm.tokenizer)  # built once: it reads the whole vocabulary
    n_layers, n_heads = cm.model.cfg.n_layer, cm.model.cfg.n_head
    max_new = max(1, min(1024, cm.block_size - 1))
    with gr.Blocks(title="MyLLM101", analytics_enabled=False) as demo:
        gr.Markdown(f"## MyLLM101\n{cm.describe()}", elem_id="model-info")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                bot = gr.Chatbot(label="chat", elem_id="chatbot", height=380,
                                 render_markdown=cm.chat)  # fmt: skip
                with gr.Row():
                    box = gr.Textbox(placeholder="Type a message and press Enter", scale=5,
                                     show_label=False, elem_id="chat-input")  # fmt: skip
                    send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
                with gr.Row():
                    temperature = gr.Slider(0, 2, value=0.7, step=0.05, label="temperature (0 = greedy)",
                                            elem_id="temperature")  # fmt: skip
                    top_p = gr.Slider(0.05, 1, value=0.9, step=0.05, label="top p", elem_id="top-p")
                    max_tokens = gr.Slider(1, max_new, value=min(128, max_new), step=1,
                                           label="max new tokens", elem_id="max-new-tokens")  # fmt: skip
                    seed = gr.Number(0, precision=0, label="seed", elem_id="seed")
                status = gr.Markdown("", elem_id="chat-status")
                clear = gr.Button("Clear", elem_id="chat-clear")
                inputs = [box, bot, temperature, top_p, max_tokens, seed]

                @shown_errors
                def respond(message, history, t, p, n, s):
                    yield from chat_turn(cm, message, history, t, p, n, s)

                for event in (box.submit, send.click):
                    event(respond, inputs, [box, bot, status])
                clear.click(lambda: ([], ""), None, [bot, status])

            with gr.Tab("Tokenizer", id="tokenizer"):
                tok_text = gr.Textbox(DEFAULT_TOKENIZER_TEXT, lines=3, label="text",
                                      elem_id="tok-input")  # fmt: skip
                tok_go = gr.Button("Tokenize", variant="primary", elem_id="tok-button")
                tok_html = gr.HTML(elem_id="tok-html")
                tok_ids = gr.Textbox(label="ids", elem_id="tok-ids", interactive=False)
                tok_time = gr.Markdown(elem_id="tok-timing")

                @shown_errors
                def tokenize(text):
                    return tokenize_view(cm, text, reference)

                for event in (tok_go.click, tok_text.submit):
                    event(tokenize, tok_text, [tok_html, tok_ids, tok_time])

            with gr.Tab("Attention", id="attention"):
                att_text = gr.Textbox("The quick brown fox jumps over the lazy dog.",
                                      label=f"text (at most {MAX_ATTENTION_TOKENS} tokens)",
                                      elem_id="attn-input")  # fmt: skip
                with gr.Row():
                    layer = gr.Slider(0, n_layers - 1, value=0, step=1, label="layer",
                                      elem_id="attn-layer")  # fmt: skip
                    head = gr.Slider(0, n_heads - 1, value=0, step=1, label="head",
                                     elem_id="attn-head")  # fmt: skip
                att_go = gr.Button("Show attention", variant="primary", elem_id="attn-button")
                att_plot = gr.Plot(elem_id="attn-plot", format="png")
                att_note = gr.Markdown(elem_id="attn-note")

                @shown_errors
                def attention(text, lay, hd):
                    return attention_view(cm, text, lay, hd)

                att_go.click(attention, [att_text, layer, head], [att_plot, att_note])

            if rag is not None or rag_message:
                with gr.Tab("RAG", id="rag"):
                    if rag is None:
                        gr.Markdown(rag_message, elem_id="rag-message")
                    else:
                        gr.Markdown(f"index: `{rag.index}`; the answer cites its sources [n]")
                        question = gr.Textbox(label="question", elem_id="rag-question")
                        with gr.Row():
                            k = gr.Slider(1, 10, value=5, step=1, label="passages (k)",
                                          elem_id="rag-k")  # fmt: skip
                            method = gr.Radio(["bm25", "dense", "hybrid", "weighted", "rerank"],
                                              value="weighted",
                                              label="retriever", elem_id="rag-method")  # fmt: skip
                        ask = gr.Button("Ask", variant="primary", elem_id="rag-ask")
                        answer = gr.Textbox(label="answer", elem_id="rag-answer", lines=6)
                        sources = gr.Markdown(elem_id="rag-sources")
                        for event in (ask.click, question.submit):
                            event(shown_errors(rag.ask), [question, k, method], [answer, sources])

            if compare is not None:
                with gr.Tab("Compare", id="compare"):
                    gr.Markdown(f"left: {cm.describe()}\n\nright: {compare.describe()}")
                    cmp_text = gr.Textbox(label="prompt", elem_id="cmp-input")
                    with gr.Row():
                        cmp_tokens = gr.Slider(1, max_new, value=min(64, max_new), step=1,
                                               label="max new tokens",
                                               elem_id="cmp-max-new-tokens")  # fmt: skip
                        cmp_temp = gr.Slider(0, 2, value=0.0, step=0.05,
                                             label="temperature (0 = greedy)",
                                             elem_id="cmp-temperature")  # fmt: skip
                        cmp_seed = gr.Number(0, precision=0, label="seed", elem_id="cmp-seed")
                    cmp_go = gr.Button("Generate with both", variant="primary",
                                       elem_id="cmp-button")  # fmt: skip
                    with gr.Row():
                        with gr.Column():
                            left_out = gr.Textbox(label=cm.name, lines=10, elem_id="cmp-left")
                            left_stat = gr.Markdown(elem_id="cmp-left-status")
                        with gr.Column():
                            right_out = gr.Textbox(label=compare.name, lines=10,
                                                   elem_id="cmp-right")  # fmt: skip
                            right_stat = gr.Markdown(elem_id="cmp-right-status")

                    @shown_errors
                    def both(text, n, t, s):
                        yield from compare_turn(cm, compare, text, n, t, s)

                    cmp_go.click(both, [cmp_text, cmp_tokens, cmp_temp, cmp_seed],
                                 [left_out, left_stat, right_out, right_stat])  # fmt: skip
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, block: bool = True
           ) -> gr.Blocks:  # fmt: skip
    """Serve ``demo`` on host:port (no share link, no analytics); ``block=False`` returns at once
    (tests; ``demo.close()`` stops it)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo.queue()
    demo.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                quiet=True, show_error=True, ssr_mode=False, inbrowser=False)  # fmt: skip
    return demo
