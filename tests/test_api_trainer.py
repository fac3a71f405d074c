"""Trainer / TrainingArguments (api/trainer.py): the same run as train/trainer.py given the same
TrainConfig (loss for loss, bit for bit on CPU float32), starting weights honoured, the result
saved and loaded back, bad arguments named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from myllm101.api import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments
from myllm101.config import get_preset
from myllm101.train import Trainer as RunTrainer
from myllm101.train.config import TrainConfig
from tests.train_helpers import TOKENS, losses, one_thread  # noqa: F401 (autouse fixture)


def args(tmp_path, name="run", **kw) -> TrainingArguments:
    base = dict(max_steps=6, learning_rate=3e-3, per_device_train_batch_size=4, seq_len=16,
                warmup_steps=2, eval_steps=100, eval_batches=2, save_steps=100, dtype="float32",
                logging_steps=1, disable_tqdm=True)  # fmt: skip
    return TrainingArguments(str(tmp_path / name), **{**base, **kw})


def test_arguments_map_onto_train_config(tmp_path):
    cfg = args(tmp_path, extra={"sampler": "sequential"}).to_train_config({"preset": "gpt-tiny"})
    assert isinstance(cfg, TrainConfig)
    assert (cfg.out_dir, cfg.lr, cfg.batch_size, cfg.seq_len) == (
        str(tmp_path / "run"),
        3e-3,
        4,
        16,
    )
    assert (cfg.sampler, cfg.progress, cfg.dtype) == ("sequential", False, "float32")


def test_same_losses_as_the_run_trainer(tmp_path):
    a = args(tmp_path, "api")
    api = Trainer("gpt-tiny", a, train_dataset=TOKENS, eval_dataset=TOKENS)
    api.train()
    same = TrainConfig.from_dict({**api.config.to_dict(), "out_dir": str(tmp_path / "direct")})
    direct = RunTrainer(same, TOKENS, TOKENS)
    direct.fit()
    assert losses(api.run) == losses(direct)
    for (name, p), q in zip(api.model.state_dict().items(), direct.model.state_dict().values()):
        assert torch.equal(p, q), name


def test_training_starts_from_the_given_weights(tmp_path):
    start = AutoModelForCausalLM.from_config(get_preset("gpt-tiny"), seed=5)
    trainer = Trainer(start, args(tmp_path, max_steps=1), train_dataset=TOKENS)
    for (name, p), q in zip(trainer.model.state_dict().items(), start.state_dict().values()):
        assert torch.equal(p, q), name
    first = RunTrainer(trainer.config, TOKENS, TOKENS)  # the same config from fresh init weights
    assert not torch.equal(first.model.wte.weight, trainer.model.wte.weight)


def test_texts_with_a_tokenizer_then_save_and_load(tmp_path):
    tok = AutoTokenizer.from_pretrained("gpt2")
    texts = ["To be, or not to be, that is the question."] * 20
    model = {"preset": "gpt-tiny", "vocab_size": tok.n_vocab}
    trainer = Trainer(model, args(tmp_path, max_steps=2), train_dataset=texts, tokenizer=tok)
    summary = trainer.train()
    assert summary["steps"] == 2
    trainer.save_model(tmp_path / "saved")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    ids = torch.tensor([tok.encode("To be")])
    with torch.no_grad():
        assert torch.equal(back(ids).logits, trainer.model.eval()(ids).logits)
    assert AutoTokenizer.from_pretrained(tmp_path / "saved").encode("To be") == tok.encode("To be")


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="args: expected TrainingArguments, got dict"):
        Trainer("gpt-tiny", {"output_dir": "x"})
    with pytest.raises(ValueError, match="train_dataset: texts need a tokenizer object"):
        Trainer("gpt-tiny", args(tmp_path), train_dataset=["some text"])
    with pytest.raises(
        ValueError, match=r"train_dataset: expected 1-D integer token ids .* shape \(2, 2\)"
    ):
        Trainer("gpt-tiny", args(tmp_path), train_dataset=np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match=r"extra: \['lr'\] are TrainingArguments fields already"):
        args(tmp_path, extra={"lr": 1.0}).to_train_config({"preset": "gpt-tiny"})
    with pytest.raises(ValueError, match="lr: expected a finite value >= 0, got -1"):
        Trainer("gpt-tiny", args(tmp_path, learning_rate=-1.0), train_dataset=TOKENS)
    with pytest.raises(TypeError, match="model: expected a preset name, a config"):
        Trainer(3.5, args(tmp_path), train_dataset=TOKENS)
