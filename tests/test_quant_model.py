"""Whole-model quantization (myllm101/quant): schemes, skip rules, quantized checkpoints, perplexity.

Tiny random LLaMA / GPT models, except the perplexity oracle (real SmolLM2 against transformers).
Tolerances: a weight-only quantized model computes F.linear with the dequantized weight, so it
must equal the float model whose Linear weights are replaced by dequantize(q, scale) up to float32
rounding of the same ops (rtol 1e-5 of the largest logit). w8a8 also rounds each activation row to
int8 (a relative error up to 1/254 per element): bounded loosely at 5% of the largest logit.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from myllm101.config import GPTConfig, LlamaConfig
from myllm101.fast.gpt import GPT
from myllm101.fast.llama import Llama
from myllm101.quant import SCHEMES, parse_scheme, quantize, save_quantized
from myllm101.quant.eval import perplexity, top1_agreement, window_spans
from myllm101.quant.heldout import STDLIB_CHARS, calibration_batches, stdlib_text
from myllm101.quant.quantize import default_skip, linear_names, quantized_bytes
from myllm101.train.checkpoint import load_model, save_model_dir, write_manifest

LLAMA = LlamaConfig(vocab_size=96, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=128,
                    intermediate_size=256, tie_word_embeddings=True)  # fmt: skip
GPT_CFG = GPTConfig(vocab_size=96, block_size=64, n_layer=2, n_head=2, n_embd=128)
RTN = [s for s in SCHEMES if not s.startswith("gptq")]
HAS_INT4 = importlib.util.find_spec("myllm101.fast.int4") is not None


def tiny(kind: str = "llama", seed: int = 0):
    torch.manual_seed(seed)
    cfg = LLAMA if kind == "llama" else GPT_CFG
    return (Llama if kind == "llama" else GPT)(cfg).eval(), cfg


def ids(n: int = 24, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 96, (1, n), generator=torch.Generator().manual_seed(seed))


def dequantized_twin(model, quantized):
    """The float model with every quantized Linear's weight replaced by its dequantized value."""
    twin = copy.deepcopy(model)
    for name in quantized.quantization["modules"]:
        q = quantized.get_submodule(name)
        if hasattr(q, "weight_q"):
            w = q.weight_q.float() * q.weight_scale[:, None]
        else:
            from myllm101.fast.int4 import dequantize_int4

            w = dequantize_int4(q.weight_packed, q.weight_scale, q.group_size)
        twin.get_submodule(name).weight.data.copy_(w)
    return twin


def _needs_int4(scheme: str) -> None:
    if "int4" in scheme and not HAS_INT4:
        pytest.fail("myllm101.fast.int4 is missing: the int4 schemes cannot run")


# ---- schemes and module selection -------------------------------------------------------------


def test_parse_scheme_names_and_bad_names():
    assert parse_scheme("int8").mode == "weight_only" and parse_scheme("w8a8").mode == "w8a8"
    s = parse_scheme("gptq-int4-g128")
    assert (s.bits, s.group_size, s.gptq, s.needs_calibration) == (4, 128, True, True)
    assert parse_scheme("int4-g32").group_size == 32 and not parse_scheme("int4-g32").gptq
    for bad in ("int3", "int4", "int4-g48", "int4-g64x", "INT8", "gptq-int8", "", None):
        with pytest.raises(ValueError, match=r"scheme: expected one of int8, w8a8, int4-g32.*got"):
            parse_scheme(bad)


@pytest.mark.parametrize("kind", ["llama", "gpt"])
def test_with_lm_head_skipped_every_untied_linear_is_quantized_and_the_head_stays_tied(kind):
    model, _ = tiny(kind)
    quantize(model, "int8", skip=["lm_head"])
    names = model.quantization["modules"]
    assert "lm_head" not in names and len(names) == (7 if kind == "llama" else 4) * 2
    assert all(type(model.get_submodule(n)).__name__ == "Int8Linear" for n in names)
    assert isinstance(model.lm_head, torch.nn.Linear)  # still tied to the embedding
    head_owner = model.embed_tokens if kind == "llama" else model.wte
    assert model.lm_head.weight is head_owner.weight and "tied" not in model.quantization
    sizes = quantized_bytes(model)
    mods = [model.get_submodule(n) for n in names]
    bias = [4 * m.out_features if m.bias is not None else 0 for m in mods]  # float32 biases
    assert sizes["float"] == sum(4 * m.out_features * m.in_features for m in mods) + sum(bias)
    # int8 weights + one float32 scale per row
    want = sum(m.out_features * m.in_features + 4 * m.out_features for m in mods) + sum(bias)
    assert sizes["quantized"] == want


@pytest.mark.parametrize("scheme", ["int8", "w8a8"])
@pytest.mark.parametrize("kind", ["llama", "gpt"])
def test_8bit_default_quantizes_the_tied_head_and_its_embedding_shares_the_codes(kind, scheme):
    from myllm101.fast.int8 import Int8Embedding
    from myllm101.reference.int8 import int8_embedding_forward

    model, _ = tiny(kind)
    table = (model.embed_tokens if kind == "llama" else model.wte).weight.detach().clone()
    quantize(model, scheme)
    emb_name = "embed_tokens" if kind == "llama" else "wte"
    assert model.quantization["modules"][-1] == "lm_head"
    assert model.quantization["tied"] == {emb_name: "lm_head"}
    emb, head = model.get_submodule(emb_name), model.lm_head
    assert isinstance(emb, Int8Embedding)
    assert emb.weight_q is head.weight_q and emb.weight_scale is head.weight_scale  # one copy
    # the codes are the float table's, per row (= per output channel of the head)
    err = (emb.weight_q.float() * emb.weight_scale[:, None] - table).abs()
    assert bool((err <= emb.weight_scale[:, None] / 2 * (1 + 1e-6)).all())
    x = ids(12)
    want = int8_embedding_forward(x.numpy(), emb.weight_q.numpy(), emb.weight_scale.numpy())
    assert torch.equal(emb(x), torch.from_numpy(want))  # reference == fast, exactly
    with pytest.raises(ValueError, match="ids"):
        emb(torch.tensor([[96]]))


@pytest.mark.parametrize("kind", ["llama", "gpt"])
def test_int4_default_keeps_the_tied_head_in_float_and_never_quantizes_it(kind):
    _needs_int4("int4-g32")
    model, _ = tiny(kind)
    quantize(model, "int4-g32")
    assert "lm_head" not in model.quantization["modules"] and model.quantization["skip"] == [
        "lm_head"
    ]
    tied, _ = tiny(kind)
    quantize(tied, "int4-g32", skip=[])  # a tied head stays float in int4 even when not skipped
    assert "lm_head" not in tied.quantization["modules"] and "tied" not in tied.quantization


def test_skip_names_and_globs():
    model, _ = tiny()
    assert linear_names(model, ["layers.0.*", "*.down_proj"]) == [
        "layers.1.self_attn.q_proj", "layers.1.self_attn.k_proj", "layers.1.self_attn.v_proj",
        "layers.1.self_attn.o_proj", "layers.1.mlp.gate_proj", "layers.1.mlp.up_proj",
    ]  # fmt: skip
    untied, _ = tiny("gpt")
    untied.lm_head.weight = torch.nn.Parameter(untied.lm_head.weight.detach().clone())
    assert "lm_head" in linear_names(untied, []) and "lm_head" not in linear_names(untied)


def test_bad_skip_and_bad_calls_give_clear_errors():
    model, _ = tiny()
    with pytest.raises(ValueError, match=r"skip: pattern 'layers\.9\.\*' matches no Linear"):
        quantize(model, "int8", skip=["layers.9.*"])
    with pytest.raises(ValueError, match="skip: expected a list of module names or glob patterns"):
        quantize(model, "int8", skip="lm_head")
    with pytest.raises(ValueError, match="expected at least one Linear to quantize"):
        quantize(model, "int8", skip=["*"])
    with pytest.raises(ValueError, match="scheme gptq-int4-g32: expected calibration batches"):
        quantize(model, "gptq-int4-g32")
    with pytest.raises(ValueError, match=r"calibration\[0\]: expected a \(B, T\) int64 tensor"):
        quantize(model, "gptq-int4-g32", calibration=[torch.zeros(8)])
    assert not hasattr(model, "quantization") or not model.quantization  # nothing half-done
    odd = Llama(LlamaConfig(vocab_size=96, block_size=16, n_layer=1, n_head=2, n_kv_head=1,
                            n_embd=96, intermediate_size=96)).eval()  # fmt: skip
    with pytest.raises(ValueError, match=r"in_features=96 is not a multiple of group_size=64"):
        quantize(odd, "int4-g64")
    quantize(model, "int8")
    with pytest.raises(ValueError, match=r"already quantized \(int8\); expected a float model"):
        quantize(model, "w8a8")


# ---- numerics ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", [s for s in RTN if s != "w8a8"])
@pytest.mark.parametrize("kind", ["llama", "gpt"])
@pytest.mark.parametrize("int4_kernel", ["dequantize", "int4pack"])
def test_weight_only_model_equals_float_model_with_dequantized_weights(
    kind, scheme, int4_kernel, monkeypatch
):
    """int4: each CPU branch of Int4Linear forced. "dequantize" is F.linear with the dequantized
    weight (float32 rounding only: 1e-5); torch's int4pack kernel runs x, scales and y in bf16
    (fast/int4.py: <= 2 * 2**-9 relative per product, one more rounding of y), which through two
    layers and the head we bound at 2e-2 of the largest logit."""
    _needs_int4(scheme)
    if "int4" not in scheme and int4_kernel == "int4pack":
        return  # int8 has no such branch
    if "int4" in scheme:
        from myllm101.fast.int4 import Int4Linear

        monkeypatch.setattr(Int4Linear, "cpu_kernel", lambda self, x: int4_kernel)
    model, _ = tiny(kind)
    q = quantize(copy.deepcopy(model), scheme)
    x = ids()
    with torch.no_grad():
        got, want = q(x).logits, dequantized_twin(model, q)(x).logits
        float_logits = model(x).logits
    scale = float(want.abs().max())
    tol = 2e-2 if int4_kernel == "int4pack" and "int4" in scheme else 1e-5
    torch.testing.assert_close(got, want, rtol=0, atol=tol * scale)
    assert not torch.equal(got, float_logits)  # quantization did change something


def test_w8a8_model_stays_near_the_float_model():
    model, _ = tiny()
    q = quantize(copy.deepcopy(model), "w8a8")
    x = ids()
    with torch.no_grad():
        got, want = q(x).logits, model(x).logits
    err = float((got - want).abs().max() / want.abs().max())
    assert 0 < err < 0.05, err


# ---- fused projections ----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["int8", "w8a8"])
def test_fused_int8_projections_compute_the_same_logits_and_unfuse_bitwise(scheme):
    """Per-row codes and scales stack: the fused model runs the same rows (bitwise here, fbgemm's
    rows being independent dot products; asserted to float32 rounding in case a kernel blocks a
    wider matrix differently), its greedy tokens are the same, and unfuse gives back every
    buffer bitwise."""
    from myllm101.fast.fuse import fuse_for_inference, unfuse
    from myllm101.fast.generate import generate
    from myllm101.fast.int8 import Int8Linear

    model, _ = tiny()
    quantize(model, scheme)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_for_inference(copy.deepcopy(model))
    qkv = fused.layers[0].self_attn.qkv_proj
    assert isinstance(qkv, Int8Linear) and qkv.mode == parse_scheme(scheme).mode
    assert qkv.weight_q.shape == (128 + 2 * 64, 128) and fused.layers[0].mlp.gate_up_proj.mode
    x = ids(20)
    with torch.inference_mode():
        want, got = model(x).logits, fused(x).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    prompt = x[0, :6].tolist()
    assert generate(fused, prompt, 6, temperature=0) == generate(model, prompt, 6, temperature=0)
    back = unfuse(fused)
    assert set(back.state_dict()) == set(before)
    assert all(torch.equal(v, before[k]) for k, v in back.state_dict().items())


def test_fusing_int8_projections_of_different_kinds_is_refused():
    from myllm101.fast.fuse import fuse_linears
    from myllm101.fast.int8 import Int8Linear

    lin = torch.nn.Linear(8, 4)
    a, b = Int8Linear.from_linear(lin), Int8Linear.from_linear(lin, mode="w8a8")
    with pytest.raises(ValueError, match=r"Int8Linears of one mode, got \['weight_only', 'w8a8'\]"):
        fuse_linears([a, b])
    per_tensor = Int8Linear.from_linear(lin, per_channel=False)
    with pytest.raises(ValueError, match="expected per-channel Int8Linears"):
        fuse_linears([a, per_tensor])
    if HAS_INT4:
        from myllm101.fast.int4 import Int4Linear

        c = Int4Linear.from_linear(torch.nn.Linear(32, 4), group_size=32)
        with pytest.raises(ValueError, match=r"nn.Linear or Int8Linear modules .*Int4Linear"):
            fuse_linears([c, c])


# ---- checkpoints --------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", RTN)
@pytest.mark.parametrize("kind", ["llama", "gpt"])
def test_quantized_checkpoint_saves_loads_and_generates(tmp_path, kind, scheme):
    from myllm101.fast.generate import generate

    _needs_int4(scheme)
    model, cfg = tiny(kind)
    quantize(model, scheme)
    save_quantized(model, tmp_path / "q", cfg, base="somewhere")
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    entry = config["quantization"]
    assert entry["scheme"] == scheme and entry["modules"] == model.quantization["modules"]
    assert entry["base"] == "somewhere" and entry["skip"] == list(default_skip(scheme))
    assert entry.get("tied") == ({"embed_tokens" if kind == "llama" else "wte": "lm_head"}
                                 if "int8" in scheme or scheme == "w8a8" else None)  # fmt: skip
    assert entry["group_size"] == parse_scheme(scheme).group_size
    manifest = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert {"config.json", "model.safetensors"} <= set(manifest["files"])
    loaded, _, loaded_cfg = load_model(tmp_path / "q")
    assert loaded_cfg == cfg and loaded.quantization["scheme"] == scheme
    x = ids()
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)
    prompt = x[0, :8].tolist()
    assert generate(loaded, prompt, 8, temperature=0) == generate(model, prompt, 8, temperature=0)
    save_model_dir(tmp_path / "f", tiny(kind)[0], cfg)
    q_bytes = (tmp_path / "q" / "model.safetensors").stat().st_size
    f_bytes = (tmp_path / "f" / "model.safetensors").stat().st_size
    assert q_bytes < f_bytes


def _rewrite(directory, edit_config=None, edit_tensors=None):
    """Change a saved directory as a buggy writer would, manifest included (so only the content
    checks can catch it)."""
    from safetensors.torch import load_file, save_file

    if edit_config:
        path = directory / "config.json"
        config = json.loads(path.read_text())
        edit_config(config)
        path.write_text(json.dumps(config))
    if edit_tensors:
        path = directory / "model.safetensors"
        tensors = load_file(path)
        edit_tensors(tensors)
        save_file(tensors, path, metadata={"format": "pt", "tied": ""})
    write_manifest(directory)


def test_quantized_checkpoints_whose_tensors_do_not_match_are_refused(tmp_path):
    model, cfg = tiny()
    quantize(model, "int8", skip=["lm_head"])
    save_quantized(model, tmp_path / "q", cfg)
    name = "layers.0.mlp.up_proj"

    def as_float(t):
        t[f"{name}.weight_q"] = t[f"{name}.weight_q"].float()

    _rewrite(tmp_path / "q", edit_tensors=as_float)
    with pytest.raises(ValueError, match=rf"{name}\.weight_q is stored as F32 but the int8 module"):
        load_model(tmp_path / "q")

    save_quantized(model, tmp_path / "q2", cfg)
    _rewrite(tmp_path / "q2", edit_tensors=lambda t: t.pop(f"{name}.weight_scale"))
    with pytest.raises(ValueError, match=rf"weights do not fit the model: missing \['{name}"):
        load_model(tmp_path / "q2")

    save_quantized(model, tmp_path / "q3", cfg)
    _rewrite(tmp_path / "q3", edit_config=lambda c: c["quantization"].update(modules=["norm"]))
    with pytest.raises(ValueError, match="quantization module 'norm' is not a Linear"):
        load_model(tmp_path / "q3")

    save_quantized(model, tmp_path / "q4", cfg)
    _rewrite(tmp_path / "q4", edit_config=lambda c: c["quantization"].update(scheme="int5"))
    with pytest.raises(ValueError, match=r'"quantization.scheme": expected one of int8, .*got'):
        load_model(tmp_path / "q4")

    save_quantized(model, tmp_path / "q5", cfg)  # an edit without a new manifest: sha256 check
    (tmp_path / "q5" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="config.json is (truncated|corrupted)"):
        load_model(tmp_path / "q5")
    with pytest.raises(ValueError, match="expected a quantized model"):
        save_quantized(tiny()[0], tmp_path / "q6", cfg)

    tied, _ = tiny()
    quantize(tied, "int8")  # the head and the embedding share one int8 copy
    save_quantized(tied, tmp_path / "t1", cfg)
    assert torch.equal(load_model(tmp_path / "t1")[0](ids()).logits, tied(ids()).logits)
    _rewrite(
        tmp_path / "t1", edit_config=lambda c: c["quantization"].update(tied={"norm": "lm_head"})
    )
    with pytest.raises(
        ValueError, match="quantization.tied names 'norm', which is not an Embedding"
    ):
        load_model(tmp_path / "t1")
    save_quantized(tied, tmp_path / "t2", cfg)
    _rewrite(
        tmp_path / "t2", edit_config=lambda c: c["quantization"].update(tied={"embed_tokens": "x"})
    )
    with pytest.raises(ValueError, match='"quantization.tied": expected an object mapping'):
        load_model(tmp_path / "t2")


# ---- GPTQ through the whole model ------------------------------------------------------------


def test_gptq_quantizes_with_calibration_and_round_trips(tmp_path):
    pytest.importorskip("myllm101.fast.gptq")
    _needs_int4("int4")
    model, cfg = tiny()
    calib = [
        torch.randint(0, 96, (2, 32), generator=torch.Generator().manual_seed(i)) for i in range(4)
    ]
    q = quantize(copy.deepcopy(model), "gptq-int4-g32", calibration=calib)
    save_quantized(q, tmp_path / "g", cfg)
    loaded, _, _ = load_model(tmp_path / "g")
    x = ids()
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, q(x).logits)
        # GPTQ minimizes the layer outputs' error on the calibration inputs: on them, its logits
        # are closer to the float model's than round-to-nearest's (same format)
        rtn = quantize(copy.deepcopy(model), "int4-g32")
        batch = torch.cat(calib)
        ref = model(batch).logits
        err_gptq = (q(batch).logits - ref).pow(2).mean()
        err_rtn = (rtn(batch).logits - ref).pow(2).mean()
    assert err_gptq < err_rtn, (float(err_gptq), float(err_rtn))


# ---- perplexity ---------------------------------------------------------------------------------


@given(n=st.integers(2, 300), window=st.integers(2, 64), data=st.data())
def test_window_spans_score_every_target_once(n, window, data):
    stride = data.draw(st.integers(1, window - 1))
    spans = window_spans(n, window, stride)
    scored = [t for _, end, first in spans for t in range(first, end)]
    assert scored == list(range(1, n))
    assert all(0 <= b < first <= end <= b + window for b, end, first in spans if first < end)


def test_window_spans_bad_arguments():
    with pytest.raises(ValueError, match="stride: expected 1 <= stride < window=4, got 4"):
        window_spans(10, 4, 4)
    with pytest.raises(ValueError, match="expected at least 2 tokens to score, got 1"):
        window_spans(1, 4, 2)


@pytest.mark.parametrize("kind", ["llama", "gpt"])
def test_one_window_perplexity_equals_the_models_own_loss(kind):
    model, _ = tiny(kind)
    x = ids(40)
    with torch.no_grad():
        loss = model(x, labels=x).loss  # the model's causal LM loss: mean over 39 targets
    p = perplexity(model, x[0], window=64, stride=32)
    assert p.tokens == 39 and p.windows == 1
    assert p.ppl == pytest.approx(math.exp(float(loss)), rel=1e-6)
    assert top1_agreement(p, p) == 1.0


def test_strided_perplexity_equals_a_direct_sum_over_the_same_windows():
    model, _ = tiny()
    x = ids(50)[0]
    p = perplexity(model, x, window=16, stride=6)
    total = 0.0
    with torch.no_grad():
        for b, e, first in window_spans(50, 16, 6):
            logp = torch.log_softmax(model(x[None, b:e]).logits[0].double(), -1)
            total -= sum(float(logp[t - b - 1, x[t]]) for t in range(first, e))
    assert p.nll == pytest.approx(total / 49, rel=1e-6)  # float32 CE vs float64 log-softmax


@pytest.mark.slow
def test_fp32_smollm2_perplexity_equals_transformers():
    """Our eval's perplexity of fp32 SmolLM2 == one computed by transformers' LlamaForCausalLM
    (its own shifted cross-entropy with -100 labels) on the same windows of the same ids.
    rtol 1e-4: both hold the same float32 weights and differ only in op order; their logits agree
    to 1e-5 of the largest logit (parity_tests/test_smollm2.py), i.e. ~4e-4 absolute here, which
    moves a mean log-probability by well under 1e-4 (measured: 1.2e-7 relative, 700 stdlib tokens)."""
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from myllm101.quant.eval import load_any
    from myllm101.quant.heldout import text_ids
    from parity_tests.hf_oracles import hf_smollm2

    text = stdlib_text()[:6000]
    ours = load_any("smollm2")
    x = text_ids(ours.tokenizer, text, ours.cfg.vocab_size)[:700]
    p = perplexity(ours.model, x, window=256, stride=128)
    hf, _ = hf_smollm2()
    t = torch.tensor(x)
    total, count = 0.0, 0
    with torch.no_grad():
        for b, e, first in window_spans(len(x), 256, 128):
            labels = t[b:e].clone()
            labels[: first - b] = -100  # transformers shifts labels itself: scores targets >= first
            out = hf(input_ids=t[None, b:e], labels=labels[None])
            total += float(out.loss) * (e - first)
            count += e - first
    hf_ppl = math.exp(total / count)
    assert count == p.tokens
    assert p.ppl == pytest.approx(hf_ppl, rel=1e-4), (p.ppl, hf_ppl, p.ppl / hf_ppl - 1)


# ---- held-out texts -----------------------------------------------------------------------------


def test_stdlib_slice_is_fixed_and_capped():
    text = stdlib_text()
    assert len(text) == STDLIB_CHARS and text.startswith("# ---- textwrap.py ----\n")
    assert text == stdlib_text()


def test_calibration_batches_are_seeded_windows_of_the_train_split(tmp_path):
    from myllm101.fast.bpe import bpe_train

    words = " ".join(f"word{i % 97} and more text" for i in range(3000))
    (tmp_path / "train.txt").write_text(
        "\n".join(words[i : i + 70] for i in range(0, len(words), 70))
    )
    tok = bpe_train(words[:5000], 300)
    a = calibration_batches(tok, 300, n_windows=5, seq_len=16, batch_size=2, data_dir=tmp_path)
    b = calibration_batches(tok, 300, n_windows=5, seq_len=16, batch_size=2, data_dir=tmp_path)
    assert [t.shape for t in a] == [(2, 16), (2, 16), (1, 16)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = calibration_batches(
        tok, 300, n_windows=5, seq_len=16, batch_size=2, seed=1, data_dir=tmp_path
    )
    assert not torch.equal(a[0], c[0])
    with pytest.raises(FileNotFoundError, match="run `make data`"):
        calibration_batches(tok, 300, data_dir=tmp_path / "nothing")


def test_a_fused_model_is_refused_at_save_and_nothing_is_written(tmp_path):
    from myllm101.fast.fuse import fuse_for_inference

    model, cfg = tiny("llama")
    quantize(fuse_for_inference(model), "int8")  # qkv_proj / gate_up_proj become Int8Linear
    with pytest.raises(ValueError, match="fused"):
        save_quantized(model, tmp_path / "q", cfg)
    assert not any(tmp_path.iterdir())


def test_fused_copy_fuses_float_and_8bit_models_and_leaves_int4_ones():
    from myllm101.fast.fuse import fused_copy, is_fused

    for scheme in ("int8", "w8a8", None):
        model, _ = tiny()
        if scheme:
            quantize(model, scheme)
        copy_ = fused_copy(model)
        assert copy_ is not model and is_fused(copy_) and not is_fused(model)
    if HAS_INT4:
        model, _ = tiny()
        quantize(model, "int4-g32")
        assert fused_copy(model) is model  # int4 modules do not fuse: run as loaded
