"""Whole-model behaviour: configs, overfitting one batch, reference vs torch training steps,
gradient checkpointing, bf16 autocast and torch.compile."""

import json

import numpy as np
import pytest
import torch

from myllm101.config import (
    PRESETS,
    BertConfig,
    GPTConfig,
    LlamaConfig,
    config_from_dict,
    get_preset,
)
from myllm101.fast.bert import Bert
from myllm101.fast.gpt import GPT
from myllm101.fast.llama import Llama
from myllm101.fast.optim import make_adamw
from myllm101.reference.bert import ReferenceBert
from myllm101.reference.gpt import ReferenceGPT
from myllm101.reference.llama import ReferenceLlama
from myllm101.reference.optim import AdamW
from tests.train_helpers import one_thread  # noqa: F401 (autouse: one thread for tiny models)

# (fast model class, preset) per architecture; each test below runs on every one
MODELS = {"gpt": (GPT, "gpt-tiny"), "llama": (Llama, "llama-tiny"), "bert": (Bert, "bert-tiny")}


def batch(cfg, seed: int = 0, B: int = 2, T: int = 12):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.vocab_size, (B, T), generator=g)


def run(model, ids, **kw):
    """The model's loss on ids (labels = ids: next-token for decoders, every token for BERT)."""
    return model(ids, labels=ids, **kw).loss


# ---- configs ----


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name):
    cfg = get_preset(name)
    text = cfg.to_json()
    assert type(cfg).from_json(text) == cfg
    assert config_from_dict(json.loads(text)) == cfg
    assert json.loads(text)["model_type"] == cfg.model_type


def test_gpt2_preset_has_124m_parameters():
    """Counted on the model itself (built on the meta device: no memory, no init): GPT-2 small has
    124,439,808 parameters with its head tied to the token embedding, as HF's GPT2LMHeadModel."""
    with torch.device("meta"):
        model = GPT(PRESETS["gpt2"])
    assert model.num_parameters() == 124_439_808
    assert sum(p.numel() for p in model.parameters()) == 124_439_808  # the tied head counts once


def test_config_validation_errors():
    with pytest.raises(ValueError, match="n_embd=10 must be divisible by n_head=3"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="n_head=6 must be divisible by n_kv_head=4"):
        LlamaConfig(n_embd=48, n_head=6, n_kv_head=4)
    with pytest.raises(ValueError, match="n_layer: expected a positive value, got 0"):
        BertConfig(n_layer=0)
    with pytest.raises(ValueError, match=r"dropout: expected a value in \[0.0, 1.0\), got 1.5"):
        GPTConfig(dropout=1.5)
    with pytest.raises(ValueError, match="head_dim: expected an even value for RoPE, got 3"):
        LlamaConfig(n_embd=12, n_head=4, n_kv_head=2)
    with pytest.raises(ValueError, match="vocab_size: expected an int, got float"):
        GPTConfig(vocab_size=3.5)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['n_heads'\]"):
        GPTConfig.from_dict({"n_heads": 4})
    with pytest.raises(ValueError, match="model_type: expected 'gpt', got 'bert'"):
        GPTConfig.from_json(BertConfig().to_json())
    with pytest.raises(ValueError, match=r"preset: expected one of \[.*'gpt2'.*\], got 'gpt3'"):
        get_preset("gpt3")


# ---- training behaviour, every fast model ----


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_overfits_one_batch(kind):
    cls, preset = MODELS[kind]
    cfg = get_preset(preset)
    torch.manual_seed(0)
    model = cls(cfg)
    ids = batch(cfg)
    opt = make_adamw(model.parameters(), lr=3e-2, weight_decay=0.0)
    first = None
    for _ in range(60):
        loss = run(model, ids)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 3.0  # ~log(vocab): the model started knowing nothing
    assert loss.item() < 0.05, f"{kind}: loss {first:.3f} -> {loss.item():.4f} after 60 steps"


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_gradient_checkpointing_gives_identical_grads(kind):
    cls, preset = MODELS[kind]
    cfg = get_preset(preset)
    torch.manual_seed(0)
    model = cls(cfg).double()
    ids = batch(cfg)
    calls = []
    blocks = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)][0]
    blocks[0].register_forward_pre_hook(lambda *_: calls.append(1))  # pre: recompute stops early

    run(model, ids).backward()
    # BERT's classification head takes no part in an MLM pass: its .grad stays None both times
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    assert len(calls) == 1
    model.gradient_checkpointing = True
    run(model, ids).backward()
    assert len(calls) == 3  # forward, then recomputed once during backward
    assert {n for n, p in model.named_parameters() if p.grad is not None} == set(plain)
    for n, p in model.named_parameters():
        if p.grad is None:
            continue
        # the recomputation repeats the same float64 ops in the same order
        torch.testing.assert_close(p.grad, plain[n], rtol=1e-12, atol=1e-15, msg=n)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_bf16_autocast_loss_close_to_fp32(kind):
    cls, preset = MODELS[kind]
    cfg = get_preset(preset)
    torch.manual_seed(0)
    model = cls(cfg)
    ids = batch(cfg)
    exact = run(model, ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, labels=ids)
    assert out.logits.dtype == torch.bfloat16  # the matmuls really ran in bf16
    # bf16 keeps 8 mantissa bits (relative rounding 2**-9 ~ 2e-3 per op); over a 2-layer model the
    # logits move by ~1e-2 absolute and the mean loss (~log V ~ 4.6) by well under 1%
    torch.testing.assert_close(out.loss.float(), exact, rtol=1e-2, atol=1e-2)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_bad_input_raises(kind):
    cls, preset = MODELS[kind]
    cfg = get_preset(preset)
    model = cls(cfg)
    with pytest.raises(ValueError, match=f"expected every id in \\[0, {cfg.vocab_size}\\)"):
        model(torch.full((1, 4), cfg.vocab_size))
    with pytest.raises(ValueError, match=f"block_size={cfg.block_size}, got {cfg.block_size + 1}"):
        model(torch.zeros(1, cfg.block_size + 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask: expected shape \(1, 4\), got \(1, 5\)"):
        model(torch.zeros(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 5))


# ---- reference vs torch training ----


REFERENCES = {"gpt": ReferenceGPT, "llama": ReferenceLlama, "bert": ReferenceBert}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_reference_model_trains_like_torch_adamw(kind):
    # 5 AdamW steps in float64 from the same init: the same losses, so the reference backward and
    # optimizer are exactly what autograd + torch.optim.AdamW compute (not just at step 0)
    cls, preset = MODELS[kind]
    cfg = get_preset(preset)
    torch.manual_seed(0)
    fast = cls(cfg).double()
    ref = REFERENCES[kind](cfg, params={k: v.numpy().copy() for k, v in fast.state_dict().items()})
    ids = batch(cfg, B=3, T=10)
    hyper = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    opt = make_adamw(fast.parameters(), **hyper)
    names = ref.parameter_names()  # a tied weight once, like fast.parameters()
    assert len(names) == len(list(fast.parameters()))
    fast_losses, ref_losses = [], []
    for step in range(5):
        loss = run(fast, ids)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            # torch.optim skips a parameter whose .grad is None (no weight decay either), e.g.
            # BERT's classification head in an MLM pass; the reference reports zeros for those,
            # so hand the reference optimizer only the parameters this pass really uses
            used = {n for n, p in fast.named_parameters() if p.grad is not None}
            names = [n for n in names if n in used]
            ref_opt = AdamW([ref.params[n] for n in names], **hyper)
        opt.step()
        fast_losses.append(loss.item())

        _, ref_loss, cache = ref.forward(ids.numpy(), labels=ids.numpy())
        grads = ref.backward(cache)
        ref_opt.step([grads[n] for n in names])
        ref_losses.append(float(ref_loss))
    assert fast_losses[-1] < fast_losses[0]
    np.testing.assert_allclose(ref_losses, fast_losses, rtol=1e-6)
    for name, p in fast.state_dict().items():
        np.testing.assert_allclose(ref.params[name], p.numpy(), rtol=1e-6, atol=1e-9, err_msg=name)


# ---- torch.compile ----


@pytest.mark.slow
def test_compiled_gpt_matches_eager():
    cfg = get_preset("gpt-tiny")
    torch.manual_seed(0)
    model = GPT(cfg)
    ids = batch(cfg)
    eager = model(ids, labels=ids)
    compiled = torch.compile(model)
    out = compiled(ids, labels=ids)
    # the same float32 math, fused differently: reassociated sums differ by a few ulps
    torch.testing.assert_close(out.logits, eager.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.loss, eager.loss, rtol=1e-5, atol=1e-6)
    out.loss.backward()
    assert model.wte.weight.grad is not None


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_compiled_loss_stays_outside_the_graph(kind):
    # a compiled model returns its logits and its loss; were the loss inside the graph, the
    # logits output would get no gradient in backward and AOTAutograd would zero-fill one the
    # size of the logits (B, T, V) and add it in. The loss runs eagerly instead (a graph break),
    # so backward neither fills nor allocates a zero tensor that size, and the gradients equal
    # eager's (aot_eager runs the traced ops one by one, the same kernels)
    cls, preset = MODELS[kind]
    cfg = get_preset(preset)
    torch.manual_seed(0)
    model = cls(cfg)
    ids = batch(cfg)
    run(model, ids).backward()
    eager = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    compiled = torch.compile(model, backend="aot_eager")
    loss = run(compiled, ids)
    with torch.profiler.profile(record_shapes=True) as prof:
        loss.backward()
    big = [
        (e.name, e.input_shapes)
        for e in prof.events()
        if e.name in ("aten::fill_", "aten::zero_", "aten::zeros", "aten::zeros_like")
        and any(int(np.prod(s)) >= ids.numel() * cfg.vocab_size for s in e.input_shapes if s)
    ]
    assert not big, big
    for n, p in model.named_parameters():
        if n in eager:
            torch.testing.assert_close(p.grad, eager[n], rtol=1e-5, atol=1e-7, msg=n)
