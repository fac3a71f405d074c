"""TrainConfig: JSON + --key=value overrides, and validation messages; the train CLI."""

import json
from pathlib import Path

import numpy as np
import pytest

from myllm101.train import TrainConfig, Trainer
from myllm101.train.cli import main
from myllm101.train.config import apply_overrides


def test_overrides_parse_json_values_and_nested_keys(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"lr": 1e-3, "model": {"preset": "gpt-tiny"}}))
    cfg = TrainConfig.from_file(
        p, ["--lr=3e-4", "--model.n_layer=3", "--compile=true", "--out-dir=x/y"]
    )
    assert cfg.lr == 3e-4 and cfg.compile is True and cfg.out_dir == "x/y"
    assert cfg.model == {"preset": "gpt-tiny", "n_layer": 3}


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["--lerning_rate=1"], r"unknown train config key 'lerning_rate'"),
        (["--lrr=1"], r"unknown train config key 'lrr' \(did you mean 'lr'\?\)"),
        (["--batch_size=0"], "batch_size: expected a positive int, got 0"),
        (["--batch_size=2.5"], "batch_size: expected int, got float 2.5"),
        (
            ["--schedule=step"],
            r"schedule: expected one of \('cosine', 'linear', 'constant'\), got 'step'",
        ),
        (["--dtype=int8"], "dtype: expected one of"),
        (["--min_lr=1", "--lr=0.1"], r"min_lr: expected <= lr=0.1, got 1"),
        (["--beta2=1.0"], r"beta2: expected a value in \[0, 1\), got 1.0"),
        (["--model={}"], "model: expected a 'model_type' or a 'preset' key, got keys"),
        (["--compile=yes"], "compile: expected bool, got str 'yes'"),
        (["lr=1"], "override: expected --key=value, got 'lr=1'"),
    ],
)
def test_bad_config_values_are_clear_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_dict(apply_overrides({}, overrides))


def test_config_file_errors(tmp_path):
    with pytest.raises(ValueError, match="--config: expected an existing JSON file"):
        TrainConfig.from_file(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="expected a JSON object, got a parse error"):
        TrainConfig.from_file(tmp_path / "bad.json")


def test_model_shape_errors(tmp_path):
    toks = np.arange(500) % 97
    with pytest.raises(ValueError, match=r"seq_len: expected <= model.block_size=16, got 32"):
        Trainer(TrainConfig(out_dir=str(tmp_path), seq_len=32), toks, toks)
    with pytest.raises(
        ValueError, match=r"model.vocab_size: expected >= 97 \(the tokenizer's ids\), got 50"
    ):
        Trainer(
            TrainConfig(
                out_dir=str(tmp_path), seq_len=8, model={"preset": "gpt-tiny", "vocab_size": 50}
            ),
            toks,
            toks,
        )
    with pytest.raises(ValueError, match="dtype: fp16 .* needs CUDA"):
        Trainer(
            TrainConfig(out_dir=str(tmp_path), seq_len=8, dtype="fp16", device="cpu"), toks, toks
        )


def test_cli_train_plot_sample(tmp_path, capsys):
    from myllm101.fast.bpe import bpe_train
    from myllm101.tokenizer.formats import save_tokenizer

    text = "To be, or not to be, that is the question.\n\nWhether 'tis nobler in the mind.\n" * 40
    for split in ("train", "val"):
        (tmp_path / f"{split}.txt").write_text(text)
    save_tokenizer(bpe_train(text, 300), tmp_path / "tok")
    cfg = {"out_dir": str(tmp_path / "run"), "data_dir": str(tmp_path), "tokenizer": str(tmp_path / "tok"),
           "model": {"preset": "gpt-tiny"}, "seq_len": 16, "batch_size": 4, "max_steps": 6,
           "eval_interval": 3, "eval_batches": 2, "progress": False, "sample_tokens": 5, "dtype": "float32"}  # fmt: skip
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    assert (
        main(["train", "--config", str(tmp_path / "c.json"), "--max_steps=4", "--warmup_steps=1"])
        == 0
    )
    out = capsys.readouterr().out
    assert "done: 4 steps" in out and "best val loss" in out and "--- samples ---" in out
    assert main(["plot", str(tmp_path / "run")]) == 0
    assert main(["sample", "--model", str(tmp_path / "run"), "To be", "--tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith(str(tmp_path / "run" / "loss.png"))
    assert main(["train", "--config", str(tmp_path / "c.json"), "--lr=oops"]) == 2
    assert "lr: expected float, got str 'oops'" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["gpt", "llama", "bert"])
def test_pretrain_presets_equal_the_config_files(arch):
    from myllm101.train.presets import PRETRAIN

    path = Path(__file__).resolve().parents[1] / "configs" / f"{arch}-shakespeare.json"
    assert json.loads(path.read_text()) == PRETRAIN[arch]
    cfg = TrainConfig.from_dict(PRETRAIN[arch])  # valid as it stands
    assert cfg.model["model_type"] == arch


def test_cli_train_arch_defaults_with_overrides(tmp_path, capsys):
    # --arch picks the preset; overrides point it at a missing tokenizer: the error names it
    code = main(["train", "--arch", "llama", f"--out_dir={tmp_path}", "--tokenizer=nope/tok"])
    assert code == 2
    assert "nope/tok" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one source of settings at a time
        main(["train", "--arch", "llama", "--config", "c.json"])
