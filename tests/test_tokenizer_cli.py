"""``myllm101 tokenizer ...``: train/encode/decode/show through run(argv), plus the bench smoke run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from myllm101 import cli as main_cli
from myllm101.tokenizer import cli
from myllm101.tokenizer.formats import FILENAME, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak, speak.\n" * 30


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    (d / "input.txt").write_text(TEXT)
    assert cli.run(["train", "--input", str(d / "input.txt"), "--vocab-size", "300",
                    "--out", str(d / "out"), "--special", "<|endoftext|>"]) == 0  # fmt: skip
    return d / "out"


def test_train_writes_a_loadable_tokenizer_and_a_summary(trained_dir, capsys):
    tok = load_tokenizer(trained_dir)
    assert (trained_dir / FILENAME).exists()
    assert tok.n_vocab == 300 and tok.special_tokens == {"<|endoftext|>": 299}
    assert tok.name == "out"
    assert tok.decode(tok.encode(TEXT)) == TEXT


def test_train_summary(tmp_path, capsys):
    (tmp_path / "in.txt").write_text(TEXT)
    args = ["train", "--input", str(tmp_path / "in.txt"), "--vocab-size", "280", "--out",
            str(tmp_path / "t"), "--impl", "reference", "--pattern", "gpt2"]  # fmt: skip
    assert cli.run(args) == 0
    out = capsys.readouterr().out
    n_tokens = len(load_tokenizer(tmp_path / "t").encode_ordinary(TEXT))
    ratio = len(TEXT.encode()) / n_tokens
    assert "vocab size 280" in out and f"compression {ratio:.2f} bytes/token" in out


@pytest.mark.parametrize("tokenizer", ["gpt2", "cl100k_base", "DIR"])
def test_encode_decode_round_trip(tokenizer, trained_dir, tmp_path, capsys):
    spec = str(trained_dir) if tokenizer == "DIR" else tokenizer
    (tmp_path / "in.txt").write_text(TEXT)
    assert cli.run(["encode", "--tokenizer", spec, str(tmp_path / "in.txt")]) == 0
    ids = json.loads(capsys.readouterr().out)
    assert isinstance(ids, list) and all(isinstance(i, int) for i in ids) and len(ids) > 10
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    assert (
        cli.run(["decode", "--tokenizer", spec, "--impl", "reference", str(tmp_path / "ids.json")])
        == 0
    )
    assert capsys.readouterr().out == TEXT


def test_encode_reads_stdin(monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("hello world"))
    assert cli.run(["encode", "--tokenizer", "gpt2", "-"]) == 0
    assert json.loads(capsys.readouterr().out) == [31373, 995]  # GPT-2's ids, as in tiktoken


def test_show_colours_tokens_and_counts(capsys):
    assert cli.run(["show", "--tokenizer", "gpt2", "hello world!"]) == 0
    out = capsys.readouterr().out
    assert cli.BACKGROUNDS[0] + "hello" + cli.RESET in out
    assert cli.BACKGROUNDS[1] + " world" + cli.RESET in out
    assert "ids: [31373, 995, 0]" in out and "3 tokens" in out
    assert cli.run(["show", "--no-color", "hello world!"]) == 0
    assert "[hello][ world][!]" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["encode", "--tokenizer", "nope", "x"],
            r"expected one of \['cl100k_base', 'gpt2', 'o200k_base'\] or a tokenizer directory, got 'nope'",
        ),
        (
            ["encode", "--tokenizer", "gpt2", "/no/such/file"],
            r"expected an existing file .*got '/no/such/file'",
        ),
        (["decode", "--tokenizer", "gpt2", "BADJSON"], r"expected a JSON list of ints, got"),
        (["decode", "--tokenizer", "gpt2", "IDS"], r"token id 99999999 is not in the vocabulary"),
    ],
)
def test_bad_input_is_one_error_line(argv, message, tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"ids": [1, 2]')
    (tmp_path / "ids.json").write_text("[1, 99999999]")
    argv = [
        {"BADJSON": str(tmp_path / "bad.json"), "IDS": str(tmp_path / "ids.json")}.get(a, a)
        for a in argv
    ]
    assert cli.run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    import re

    assert re.search(message, err), err


def test_vocab_too_small_is_refused(tmp_path, capsys):
    (tmp_path / "in.txt").write_text(TEXT)
    assert (
        cli.run(
            [
                "train",
                "--input",
                str(tmp_path / "in.txt"),
                "--vocab-size",
                "100",
                "--out",
                str(tmp_path / "t"),
            ]
        )
        == 2
    )
    assert "vocab_size=100 is too small" in capsys.readouterr().err


def test_main_cli_has_tokenizer_command():
    assert "tokenizer" in main_cli.build_parser().format_help()


def test_real_subprocess(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "myllm101", "tokenizer", "encode", "--tokenizer", "gpt2", "-"],
        input="hello world", capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [31373, 995]


@pytest.mark.slow
def test_tokenizer_benchmarks_smoke_and_report(tmp_path):
    """The tiny ('smoke') versions of every tokenizer benchmark run and make a report; no timings."""
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "benchmarks/test_tokenizer.py",
           "-k", "smoke", "--benchmark-only", f"--benchmark-json={out}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from benchmarks import tokenizer_report

    data = json.loads(out.read_text())
    kinds = {b["extra_info"]["bench"] for b in data["benchmarks"]}
    assert kinds == {"encode", "train", "pathological"}
    tokenizer_report.main([str(out), "--out", str(tmp_path)])
    text = (tmp_path / "TOKENIZER.md").read_text()
    assert "| tiktoken |" in text and "fast" in text
    assert (tmp_path / "tokenizer.png").stat().st_size > 1000
