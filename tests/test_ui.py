"""The app's functions without a browser (myllm101/ui/): tokens -> colours and ids, attention
weights (rows sum to 1, causal, and the same output as the layer itself), the chat template,
streaming, compare, the RAG adapter, and the command's bad input. The browser test is
tests/test_ui_browser.py."""

from __future__ import annotations

import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from myllm101.config import GPTConfig, LlamaConfig
from myllm101.fast.bpe import bpe_train
from myllm101.fast.gpt import GPT
from myllm101.fast.llama import Llama
from myllm101.hub.smollm2 import chat_prompt
from myllm101.ui import app, attention, chat, rag, tokens
from myllm101.ui import cli as ui_cli
from parity_tests.helpers import assert_close
from tests.train_helpers import one_thread  # noqa: F401  (tiny models: one thread)

CORPUS = " ".join(
    f"To be or not{i % 7}, that is the question {i % 13}. Ünïcödé €{i}" for i in range(600)
)
CHATML = {"<|im_start|>": 298, "<|im_end|>": 299}  # bpe_train gives specials the last ids

# float64 models: the recomputed attention differs from torch's fused SDPA only by rounding, a few
# u = 1.1e-16 per product summed over D <= 32 terms and T <= 12 keys: 1e-12 leaves ample room
F64 = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def tok():
    """A 300-token BPE whose last two ids are ChatML's special tokens."""
    return bpe_train(CORPUS, 300, special_tokens=list(CHATML))


def tiny_llama(vocab=300, dtype=torch.float32):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                      intermediate_size=64, tie_word_embeddings=True)  # fmt: skip
    return Llama(cfg).to(dtype).eval()


def tiny_gpt(vocab=300, dtype=torch.float32):
    torch.manual_seed(1)
    cfg = GPTConfig(vocab_size=vocab, block_size=32, n_layer=2, n_head=2, n_embd=32)
    return GPT(cfg).to(dtype).eval()


@pytest.fixture(scope="module")
def cm(tok):
    return chat.ChatModel(tiny_llama(), tok, "tiny-llama")


@pytest.fixture(scope="module")
def plain(tok):
    """The same vocabulary without the special tokens: a model with no chat template."""
    from myllm101.fast.bpe import Tokenizer

    return chat.ChatModel(tiny_gpt(), Tokenizer(tok.mergeable_ranks, tok.pattern), "tiny-gpt")


# ---- tokens ---------------------------------------------------------------------------------------

texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


@given(text=texts)
def test_token_rows_join_to_the_text_and_carry_the_tokenizers_ids(tok, text):
    rows = tokens.token_rows(tok, text)
    assert "".join(p for p, _ in rows) == text
    assert [i for _, i in rows] == tok.encode(text, allowed_special="all")
    colours = tokens.token_colours(len(rows))
    assert len(colours) == len(rows)
    assert all(a != b for a, b in zip(colours, colours[1:]))  # neighbours never share a colour


def test_special_tokens_are_one_token_and_partial_characters_add_nothing(tok):
    rows = tokens.token_rows(tok, "<|im_start|>user")
    assert rows[0] == ("<|im_start|>", CHATML["<|im_start|>"])
    assert chat.incremental_pieces([b"h", b"\xc3", b"\xa9"]) == ["h", "", "é"]
    assert tokens.id_pieces(tok, [CHATML["<|im_end|>"], 300]) == ["<|im_end|>", "\ufffd"]
    assert chat.incremental_pieces([b"\xc3"]) == ["\ufffd"]  # a broken end still shows
    # ids the model lacks (past its vocab_size) are left out, as GGUFTokenizer does
    assert tokens.encode_ids(tok, "<|im_end|>", vocab_size=299) == []


def test_tokens_html_has_one_span_per_token_with_its_id_and_escapes_text(tok):
    rows = tokens.token_rows(tok, "a <b> & ü")
    html = tokens.tokens_html(rows)
    assert html.count('class="tok"') == len(rows)
    assert [int(s.split('"')[0]) for s in html.split('data-id="')[1:]] == [i for _, i in rows]
    assert "<b>" not in html and "&lt;" in html and "&amp;" in html


def test_encode_timing_compares_the_reference_twin_and_sees_a_different_vocabulary(tok):
    t = tokens.encode_timing(tok, CORPUS[:300])
    assert t["same_ids"] and t["tokens"] == len(tok.encode(CORPUS[:300], allowed_special="all"))
    assert t["reference_ms"] > 0 and t["fast_ms"] > 0
    other = tokens.reference_twin(bpe_train(CORPUS, 280, special_tokens=list(CHATML)))
    assert not tokens.encode_timing(tok, CORPUS[:300], reference=other)["same_ids"]
    with pytest.raises(ValueError, match="repeats: expected >= 1, got 0"):
        tokens.encode_timing(tok, "x", repeats=0)
    with pytest.raises(TypeError, match="text: expected a str, got int"):
        tokens.encode_ids(tok, 5)


def test_tokenize_view_shows_the_ids_it_colours(cm):
    html, ids, timing = app.tokenize_view(cm, "To be or not, ünï")
    expected = cm.encode("To be or not, ünï")
    assert ids == ", ".join(map(str, expected)) and html.count('class="tok"') == len(expected)
    assert "same ids: yes" in timing


# ---- attention ------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt], ids=["llama-gqa", "gpt"])
@given(T=st.integers(1, 12), layer=st.integers(0, 1), seed=st.integers(0, 2**16))
def test_attention_weights_are_causal_rows_summing_to_one_and_reproduce_the_layer(make, T, layer,
                                                                                  seed):  # fmt: skip
    model = make(dtype=torch.float64)
    ids = torch.randint(0, 298, (T,), generator=torch.Generator().manual_seed(seed)).tolist()
    w = attention.attention_weights(model, ids, layer)
    assert w.shape == (model.cfg.n_head, T, T) and w.dtype == torch.float64
    assert_close(w.sum(-1), torch.ones(model.cfg.n_head, T, dtype=torch.float64), **F64,
                 name="row sums")  # fmt: skip
    assert torch.all(w.triu(diagonal=1) == 0) and torch.all(w >= 0)
    mine, real = attention.attention_output(model, ids, layer)  # weights @ v vs torch's SDPA
    assert_close(mine, real, **F64, name="weights @ v through the output projection")


def test_attention_output_catches_wrong_weights(monkeypatch):
    """The parity check above fails when the weights are not the layer's (here: no causal mask)."""
    model, ids = tiny_llama(dtype=torch.float64), list(range(8))

    def no_mask(q, k):
        k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)
        return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)

    monkeypatch.setattr(attention, "causal_softmax", no_mask)
    mine, real = attention.attention_output(model, ids, 0)
    with pytest.raises(AssertionError):
        assert_close(mine, real, **F64)


def test_attention_float32_model_and_bad_input(cm):
    w = attention.attention_weights(cm.model, [1, 2, 3], 1)
    assert w.dtype == torch.float32
    assert_close(w.sum(-1), torch.ones(4, 3), rtol=0, atol=1e-6, name="row sums")
    with pytest.raises(ValueError, match=r"layer: expected 0 <= layer < 2, got 2"):
        attention.attention_weights(cm.model, [1, 2], 2)
    with pytest.raises(ValueError, match=r"ids: expected 1 to block_size=32 tokens, got 0"):
        attention.attention_weights(cm.model, [], 0)
    with pytest.raises(ValueError, match="expected a GPT or Llama of ours"):
        attention.attention_layers(torch.nn.Linear(2, 2))


def test_attention_view_draws_a_heatmap_of_one_head(cm):
    fig, note = app.attention_view(cm, "To be or not", 1, 3)
    T = len(cm.encode("To be or not"))
    (image,) = fig.axes[0].get_images()
    assert image.get_array().shape == (T, T) and f"{T} tokens" in note
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][0].endswith("(0)")
    with pytest.raises(ValueError, match=r"head: expected 0 <= head < 4, got 4"):
        app.attention_view(cm, "To be", 0, 4)
    with pytest.raises(ValueError, match="text: expected at least one token"):
        app.attention_view(cm, "", 0, 0)
    with pytest.raises(ValueError, match=r"weights: expected \(T, T\) with T = len\(labels\) = 2"):
        attention.attention_figure(torch.ones(3, 3), ["a", "b"])


# ---- chat ------------------------------------------------------------------------------------------


def test_chat_template_is_smollm2s_chatml_and_plain_models_continue_the_text(cm, plain):
    history = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"text": "yo"}]},
    ]
    text = cm.prompt_text(history, "To be?")
    assert cm.chat and text == chat_prompt([{"role": "user", "content": "hi"},
                                            {"role": "assistant", "content": "yo"},
                                            {"role": "user", "content": "To be?"}])  # fmt: skip
    ids = cm.encode(text)
    assert ids[0] == CHATML["<|im_start|>"] and ids.count(CHATML["<|im_end|>"]) == 4  # 4 turns
    assert cm.stop_tokens == (CHATML["<|im_end|>"],)
    assert not plain.chat and plain.prompt_text(history, "To be?") == "To be?"
    assert plain.stop_tokens == ()
    assert cm.decode(ids).startswith("system\n")  # special tokens are not shown


@pytest.mark.parametrize("ids,new,block,expected", [
    (list(range(10)), 8, 12, (list(range(6, 10)), 8)),
    (list(range(3)), 50, 12, (list(range(2, 3)), 11)),
    (list(range(3)), 4, 12, (list(range(3)), 4)),
])  # fmt: skip
def test_fit_to_block_keeps_the_end_of_the_prompt(ids, new, block, expected):
    assert chat.fit_to_block(ids, new, block) == expected


@given(n=st.integers(1, 40), new=st.integers(1, 100), block=st.integers(2, 40))
def test_fit_to_block_always_fits(n, new, block):
    prompt, k = chat.fit_to_block(list(range(n)), new, block)
    assert 1 <= len(prompt) and 1 <= k <= new and len(prompt) + k <= block
    assert prompt == list(range(n))[-len(prompt) :]


def test_stream_grows_token_by_token_to_what_greedy_generate_gives(plain):
    ids = plain.encode("To be or not")
    texts = list(chat.stream_reply(plain, ids, chat.Sampling(0.0, 1.0, 12, 0)))
    assert len(texts) == 12
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))
    assert texts[-1] == plain.decode(chat.greedy_reply_ids(plain, ids, 12))


def test_sampling_is_seeded_and_checked(plain):
    ids = plain.encode("To be")
    replies = [list(chat.stream_reply(plain, ids, chat.Sampling(1.5, 0.95, 10, s)))[-1]
               for s in (0, 0, 1, 2, 3)]  # fmt: skip
    assert replies[0] == replies[1]  # the same seed, the same reply
    assert len(set(replies[1:])) > 1  # other seeds draw other replies
    s = chat.Sampling.from_controls(0.5, 0.9, 12.0, 3.0)
    assert (s.max_new_tokens, s.seed) == (12, 3) and isinstance(s.max_new_tokens, int)
    for bad, match in ((chat.Sampling(-1.0), "temperature: expected a value >= 0"),
                       (chat.Sampling(top_p=0.0), r"top_p: expected a value in \(0, 1\]"),
                       (chat.Sampling(max_new_tokens=0), "max_new_tokens: expected an int >= 1")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            list(chat.stream_reply(plain, ids, bad))


def test_chat_turn_appends_the_user_turn_and_the_streaming_reply(cm):
    steps = list(app.chat_turn(cm, "To be?", [], 0.0, 1.0, 6.0, 0))
    box, history, status = steps[-1]
    assert box == "" and [m["role"] for m in history] == ["user", "assistant"]
    ids = cm.encode(cm.prompt_text([], "To be?"))
    assert history[-1]["content"] == cm.decode(chat.greedy_reply_ids(cm, ids, 6))
    assert status.startswith(f"{len(chat.greedy_reply_ids(cm, ids, 6))} tokens")
    assert list(app.chat_turn(cm, "  ", history, 0, 1, 6, 0)) == [
        ("", history, "Type a message first.")
    ]


def test_compare_streams_both_models_to_their_own_greedy_replies(cm, plain):
    *_, last = app.compare_turn(cm, plain, "To be", 8.0, 0.0, 0)
    for text, m in ((last[0], cm), (last[2], plain)):
        ids = m.encode(m.prompt_text([], "To be"))
        assert text == m.decode(chat.greedy_reply_ids(m, ids, 8))
    assert last[1].endswith("tokens/s") and last[3].startswith("8 tokens")  # plain: no stop


# ---- RAG adapter -----------------------------------------------------------------------------------


def test_rag_tab_explains_a_missing_package(cm, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="--index nowhere: expected an index directory"):
        rag.open_rag("nowhere", cm)
    monkeypatch.setitem(sys.modules, "myllm101.rag.retrieve", None)  # its import fails
    handle, message = rag.open_rag(str(tmp_path), cm)
    assert handle is None and "RAG is not available" in message


def test_rag_tab_answers_with_the_apps_model_and_lists_the_sources(tok, tmp_path):
    from myllm101.rag.embedder import Embedder
    from myllm101.rag.store import IndexSettings, index_documents

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "mill.txt").write_text("The miller grinds wheat into flour for the village bakers.\n")
    (docs / "kettle.md").write_text("The tinker mends pots and pans and sells copper kettles.\n")
    index_documents(docs, tmp_path / "idx", embedder=Embedder(dtype="fp32"),
                    settings=IndexSettings(max_tokens=40, overlap=8))  # fmt: skip
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, block_size=512, n_layer=1, n_head=2, n_kv_head=2, n_embd=32,
                      intermediate_size=64)  # fmt: skip
    m = chat.ChatModel(Llama(cfg).eval(), tok, "tiny-512")
    tab, message = rag.open_rag(str(tmp_path / "idx"), m, max_new_tokens=6)
    assert message == "" and tab.budget() == 512 - 6
    answer, sources = tab.ask("Who mends pots and pans?", 2, "bm25")
    assert isinstance(answer, str)
    first = sources.splitlines()[0]
    assert first.startswith("1. **") and "kettle.md" in first and "score" in first
    with pytest.raises(ValueError, match="question: expected some text, got ' '"):
        tab.ask(" ")
    with pytest.raises(ValueError, match="leaves no room for retrieved passages"):
        rag.open_rag(str(tmp_path / "idx"), chat.ChatModel(tiny_llama(), tok, "block-32"))


# ---- the command -----------------------------------------------------------------------------------


def test_ui_command_reports_bad_input_in_one_line(tmp_path, capsys):
    assert ui_cli.run(["ui", "--model", str(tmp_path / "none")]) == 2
    assert "error: " in capsys.readouterr().err
    assert ui_cli.run(["ui", "--model", str(tmp_path), "--port", "0"]) == 2
    assert "--port: expected an int in [1, 65535], got 0" in capsys.readouterr().err


def test_prepare_builds_the_tabs_that_were_asked_for(tmp_path, tok, monkeypatch):
    import argparse

    from myllm101.train.checkpoint import save_model_dir

    model = tiny_llama()
    save_model_dir(tmp_path / "m", model, model.cfg, tok)
    monkeypatch.setitem(sys.modules, "myllm101.rag.retrieve", None)
    args = argparse.Namespace(model=str(tmp_path / "m"), compare=str(tmp_path / "m"),
                              index=str(tmp_path), host="127.0.0.1", port=7860)  # fmt: skip
    demo = ui_cli.prepare(args)
    labels = [getattr(b, "label", None) for b in demo.blocks.values()]
    assert {"Chat", "Tokenizer", "Attention", "RAG", "Compare"} <= set(labels)
    args.compare = args.index = None
    labels = [getattr(b, "label", None) for b in ui_cli.prepare(args).blocks.values()]
    assert "Compare" not in labels and "RAG" not in labels
    no_tok = tmp_path / "no-tok"
    save_model_dir(no_tok, model, model.cfg)
    with pytest.raises(ValueError, match="expected a BPE tokenizer with the model, found none"):
        chat.load_chat_model(str(no_tok))
