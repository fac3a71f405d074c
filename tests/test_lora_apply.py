"""LoRA on whole models (myllm101.finetune): apply_lora, merge / unmerge, training touches only the
adapters, adapter directories round-trip, the base identity check, bad adapter files, and LoRA
over a frozen int8 base (QLoRA-style).

Tolerances: float64 models. A merged layer computes x (W + s B A)^T where the unmerged one computes
x W^T + s (x A^T) B^T: the same sums grouped differently, ~1e-16 relative per layer, and the
logits after two layers of them agree to rtol 1e-10 (as the whole-model parity tests, atol 1e-12
for logits near zero). Unmerging subtracts s B A again: W back to within a few ulps (atol 1e-12
at |W| ~ 1). Everything that should not change at all (frozen weights, B = 0, a reload) is
compared bitwise.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from myllm101.config import GPTConfig, LlamaConfig
from myllm101.fast.gpt import GPT
from myllm101.fast.int8 import Int8Linear
from myllm101.fast.llama import Llama
from myllm101.fast.lora import Int8LoRALinear, LoRALinear
from myllm101.finetune import (
    apply_lora,
    base_model_hash,
    count_parameters,
    load_adapter,
    merge_lora,
    save_adapter,
    trainable_summary,
    unmerge_lora,
)
from myllm101.finetune.adapters import base_state, lora_modules
from parity_tests.helpers import assert_close

RTOL, ATOL = 1e-10, 1e-12


def llama_cfg(**kw) -> LlamaConfig:
    base = dict(
        vocab_size=37, block_size=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=16,
        intermediate_size=24,
    )  # fmt: skip
    return LlamaConfig(**{**base, **kw})


def gpt_cfg(**kw) -> GPTConfig:
    return GPTConfig(**{**dict(vocab_size=37, block_size=16, n_layer=2, n_head=2, n_embd=16), **kw})


def build(kind: str = "llama", seed: int = 0, dtype=torch.float64, **kw) -> torch.nn.Module:
    """A tiny model with every weight moved off its init (so a mix-up shows)."""
    torch.manual_seed(seed)
    model = (Llama(llama_cfg(**kw)) if kind == "llama" else GPT(gpt_cfg(**kw))).to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return model.eval()


def copy_of(model: torch.nn.Module, kind: str = "llama", dtype=torch.float64) -> torch.nn.Module:
    """The same base weights in a fresh model (another seed's init, then overwritten)."""
    other = build(kind, seed=99, dtype=dtype)
    other.load_state_dict(base_state(model))
    return other


def randomize_adapters_(model: torch.nn.Module, seed: int = 1) -> None:
    """Pretend the adapters were trained: a fresh B is zero and would hide every mix-up."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_modules(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.5)


def ids(vocab: int = 37, B: int = 2, T: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, vocab, (B, T)))


def logits(model, x) -> torch.Tensor:
    with torch.no_grad():
        return model(x).logits


# ----------------------------------------------------------------------------------------------
# apply, count, merge


@pytest.mark.parametrize("kind", ["llama", "gpt"])
def test_fresh_adapter_equals_base_model(kind):
    model = build(kind)
    x = ids()
    before = logits(model, x)
    apply_lora(model, r=4, alpha=8, dropout=0.0)
    names = list(lora_modules(model))
    want = "self_attn.q_proj" if kind == "llama" else "attn.c_attn"
    assert names and all(n.endswith(("q_proj", "v_proj", "c_attn")) for n in names)
    assert any(n.endswith(want) for n in names)
    assert torch.equal(logits(model, x), before)  # B = 0: exactly the base model


def test_only_lora_parameters_train_and_the_summary_counts_them(capsys):
    model = build()
    total_before = sum(p.numel() for p in model.parameters())
    apply_lora(model, targets=["q_proj", "v_proj", "down_proj"], r=4, alpha=8, verbose=True)
    assert capsys.readouterr().out == trainable_summary(model) + "\n"
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    # per adapted layer r * (in + out): q (16 -> 16), v (16 -> 8), down (24 -> 16), two layers
    want = 2 * 4 * ((16 + 16) + (16 + 8) + (24 + 16))
    assert count_parameters(model) == (want, total_before + want)
    pct = 100 * want / (total_before + want)
    assert trainable_summary(model) == (
        f"trainable params: {want:,} || all params: {total_before + want:,} || trainable%: {pct:.4f}"
    )
    # the base keeps its state_dict names; the adapters add theirs
    keys = set(model.state_dict())
    assert "layers.0.self_attn.q_proj.weight" in keys and "layers.1.mlp.down_proj.lora_B" in keys


def test_targets_predicate_and_bad_targets():
    model = build()
    apply_lora(model, targets=lambda name, m: name == "layers.0.self_attn.k_proj", r=2, alpha=2)
    assert list(lora_modules(model)) == ["layers.0.self_attn.k_proj"]
    with pytest.raises(ValueError, match="expected a model without LoRA layers, got one with 1"):
        apply_lora(model)
    with pytest.raises(ValueError, match=r"targets: expected names of linear layers \[.*'q_proj'"):
        apply_lora(build(), targets=["qproj"])
    with pytest.raises(ValueError, match="'layers.0.self_attn' is a MultiHeadAttention, expected"):
        apply_lora(build(), targets=["layers.0.self_attn"])
    with pytest.raises(ValueError, match="lm_head.weight is tied to"):
        apply_lora(build(tie_word_embeddings=True), targets=["lm_head"])
    with pytest.raises(ValueError, match="targets: expected a non-empty list"):
        apply_lora(build(), targets="q_proj")
    with pytest.raises(ValueError, match="r: expected a positive value, got 0"):
        apply_lora(build(), r=0)
    with pytest.raises(ValueError, match="expected LoRA layers"):
        merge_lora(build())


@pytest.mark.parametrize("kind", ["llama", "gpt"])
def test_merged_equals_unmerged(kind):
    model = build(kind)
    apply_lora(model, targets=None if kind == "llama" else ["c_attn", "c_fc"], r=3, alpha=6)
    randomize_adapters_(model)
    w0 = {k: v.clone() for k, v in base_state(model).items()}
    x = ids()
    unmerged = logits(model, x)
    assert not torch.allclose(unmerged, copy_of(model, kind)(x).logits)  # the adapters do act
    merge_lora(model)
    assert all(m.merged for m in lora_modules(model).values())
    assert_close(logits(model, x), unmerged, rtol=RTOL, atol=ATOL, name="merged logits")
    unmerge_lora(model)
    assert_close(logits(model, x), unmerged, rtol=RTOL, atol=ATOL, name="unmerged logits")
    for k, w in base_state(model).items():
        assert_close(w, w0[k], rtol=0, atol=ATOL, name=k)


def test_training_leaves_frozen_weights_bitwise_unchanged():
    model = build(dtype=torch.float32).train()
    apply_lora(model, targets=["q_proj", "v_proj", "up_proj"], r=4, alpha=8, dropout=0.05)
    frozen = {k: v.clone() for k, v in base_state(model).items()}
    lora0 = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    # every parameter goes to the optimizer, weight decay on: a frozen one must still not move
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    x = ids(B=4, T=12)
    losses = []
    for _ in range(8):
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    for k, v in base_state(model).items():
        assert torch.equal(v, frozen[k]), f"{k} changed"
    for n, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n
        if p.requires_grad:
            assert not torch.equal(p, lora0[n]), f"{n} did not train"
    assert losses[-1] < losses[0]


# ----------------------------------------------------------------------------------------------
# save / load


@pytest.mark.parametrize("kind", ["llama", "gpt"])
def test_adapter_round_trips(tmp_path, kind):
    model = build(kind)
    apply_lora(model, r=4, alpha=8, dropout=0.05, base_name="tiny-base")
    randomize_adapters_(model)
    save_adapter(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert config["lora_dropout"] == 0.05 and config["base_model_name_or_path"] == "tiny-base"
    assert config["target_modules"] == (["q_proj", "v_proj"] if kind == "llama" else ["c_attn"])
    assert config["myllm101"]["base_hash"] == base_model_hash(copy_of(model, kind))
    x = ids()
    fresh = load_adapter(copy_of(model, kind), tmp_path)
    assert torch.equal(logits(fresh, x), logits(model, x))  # same weights, same ops: bitwise
    assert fresh.lora_base_identity["base_name"] == "tiny-base"  # the hash matched: same base
    for name, layer in lora_modules(model).items():
        got = lora_modules(fresh)[name]
        assert torch.equal(got.lora_A, layer.lora_A) and torch.equal(got.lora_B, layer.lora_B)
        assert (got.r, got.alpha, got.dropout_p) == (4, 8, 0.05)
    # loading again onto a model with the same (unmerged) LoRA layers overwrites the factors
    with torch.no_grad():
        for layer in lora_modules(fresh).values():
            layer.lora_A.zero_()
    load_adapter(fresh, tmp_path)
    assert torch.equal(logits(fresh, x), logits(model, x))


def test_saving_a_merged_model_keeps_the_base_identity(tmp_path):
    model = build()
    apply_lora(model, r=2, alpha=4)
    randomize_adapters_(model)
    merge_lora(model)  # rewrites the base weights; the identity was taken before
    save_adapter(model, tmp_path)
    fresh = load_adapter(copy_of(build()), tmp_path)
    assert_close(logits(fresh, ids()), logits(model, ids()), rtol=RTOL, atol=ATOL, name="logits")
    with pytest.raises(ValueError, match="expected the model's LoRA layers to be unmerged"):
        load_adapter(model, tmp_path)


def test_another_base_is_refused(tmp_path):
    model = build()
    apply_lora(model, r=2, alpha=4, base_name="base-a")
    save_adapter(model, tmp_path)
    with pytest.raises(ValueError, match=r"made for the base model 'base-a' with hash sha256:"):
        load_adapter(build(seed=5), tmp_path)  # other weights
    with pytest.raises(ValueError, match="another base .or the same one in another dtype"):
        load_adapter(copy_of(model, dtype=torch.float32).float(), tmp_path)
    with pytest.raises(ValueError, match="made for the base model 'base-a', got 'base-b'"):
        load_adapter(copy_of(model), tmp_path, base_name="base-b")
    with pytest.raises(ValueError, match="this adapter is for a llama model, got a gpt model"):
        load_adapter(build("gpt"), tmp_path)
    other = load_adapter(build(seed=5), tmp_path, check_base=False)  # on request: loads anyway
    assert len(lora_modules(other)) == 4


def corrupt(tmp_path, name: str, text: str | bytes):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


@pytest.fixture
def saved(tmp_path):
    model = build()
    apply_lora(model, r=2, alpha=4)
    save_adapter(model, tmp_path)
    return tmp_path, json.loads((tmp_path / "adapter_config.json").read_text())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"peft_type": "PREFIX_TUNING"}, "peft_type: expected 'LORA', got 'PREFIX_TUNING'"),
        ({"r": 0}, "r: expected an int >= 1, got 0"),
        ({"r": None}, "r: expected an int >= 1, got None"),
        ({"lora_alpha": "16"}, "lora_alpha: expected a finite number, got '16'"),
        ({"lora_dropout": 1.5}, r"lora_dropout: expected a value in \[0.0, 1.0\), got 1.5"),
        ({"use_dora": True}, "use_dora: expected False .the only value our LoRA implements"),
        ({"use_rslora": True}, "use_rslora: expected False"),
        ({"rank_pattern": {"q_proj": 4}}, "rank_pattern: expected {}"),
        ({"r": 3}, r"lora_A.weight: expected shape \(3, 16\) .r and this model's layer., got"),
    ],
)
def test_bad_adapter_config(saved, change, message):
    directory, config = saved
    corrupt(directory, "adapter_config.json", json.dumps({**config, **change}))
    with pytest.raises(ValueError, match=message):
        load_adapter(build(), directory, check_base=False)


def test_corrupt_or_missing_adapter_files(saved):
    from safetensors.torch import load_file, save_file

    directory, config = saved
    weights = directory / "adapter_model.safetensors"
    tensors = load_file(weights)
    raw = weights.read_bytes()

    corrupt(directory, "adapter_model.safetensors", raw[: len(raw) // 2])  # truncated
    with pytest.raises(ValueError, match="adapter_model.safetensors: not a readable safetensors"):
        load_adapter(build(), directory)
    corrupt(directory, "adapter_model.safetensors", b"not a tensor file at all")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_adapter(build(), directory)

    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
    save_file({k: v for k, v in tensors.items() if k != key}, weights)
    with pytest.raises(
        ValueError, match=r"'layers.0.self_attn.q_proj': expected lora_A and lora_B"
    ):
        load_adapter(build(), directory)
    save_file({**tensors, key: tensors[key][:3]}, weights)
    with pytest.raises(ValueError, match=r"q_proj.lora_B.weight: expected shape \(16, 2\)"):
        load_adapter(build(), directory)
    extra = "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight"
    a_key = key.replace("lora_B", "lora_A")
    more = {extra: tensors[a_key].clone(), extra.replace("lora_A", "lora_B"): tensors[key].clone()}
    save_file({**tensors, **more}, weights)
    with pytest.raises(ValueError, match="module 'layers.7.self_attn.q_proj', which this model"):
        load_adapter(build(), directory)
    save_file(
        {**tensors, "base_model.model.model.embed_tokens.weight": tensors[key].clone()}, weights
    )
    with pytest.raises(ValueError, match="adapter key: expected '.*lora_A.weight'.* got"):
        load_adapter(build(), directory)
    save_file({}, weights)
    with pytest.raises(ValueError, match="expected LoRA tensors .lora_A / lora_B., found none"):
        load_adapter(build(), directory)

    corrupt(directory, "adapter_config.json", "{ not json")
    with pytest.raises(ValueError, match="adapter_config.json: expected JSON, could not parse"):
        load_adapter(build(), directory)
    (directory / "adapter_config.json").unlink()
    with pytest.raises(ValueError, match="adapter: expected the file .*adapter_config.json"):
        load_adapter(build(), directory)


# ----------------------------------------------------------------------------------------------
# LoRA over a frozen int8 base (QLoRA-style)


def quantize_blocks_(model: torch.nn.Module) -> None:
    """Every linear layer inside the blocks -> a weight-only Int8Linear (lm_head stays float)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, torch.nn.Linear) and name.startswith("layers."):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, Int8Linear.from_linear(module))


# the weight-only int8 kernel is chosen by the CPU (device.int8_linear_kernel); force the portable
# one and let the other run as this machine chooses
@pytest.mark.parametrize("kernel", ["dequantize", None])
def test_qlora_over_int8_base_lowers_the_loss(tmp_path, monkeypatch, kernel):
    if kernel is None:
        monkeypatch.delenv("MYLLM101_INT8_KERNEL", raising=False)
    else:
        monkeypatch.setenv("MYLLM101_INT8_KERNEL", kernel)
    model = build(dtype=torch.float32)
    quantize_blocks_(model)
    hash_before = base_model_hash(model)
    apply_lora(model, targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                               "down_proj"], r=4, alpha=8, dropout=0.0)  # fmt: skip
    layers = lora_modules(model)
    assert len(layers) == 14 and all(isinstance(m, Int8LoRALinear) for m in layers.values())
    assert model.lora_base_identity["base_hash"] == hash_before  # base_layer. is not in the hash
    frozen = {k: v.clone() for k, v in base_state(model).items()}
    assert frozen["layers.0.self_attn.q_proj.weight_q"].dtype == torch.int8

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = ids(B=4, T=12)
    model.train()
    losses = []
    for _ in range(25):
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # every adapter got a gradient, layer 0's through layer 1's int8 layers
    assert all(m.lora_A.grad.abs().sum() > 0 for m in layers.values())
    assert losses[-1] < 0.8 * losses[0], losses
    for k, v in base_state(model).items():
        assert torch.equal(v, frozen[k]), f"{k} changed"
    with pytest.raises(ValueError, match="merge: the base layer is int8"):
        merge_lora(model)

    save_adapter(model, tmp_path)
    fresh = build(dtype=torch.float32)
    quantize_blocks_(fresh)
    fresh.load_state_dict(frozen)
    load_adapter(fresh, tmp_path)
    model.eval()
    assert torch.equal(logits(fresh.eval(), x), logits(model, x))
    with pytest.raises(ValueError, match="made for the base model None with hash"):
        load_adapter(build(dtype=torch.float32), tmp_path)  # the float base is another base


def test_int8_base_needs_weight_only_mode():
    linear = torch.nn.Linear(8, 4)
    with pytest.raises(ValueError, match="base mode: expected 'weight_only' .*, got 'w8a8'"):
        Int8LoRALinear(Int8Linear.from_linear(linear, mode="w8a8"), r=2, alpha=4)
    assert isinstance(LoRALinear(linear, r=2, alpha=4), LoRALinear)
