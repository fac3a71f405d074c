"""Adapter directories are PEFT's: an adapter saved by ``save_adapter`` loads into transformers'
model with ``peft.PeftModel.from_pretrained`` and gives our model's logits; one that PEFT saved
loads with ``load_adapter`` and gives PEFT's logits; the tensor names are the ones PEFT writes.
Tiny random transformers LLaMA and GPT-2 models (converted to ours by hub/convert.py), and
SmolLM2-135M's real weights (slow).

Tolerance: float32, logits within 1e-5 of the largest |logit| (as in parity_tests/test_smollm2.py:
the same float32 math in another order through a few layers; observed ~1e-7 on the tiny models).
peft and transformers are test oracles only (the ``hf`` extra); nothing here downloads.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from myllm101.fast.gpt import GPT
from myllm101.fast.llama import Llama
from myllm101.finetune import apply_lora, load_adapter, save_adapter
from myllm101.finetune.adapters import lora_modules
from myllm101.hub.convert import from_hf_state_dict
from parity_tests.helpers import assert_close
from tests.weights import skip_without_smollm2

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
peft = pytest.importorskip("peft", reason="peft is not installed (pip install peft; 'hf' extra)")

LOGIT_TOL = 1e-5  # x the largest |logit|
# PEFT warns that it ignores our "myllm101" entry in adapter_config.json: expected, and harmless
pytestmark = pytest.mark.filterwarnings("ignore:Unexpected keyword arguments:UserWarning")


def assert_logits_close(got, want, name="logits"):
    scale = float(want.abs().max())
    assert_close(got, want, rtol=0.0, atol=LOGIT_TOL * scale, name=name)


def hf_llama(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=103, hidden_size=32, intermediate_size=44, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
        attn_implementation="eager",
    )  # fmt: skip
    return randomized(transformers.LlamaForCausalLM(cfg), seed)


def hf_gpt2(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        n_embd=24, n_layer=2, n_head=3, vocab_size=101, n_positions=16, attn_implementation="eager"
    )
    return randomized(transformers.GPT2LMHeadModel(cfg), seed)


def randomized(model, seed: int, scale: float = 0.1):
    """Seeded noise on every weight (off the unit norms and zero biases of transformers' init).
    The init itself is unseeded: the caller seeds torch before building, so a rebuild is equal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def ours_of(hf_model) -> torch.nn.Module:
    """Our fast model holding the transformers model's weights (hub/convert.py)."""
    cfg, sd = from_hf_state_dict(hf_model.config.to_dict(), hf_model.state_dict())
    model = (Llama if cfg.model_type == "llama" else GPT)(cfg).eval()
    model.load_state_dict(sd)
    return model


def randomize_lora_(model, seed: int = 1, scale: float = 0.3) -> None:
    """Trained-looking adapters: B = 0 would make every comparison trivially pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def ids(vocab: int, B: int = 2, T: int = 9) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(0, vocab, (B, T)))


def logits(model, x) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=x).logits


@pytest.mark.parametrize(
    ("make_hf", "targets"),
    [(hf_llama, ["q_proj", "v_proj", "o_proj", "gate_proj"]), (hf_gpt2, ["c_attn", "c_fc"])],
)
def test_our_adapter_loads_into_peft(tmp_path, make_hf, targets):
    hf = make_hf()
    ours = ours_of(hf)
    x = ids(hf.config.vocab_size)
    base = logits(ours, x)
    apply_lora(ours, targets=targets, r=4, alpha=8, dropout=0.1, base_name="tiny-random")
    randomize_lora_(ours)
    want = logits(ours, x)
    assert not torch.allclose(want, base)
    save_adapter(ours, tmp_path)

    peft_model = peft.PeftModel.from_pretrained(hf, tmp_path).eval()
    assert peft_model.peft_config["default"].r == 4
    assert peft_model.peft_config["default"].lora_alpha == 8
    assert_logits_close(logits(peft_model, x), want, "peft logits")
    # and our own loader, onto a fresh copy of the base: bitwise ours
    fresh = load_adapter(ours_of(make_hf()), tmp_path)
    assert torch.equal(logits(fresh, x), want)


def test_peft_adapter_loads_into_ours(tmp_path):
    hf = hf_llama()
    ours = ours_of(hf)
    config = peft.LoraConfig(
        r=4, lora_alpha=12, lora_dropout=0.1, target_modules=["q_proj", "k_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )  # fmt: skip
    peft_model = peft.get_peft_model(copy.deepcopy(hf), config).eval()
    randomize_lora_(peft_model)
    peft_model.save_pretrained(tmp_path)
    x = ids(hf.config.vocab_size)

    load_adapter(ours, tmp_path)  # no "myllm101" entry: PEFT records no base hash
    layers = lora_modules(ours)
    assert len(layers) == 6 and {n.split(".")[-1] for n in layers} == {"q_proj", "k_proj",
                                                                       "down_proj"}  # fmt: skip
    assert all(m.r == 4 and m.scale == 3.0 and m.dropout_p == 0.1 for m in layers.values())
    assert_logits_close(logits(ours, x), logits(peft_model, x), "our logits")

    # the key names are PEFT's: our save of the same adapter writes exactly PEFT's tensors
    ours_dir = tmp_path / "ours"
    save_adapter(ours, ours_dir)
    from safetensors.torch import load_file

    theirs = load_file(tmp_path / "adapter_model.safetensors")
    mine = load_file(ours_dir / "adapter_model.safetensors")
    assert sorted(mine) == sorted(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    peft_cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    our_cfg = json.loads((ours_dir / "adapter_config.json").read_text())
    for key in ("peft_type", "r", "lora_alpha", "lora_dropout", "bias", "fan_in_fan_out"):
        assert our_cfg[key] == peft_cfg[key], key
    assert sorted(our_cfg["target_modules"]) == sorted(peft_cfg["target_modules"])


def test_layer_subset_is_written_with_full_module_names(tmp_path):
    """A predicate that adapts one layer only: target_modules must not make PEFT adapt more."""
    hf = hf_llama()
    ours = ours_of(hf)
    apply_lora(ours, targets=lambda n, _: n == "layers.1.self_attn.v_proj", r=2, alpha=2)
    randomize_lora_(ours)
    save_adapter(ours, tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["target_modules"] == ["model.layers.1.self_attn.v_proj"]
    peft_model = peft.PeftModel.from_pretrained(hf, tmp_path).eval()
    adapted = [n for n, _ in peft_model.named_parameters() if "lora_A" in n]
    assert adapted == ["base_model.model.model.layers.1.self_attn.v_proj.lora_A.default.weight"]
    x = ids(hf.config.vocab_size)
    assert_logits_close(logits(peft_model, x), logits(ours, x))


@pytest.mark.slow
def test_smollm2_adapter_round_trips_through_peft(tmp_path):
    """SmolLM2-135M (real weights, tied head, 30 layers): our adapter on transformers' model."""
    from myllm101.hub.smollm2 import build_loaded

    skip_without_smollm2()
    from parity_tests.hf_oracles import hf_smollm2

    hf, tok = hf_smollm2()  # cached and shared with other tests: PEFT gets a copy
    cfg, sd = from_hf_state_dict(hf.config.to_dict(), hf.state_dict())
    ours = build_loaded(Llama, cfg, sd)
    apply_lora(ours, r=8, alpha=16, dropout=0.05, base_name="HuggingFaceTB/SmolLM2-135M-Instruct")
    randomize_lora_(ours, scale=0.05)
    x = torch.tensor([tok.encode("The capital of France is")])
    want = logits(ours, x)
    save_adapter(ours, tmp_path)
    peft_model = peft.PeftModel.from_pretrained(copy.deepcopy(hf), tmp_path).eval()
    got = logits(peft_model, x)
    assert not torch.allclose(got, logits(hf, x), atol=1e-3)  # the adapter does act
    assert_logits_close(got, want, "SmolLM2 + adapter logits")
