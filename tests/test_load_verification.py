"""Every load of a model directory is verified, and bad files give one-line errors (issue 12,
findings 4 and 7).

Each test here fails on the code before this change:
- the run's top-level export had no manifest.json, so flipped bytes in RUN/model.safetensors or
  an edited RUN/config.json (n_head changed, shapes still compatible) loaded and sampled with
  exit 0, and a directory without a manifest was accepted;
- config.json shapes that disagree with the weights were torch's RuntimeError ("size mismatch
  for ..."); a config.json of [] / null / "gpt" an AttributeError; a missing model_type a
  ValueError that did not name the file; "block_size": "16" a TypeError;
- the tokenizer file had no hash over its pattern and special tokens (an edited pattern loaded
  and changed every id) and no "sha256"/version 2; a pattern that does not compile was a
  regex.error traceback;
- ``tokenizer train --out FILE`` was a FileExistsError traceback;
- ``guarded`` let SafetensorError and regex.error through as tracebacks and had no
  MYLLM101_DEBUG / --debug switch; write_manifest took no file names; a manifest entry such as
  "../x" was not refused as corrupted.
"""

import argparse
import json
import shutil

import numpy as np
import pytest
import regex
import torch
from safetensors import SafetensorError

from myllm101 import cli as main_cli
from myllm101.bpe_patterns import GPT2_SPLIT_PATTERN
from myllm101.cli_util import guarded
from myllm101.fast.bpe import bpe_train
from myllm101.tokenizer import cli as tokenizer_cli
from myllm101.tokenizer import formats, hf_format
from myllm101.train import TrainConfig, Trainer
from myllm101.train import checkpoint as ckpt
from myllm101.train import cli as train_cli

TOKENS = np.random.default_rng(0).integers(0, 97, size=2000)
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak, speak.\n" * 20
MODEL_FILES = {"config.json", "model.safetensors", formats.FILENAME}


@pytest.fixture(autouse=True)
def no_debug_env(monkeypatch):
    monkeypatch.delenv("MYLLM101_DEBUG", raising=False)  # also undoes what --debug sets


@pytest.fixture(scope="module")
def tokenizer():
    return bpe_train(TEXT, 300, special_tokens=["<|endoftext|>"])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tokenizer):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("trained")
    cfg = TrainConfig(
        out_dir=str(root / "run"), model={"preset": "gpt-tiny"}, seq_len=16, batch_size=4,
        max_steps=4, warmup_steps=1, eval_interval=2, eval_batches=1, save_interval=2,
        dtype="float32", progress=False, log_interval=1, lr=3e-3,
    )  # fmt: skip
    try:
        Trainer(cfg, TOKENS, TOKENS, tokenizer=tokenizer).fit()
    finally:
        torch.set_num_threads(before)
    return root / "run"


@pytest.fixture()
def run(trained_run, tmp_path):
    """A fresh copy of the trained run for each test to damage."""
    return shutil.copytree(trained_run, tmp_path / "run")


def sample_exit(run, capsys) -> tuple[int, str]:
    code = train_cli.main(["sample", "--model", str(run), "--tokens", "3", "x"])
    return code, capsys.readouterr().err


def edit_json(path, edit) -> None:
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d, indent=2))


# ---- the run's top-level export ------------------------------------------------------------------


def test_export_has_a_manifest_over_just_the_model_files(run, capsys):
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["files"]) == MODEL_FILES
    # the run's other files change (a resumed run, a lock file): not in the manifest, not read
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 99}\n')
    (run / "run.lock").write_text("1234")
    model, tok, mcfg = ckpt.load_model(run)
    assert ckpt.resolve_model_dir(run) == run and tok is not None and mcfg.n_head == 2
    code, err = sample_exit(run, capsys)
    assert code == 0, err


def test_flipped_bytes_in_the_exported_weights(run, capsys):
    f = run / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF  # inside a tensor: safetensors itself reads it without complaint
    f.write_bytes(data)
    with pytest.raises(ValueError, match="model.safetensors is corrupted"):
        ckpt.load_model(run)
    code, err = sample_exit(run, capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "model.safetensors" in err


def test_edited_config_with_compatible_shapes_is_refused(run, capsys):
    # n_head 2 -> 4: every weight still fits (n_embd 16), but the model computes something else
    edit_json(run / "config.json", lambda d: d.update(n_head=4))
    with pytest.raises(ValueError, match=r"config.json is (corrupted|truncated or altered)"):
        ckpt.load_model(run)
    code, err = sample_exit(run, capsys)
    assert code == 2 and "config.json" in err


def test_directory_without_manifest_is_refused(run, capsys):
    (run / "manifest.json").unlink()
    with pytest.raises(
        ValueError, match="has no manifest.json: not a complete myllm101 model directory"
    ):
        ckpt.load_model(run)
    assert sample_exit(run, capsys)[0] == 2


def test_manifest_must_cover_the_model_files_and_the_tokenizer(run):
    ckpt.write_manifest(run, ["config.json", "model.safetensors"])  # the tokenizer left out
    with pytest.raises(ValueError, match=f"does not cover {formats.FILENAME}"):
        ckpt.load_model(run)
    ckpt.write_manifest(run, ["config.json", formats.FILENAME])
    with pytest.raises(ValueError, match="does not cover model.safetensors"):
        ckpt.load_model(run)


@pytest.mark.parametrize(
    "files",
    [["not", "a dict"], {"../config.json": {"size": 1, "sha256": "x"}}, {"config.json": 5}],
)
def test_malformed_manifest_is_refused(run, files):
    edit_json(run / "manifest.json", lambda d: d.update(files=files))
    with pytest.raises(ValueError, match=r"manifest.json: corrupted manifest"):
        ckpt.load_model(run)


# ---- config.json and the weights ------------------------------------------------------------------


def test_config_shapes_that_disagree_with_the_weights_name_the_key(run, capsys):
    # a user edited a checkpoint's config.json and regenerated its manifest to match
    d = ckpt.latest_checkpoint(run)
    edit_json(d / "config.json", lambda c: c.update(n_embd=32))
    ckpt.write_manifest(d)
    with pytest.raises(
        ValueError,
        match=r"model.safetensors: \S+ has shape \(.*\) in the weights but \(.*\) in the model "
        r"built from .*config.json: config.json and the weights disagree",
    ):
        ckpt.load_model(d)
    code, err = sample_exit(d, capsys)
    assert code == 2 and "config.json and the weights disagree" in err


def test_gpt_weights_with_the_old_attention_names_are_refused_by_name(tmp_path):
    # GPT's attention was attn.{q,k,v,o}_proj before it took GPT-2's attn.c_attn / attn.c_proj
    from safetensors.torch import save_file

    from myllm101.config import build_model, get_preset

    model = build_model(get_preset("gpt-tiny"))
    old = {}
    for k, t in model.state_dict().items():
        if ".attn.c_attn." in k:
            for j, qkv in enumerate(("q_proj", "k_proj", "v_proj")):
                old[k.replace("c_attn", qkv)] = t.chunk(3)[j].clone()
        else:
            old[k.replace("attn.c_proj", "attn.o_proj")] = t.clone()
    old.pop("lm_head.weight")  # tied: stored once
    save_file(old, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"h\.0\.attn\.[kqv]_proj\.\w+ is a GPT weight name of an "
                       r"older myllm101; GPT now uses GPT-2's names: attn.c_attn"):  # fmt: skip
        ckpt.load_weights(model, tmp_path)


@pytest.mark.parametrize(
    "text,message",
    [
        ("[]", "expected a JSON object .*got list"),
        ("null", "expected a JSON object .*got NoneType"),
        ('"gpt"', "expected a JSON object .*got str"),
        ('{"n_layer": 2}', "not a valid model config: model_type: expected one of"),
        ('{"model_type": "gpt", "block_size": "16"}', "not a valid model config"),
        ('{"model_type": "gpt", "train": 3}', '"train": expected an object'),
    ],
)
def test_bad_config_json_names_the_file(run, capsys, text, message):
    d = ckpt.latest_checkpoint(run)
    (d / "config.json").write_text(text)
    ckpt.write_manifest(d)  # the manifest matches: the config itself is the problem
    path = d / "config.json"
    with pytest.raises(ValueError, match=f"{regex.escape(str(path))}: {message}"):
        ckpt.read_config(d)
    with pytest.raises(ValueError, match=regex.escape(str(path))):
        ckpt.load_model(d)
    code, err = sample_exit(d, capsys)
    assert code == 2 and str(path) in err and err.count("\n") == 1


# ---- the tokenizer file ---------------------------------------------------------------------------


@pytest.fixture()
def saved(tokenizer, tmp_path):
    return formats.save_tokenizer(tokenizer, tmp_path / "tok")


def test_tokenizer_file_hashes_pattern_and_specials(saved, tokenizer):
    d = json.loads(saved.read_text())
    assert d["version"] == 2 and "ranks_sha256" in d
    assert d["sha256"] == formats.definition_sha256(
        tokenizer.mergeable_ranks, tokenizer.pattern, tokenizer.special_tokens
    )
    # a file written before "sha256" existed (version 1) still loads, with the same ids
    edit_json(saved, lambda d: (d.pop("sha256"), d.update(version=1)))
    back = formats.load_tokenizer(saved.parent)
    assert back.encode(TEXT) == tokenizer.encode(TEXT)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.update(pattern=GPT2_SPLIT_PATTERN),  # another valid pattern: every id moves
        lambda d: d.update(special_tokens={"<|end|>": 299}),
        lambda d: d.update(special_tokens={"<|endoftext|>": 300}),
        lambda d: d.pop("sha256"),  # a version 2 file must carry it
    ],
)
def test_edited_pattern_or_specials_are_refused(saved, edit):
    edit_json(saved, edit)
    with pytest.raises(ValueError, match=r'myllm101_tokenizer.json: .*"sha256"'):
        formats.load_tokenizer(saved.parent)
    with pytest.raises(ValueError, match=r'myllm101_tokenizer.json: .*"sha256"'):
        formats.load_tokenizer(saved.parent, impl="reference")


def test_edited_pattern_message(saved):
    edit_json(saved, lambda d: d.update(pattern=GPT2_SPLIT_PATTERN))
    with pytest.raises(ValueError, match='pattern/special tokens do not match "sha256"'):
        formats.load_tokenizer(saved.parent)


@pytest.mark.parametrize("version", [1, 2])
def test_pattern_that_does_not_compile(saved, tokenizer, version, capsys):
    def edit(d):
        d["pattern"] = r"(\p{L}+"
        if version == 1:  # an older file: no "sha256" to catch the edit first
            d.pop("sha256")
            d["version"] = 1
        else:  # the hash regenerated to match
            d["sha256"] = formats.definition_sha256(
                tokenizer.mergeable_ranks, d["pattern"], tokenizer.special_tokens
            )

    edit_json(saved, edit)
    for impl in ("fast", "reference"):
        with pytest.raises(
            ValueError, match=r"myllm101_tokenizer.json: .*the split pattern does not compile: "
        ):
            formats.load_tokenizer(saved.parent, impl=impl)
    code = tokenizer_cli.run(["show", "--tokenizer", str(saved.parent), "hello"])
    err = capsys.readouterr().err
    assert code == 2 and "does not compile" in err and err.count("\n") == 1


def test_hf_tokenizer_json_pattern_that_does_not_compile(tokenizer, tmp_path):
    d = hf_format.to_hf_tokenizer_json(tokenizer)
    d["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed"
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="tokenizer.json: the split pattern does not compile"):
        hf_format.load_hf_tokenizer_json(path)


def test_tokenizer_train_out_existing_file(tmp_path, capsys):
    (tmp_path / "in.txt").write_text(TEXT)
    (tmp_path / "taken").write_text("not a directory")
    args = ["train", "--input", str(tmp_path / "in.txt"), "--vocab-size", "270"]
    for out in (tmp_path / "taken", tmp_path / "taken" / "sub"):
        assert tokenizer_cli.run([*args, "--out", str(out)]) == 2
        err = capsys.readouterr().err.splitlines()  # refused before any training
        assert err[-1].startswith(f"error: {out}: ") and "Traceback" not in "".join(err)
        assert "bpe merges" not in "".join(err)
    assert (tmp_path / "taken").read_text() == "not a directory"
    with pytest.raises(ValueError, match="expected a directory .*got an existing file"):
        formats.save_tokenizer(bpe_train(TEXT, 260), tmp_path / "taken")


# ---- one line, or the traceback with MYLLM101_DEBUG ---------------------------------------------


@pytest.mark.parametrize(
    "error",
    [SafetensorError("header too large"), regex.error("missing )"), IsADirectoryError("x")],
)
def test_guarded_reports_file_format_errors_in_one_line(error, capsys):
    def cmd(args):
        raise error

    assert guarded(cmd)(argparse.Namespace()) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_debug_reraises_with_the_traceback(run, monkeypatch, capsys):
    (run / "manifest.json").unlink()
    assert sample_exit(run, capsys)[0] == 2
    monkeypatch.setenv("MYLLM101_DEBUG", "1")
    with pytest.raises(ValueError, match="has no manifest.json"):
        sample_exit(run, capsys)
    monkeypatch.setenv("MYLLM101_DEBUG", "0")
    assert sample_exit(run, capsys)[0] == 2
    monkeypatch.delenv("MYLLM101_DEBUG")
    with pytest.raises(ValueError, match="has no manifest.json"):  # --debug sets the variable
        main_cli.main(["--debug", "sample", "--model", str(run), "x"])
    monkeypatch.delenv("MYLLM101_DEBUG")

    def cmd(args):
        raise KeyError("a bug, not a bad file")

    with pytest.raises(KeyError):  # not an expected error: never reduced to one line
        guarded(cmd)(argparse.Namespace())
