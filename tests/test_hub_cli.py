"""``myllm101 embed`` and ``myllm101 generate --model smollm2`` through myllm101.hub.cli.run."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from myllm101.hub import cli
from myllm101.hub.embed import embed


def test_embed_texts_print_one_json_list(capsys):
    assert cli.run(["embed", "--model", "minilm", "--impl", "fast", "a cat", "a dog"]) == 0
    vectors = np.array(json.loads(capsys.readouterr().out))
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, embed(["a cat", "a dog"]), atol=1e-6)


@pytest.mark.parametrize("native", ["1", "0"])
def test_embed_dtype_auto_follows_the_hardware(capsys, monkeypatch, native):
    monkeypatch.setenv("MYLLM101_NATIVE_BF16", native)
    expected = "bf16" if native == "1" else "fp32"
    assert cli.run(["embed", "a cat", "a much longer sentence about a dog"]) == 0
    out = capsys.readouterr()
    assert f"dtype: {expected} (auto: " in out.err
    vectors = np.array(json.loads(out.out))
    want = embed(["a cat", "a much longer sentence about a dog"], dtype=expected)
    np.testing.assert_allclose(vectors, want, atol=1e-6)  # the JSON keeps 7 decimals
    assert cli.run(["embed", "--dtype", "fp32", "a cat"]) == 0
    assert "dtype: fp32 (requested dtype fp32)" in capsys.readouterr().err


def test_embed_reads_stdin_lines(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("first line\nsecond line\n"))
    assert cli.run(["embed"]) == 0
    vectors = json.loads(capsys.readouterr().out)
    assert len(vectors) == 2 and len(vectors[0]) == 384


def test_embed_errors(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli.run(["embed"]) == 2
    assert "expected TEXT arguments or lines on stdin, got none" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.run(["embed", "--model", "bert-huge", "x"])
    assert "invalid choice: 'bert-huge'" in capsys.readouterr().err


def test_generate_errors(capsys):
    assert cli.run(["generate", "--model", "smollm2", "--max-new-tokens", "-1", "hi"]) == 2
    assert "--max-new-tokens: expected >= 0, got -1" in capsys.readouterr().err
    # --model takes a shipped name or a directory (api/cli.py generate_any): a clear one-liner
    assert cli.run(["generate", "--model", "gpt5", "hi"]) == 2
    err = capsys.readouterr().err
    assert "model: expected one of ['minilm', 'smollm2'] or a model directory, got 'gpt5'" in err


@pytest.mark.slow
def test_generate_smollm2_greedy(capsys):
    from myllm101.hub.smollm2 import load_smollm2

    args = ["generate", "--model", "smollm2", "--max-new-tokens", "6", "--temperature", "0",
            "--dtype", "fp32"]  # fmt: skip
    assert cli.run([*args, "The capital of France is"]) == 0
    first, err = capsys.readouterr()
    # 6 greedy tokens unless the end token comes first; the clock's line on stderr
    assert " new tokens in " in err and "prompt " in err and "first new token after" in err
    assert cli.run([*args, "The capital of France is"]) == 0
    assert capsys.readouterr().out == first  # greedy: the same text twice
    assert "Paris" in first
    _, tok = load_smollm2()
    assert 1 <= len(tok.encode(first.rstrip("\n"))) <= 8  # about 6 new tokens


@pytest.mark.slow
@pytest.mark.parametrize("native", ["1", "0"])
def test_generate_dtype_auto_follows_the_hardware(capsys, monkeypatch, native):
    """--dtype auto (the default) picks bf16 weights only where bf16 is native, says so on stderr,
    and generates what the library does with that dtype. (Which words bf16 produces is not
    asserted: parity_tests/test_bf16_accuracy.py checks bf16 against transformers' bf16.)"""
    from myllm101.hub.smollm2 import generate_text, load_smollm2

    monkeypatch.setenv("MYLLM101_NATIVE_BF16", native)
    expected = "bf16" if native == "1" else "fp32"
    args = ["generate", "--model", "smollm2", "--chat", "--max-new-tokens", "4"]
    assert cli.run([*args, "What is the capital of France?"]) == 0
    out = capsys.readouterr()
    assert f"dtype: {expected} (auto: " in out.err
    assert out.out == generate_text("What is the capital of France?", chat=True,
                                    max_new_tokens=4, dtype=expected) + "\n"  # fmt: skip
    model, _ = load_smollm2("auto")
    assert next(model.parameters()).dtype == (torch.bfloat16 if native == "1" else torch.float32)


@pytest.mark.slow
def test_explicit_bf16_runs_with_a_warning_where_it_is_emulated(capsys, monkeypatch):
    from myllm101 import device
    from myllm101.hub.smollm2 import load_smollm2

    monkeypatch.setenv("MYLLM101_NATIVE_BF16", "0")
    monkeypatch.setattr(device, "_warned", set())
    args = ["generate", "--model", "smollm2", "--dtype", "bf16", "--max-new-tokens", "2"]
    assert cli.run([*args, "Hello"]) == 0
    err = capsys.readouterr().err
    assert "dtype: bf16 (requested dtype bf16)" in err
    assert err.count("warning: dtype bf16 on this CPU may be slow") == 1
    model, _ = load_smollm2("bf16")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert next(load_smollm2("fp32")[0].parameters()).dtype == torch.float32  # its own copy
    with pytest.raises(ValueError, match="dtype: expected auto or one of"):
        load_smollm2("fp16")
