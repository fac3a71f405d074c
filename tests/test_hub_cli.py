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
    with pytest.raises(SystemExit):
        cli.run(["generate", "--model", "gpt5", "hi"])


@pytest.mark.slow
def test_generate_smollm2_greedy(capsys):
    from myllm101.hub.smollm2 import load_smollm2

    args = ["generate", "--model", "smollm2", "--max-new-tokens", "6", "--temperature", "0"]
    assert cli.run([*args, "The capital of France is"]) == 0
    first = capsys.readouterr().out
    assert cli.run([*args, "The capital of France is"]) == 0
    assert capsys.readouterr().out == first  # greedy: the same text twice
    assert "Paris" in first
    _, tok = load_smollm2()
    assert 1 <= len(tok.encode(first.rstrip("\n"))) <= 8  # about 6 new tokens


@pytest.mark.slow
def test_chat_smollm2_with_bf16_weights(capsys):
    from myllm101.hub.smollm2 import load_smollm2

    args = ["generate", "--model", "smollm2", "--chat", "--dtype", "bf16", "--max-new-tokens", "12"]
    assert cli.run([*args, "What is the capital of France?"]) == 0
    assert "Paris" in capsys.readouterr().out
    model, _ = load_smollm2("bf16")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert next(load_smollm2()[0].parameters()).dtype == torch.float32  # its own cached copy
    with pytest.raises(ValueError, match="dtype: expected one of"):
        load_smollm2("fp16")
