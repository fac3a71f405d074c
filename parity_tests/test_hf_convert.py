"""HF checkpoints -> our models: tiny RANDOM transformers models (GPT-2, LLaMA, BERT) converted by
myllm101.hub.convert give the same logits in our fast and reference models.

Tolerance: float32 (rtol 1e-5, atol 1e-5, helpers.TOL): both sides do the same float32 math in a
different order through 2-3 layers; the observed error is ~1e-6. transformers is only the oracle.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from myllm101.fast.bert import Bert
from myllm101.fast.gpt import GPT
from myllm101.fast.llama import Llama
from myllm101.hub.convert import from_hf_state_dict, load_hf_checkpoint
from myllm101.reference.bert import ReferenceBert
from myllm101.reference.gpt import ReferenceGPT
from myllm101.reference.llama import ReferenceLlama
from parity_tests.helpers import assert_close_dtype

transformers = pytest.importorskip("transformers")

FAST = {"gpt2": GPT, "llama": Llama, "bert": Bert}
REFERENCE = {"gpt2": ReferenceGPT, "llama": ReferenceLlama, "bert": ReferenceBert}


def randomized(model: torch.nn.Module, seed: int, scale: float = 0.1) -> torch.nn.Module:
    """Move every HF parameter off its init (unit norms, zero biases) so a mix-up shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def gpt2(seed=0, **kw):
    cfg = dict(n_embd=24, n_layer=2, n_head=3, vocab_size=101, n_positions=16)
    cfg = transformers.GPT2Config(**{**cfg, **kw}, attn_implementation="eager")
    return randomized(transformers.GPT2LMHeadModel(cfg), seed)


def llama(seed=0, **kw):
    cfg = dict(
        vocab_size=103, hidden_size=32, intermediate_size=44, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    cfg = transformers.LlamaConfig(**{**cfg, **kw}, attn_implementation="eager")
    return randomized(transformers.LlamaForCausalLM(cfg), seed)


def bert(seed=0, cls="BertForMaskedLM", **kw):
    cfg = dict(
        vocab_size=99, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
        intermediate_size=40, max_position_embeddings=20, type_vocab_size=2,
    )  # fmt: skip
    cfg = transformers.BertConfig(**{**cfg, **kw}, attn_implementation="eager")
    return randomized(getattr(transformers, cls)(cfg), seed)


def convert(hf_model):
    return from_hf_state_dict(hf_model.config.to_dict(), hf_model.state_dict())


def ours_logits(arch: str, cfg, sd, ids, mask=None, types=None):
    """(fast logits, reference logits) as NumPy, both loaded from the same converted dict."""
    fast = FAST[arch](cfg).eval()
    fast.load_state_dict(sd)
    kw = {} if types is None else {"token_type_ids": torch.from_numpy(types)}
    m = None if mask is None else torch.from_numpy(mask)
    with torch.no_grad():
        f = fast(torch.from_numpy(ids), attention_mask=m, **kw).logits.numpy()
    ref = REFERENCE[arch](cfg, {k: v.numpy() for k, v in sd.items()}).eval()
    kw = {} if types is None else {"token_type_ids": types}
    r = ref.forward(ids, attention_mask=mask, **kw)[0]
    return f, r


def random_ids(vocab, B=2, T=11, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, (B, T)).astype(np.int64)


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [True, False])
def test_gpt2_logits(tied):
    hf = gpt2(tie_word_embeddings=tied)
    cfg, sd = convert(hf)
    assert cfg.tie_word_embeddings == tied and cfg.n_embd == 24 and cfg.block_size == 16
    ids = random_ids(101)
    with torch.no_grad():
        expected = hf(torch.from_numpy(ids)).logits.numpy()
    fast, ref = ours_logits("gpt2", cfg, sd, ids)
    assert_close_dtype(fast, expected, "float32", name="fast logits")
    assert_close_dtype(ref, expected, "float32", name="reference logits")


@pytest.mark.parametrize(
    "heads,kv_heads,tied,vocab",
    [(4, 4, False, 103), (4, 2, True, 103), (4, 1, False, 97), (8, 2, True, 131)],
)
def test_llama_logits(heads, kv_heads, tied, vocab):
    hf = llama(
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        tie_word_embeddings=tied,
        vocab_size=vocab,
        rope_theta=5e5,
        rms_norm_eps=1e-5,
    )
    cfg, sd = convert(hf)
    assert (cfg.n_head, cfg.n_kv_head, cfg.tie_word_embeddings) == (heads, kv_heads, tied)
    assert cfg.rope_theta == 5e5 and cfg.rms_norm_eps == 1e-5
    ids = random_ids(vocab, T=13)
    with torch.no_grad():
        expected = hf(torch.from_numpy(ids)).logits.numpy()
    fast, ref = ours_logits("llama", cfg, sd, ids)
    assert_close_dtype(fast, expected, "float32", name="fast logits")
    assert_close_dtype(ref, expected, "float32", name="reference logits")


def test_bert_mlm_logits_with_padding_and_token_types():
    hf = bert(layer_norm_eps=1e-7)
    cfg, sd = convert(hf)
    assert cfg.layer_norm_eps == 1e-7
    ids = random_ids(99, T=9)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0  # the second row is padded
    types = np.zeros_like(ids)
    types[:, 5:] = 1
    with torch.no_grad():
        expected = hf(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            token_type_ids=torch.from_numpy(types),
        ).logits.numpy()
    fast, ref = ours_logits("bert", cfg, sd, ids, mask, types)
    assert_close_dtype(fast, expected, "float32", name="fast logits")
    assert_close_dtype(ref, expected, "float32", name="reference logits")


def test_bert_model_hidden_states_without_prefix():
    """A bare BertModel (keys without "bert.", a pooler, no MLM head): same last hidden states
    and pooled output; the missing MLM head is zeros."""
    hf = bert(cls="BertModel")
    cfg, sd = convert(hf)
    assert not any(k.startswith("bert.") for k in hf.state_dict())
    assert torch.count_nonzero(sd["mlm_head.dense.weight"]) == 0
    ids = random_ids(99, T=7)
    fast = Bert(cfg).eval()
    fast.load_state_dict(sd)
    with torch.no_grad():
        out = hf(torch.from_numpy(ids))
        ours = fast.encode(torch.from_numpy(ids))
        pooled = torch.tanh(fast.pooler(ours[:, 0]))
    assert_close_dtype(ours, out.last_hidden_state, "float32", name="hidden states")
    assert_close_dtype(pooled, out.pooler_output, "float32", name="pooled")


def test_load_hf_checkpoint_from_saved_directory(tmp_path):
    """save_pretrained writes model.safetensors without the tied lm_head: loading still works."""
    hf = gpt2(seed=3)
    hf.save_pretrained(tmp_path)
    cfg, sd = load_hf_checkpoint(tmp_path)
    ids = random_ids(101, T=5)
    with torch.no_grad():
        expected = hf(torch.from_numpy(ids)).logits.numpy()
    fast, _ = ours_logits("gpt2", cfg, sd, ids)
    assert_close_dtype(fast, expected, "float32", name="fast logits")


# ---- bad checkpoints: one ValueError that lists everything -----------------------------------


def test_every_problem_in_one_error():
    hf = llama()
    sd = dict(hf.state_dict())
    del sd["model.layers.0.mlp.up_proj.weight"]
    del sd["model.norm.weight"]
    sd["model.layers.0.extra.weight"] = torch.zeros(3)
    sd["model.layers.1.self_attn.k_proj.weight"] = torch.zeros(5, 32)
    with pytest.raises(ValueError) as e:
        from_hf_state_dict(hf.config.to_dict(), sd)
    msg = str(e.value)
    for part in (
        "layers.0.mlp.up_proj.weight",
        "norm.weight",
        "unexpected keys (1): ['layers.0.extra.weight']",
        "layers.1.self_attn.k_proj.weight: expected (16, 32), got (5, 32)",
    ):
        assert part in msg, (part, msg)


@pytest.mark.parametrize(
    "make,change,needle",
    [
        (llama, {"attention_bias": True}, "attention_bias=True"),
        (llama, {"rope_parameters": {"rope_type": "linear", "factor": 2.0}}, "'linear'"),
        (gpt2, {"activation_function": "relu"}, "activation_function='relu'"),
        (bert, {"hidden_act": "relu"}, "hidden_act='relu'"),
    ],
)
def test_unsupported_config_is_named(make, change, needle):
    hf = make()
    config = {**hf.config.to_dict(), **change}
    with pytest.raises(ValueError, match="unsupported config") as e:
        from_hf_state_dict(config, hf.state_dict())
    assert needle in str(e.value)


def test_partial_head_is_an_error():
    hf = bert()
    sd = {k: v for k, v in hf.state_dict().items() if "transform.dense" not in k}
    with pytest.raises(ValueError, match=r"missing keys \(2\).*cls.predictions.transform.dense"):
        from_hf_state_dict(hf.config.to_dict(), sd)


def test_wrong_architecture_and_truncated_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(
        ValueError, match=r"model_type one of \['gpt2', 'llama', 'bert'\], got 't5'"
    ):
        load_hf_checkpoint(tmp_path)
    hf = gpt2()
    hf.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="model.safetensors: not a readable safetensors file"):
        load_hf_checkpoint(tmp_path)
